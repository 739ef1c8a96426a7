using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Simulation;
using ShardStream.Topology;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The coordinator's planning of a rebuild by regions outside its plan's lock
/// (<see cref="Coordinator.RebuildPlanning"/> stands in for <see cref="RebuildSnapshot.Plan"/>):
/// a planning that throws is logged once, its snapshot comes back, and the latency moves go on
/// with the next planning; a planning under way when the coordinator stops is cancelled.
/// </summary>
[Collection(ManyNodesCollection.Name)]
public sealed class LatencyRebuildPlanningTests
{
    // Fewer than 10 peers: a series that ended starts again without joins or leaves (a tenth of
    // the peers is 0), so the planning after a failed one is the next round's.
    private const int Count = 8;

    /// <summary>A coordinator and <see cref="Count"/> peers, whose plannings <paramref name="planning"/> makes from the first.</summary>
    private static async Task<Overlay> StartAsync(RecordingLogger log, int seed, Func<RebuildSnapshot, CancellationToken, RebuildPlan?> planning)
    {
        var model = new WorldLatencyModel(seed);
        var overlay = await Overlay.StartAsync(shards: 4, loggers: log, configure: o => o with
        {
            LatencyAware = true,
            LatencyRebuild = true,
            LatencyRebuildMinPeers = Count,
            LatencyRebuildMinGainShare = -1, // carried out whatever its estimate: the test is about the planning, not its gain
            LatencyMovesPerSecond = 16,
            LatencyMoveInterval = TimeSpan.FromMilliseconds(100),
        });
        overlay.Network.UseLatencyModel(["coord", .. Enumerable.Range(1, Count).Select(i => $"p{i}")], model.OneWay);
        overlay.Coordinator.RebuildPlanning = planning;
        overlay.StartStreaming();
        for (int i = 0; i < Count; i++) await overlay.AddPeerAsync();
        return overlay;
    }

    [Fact]
    public async Task A_planning_that_throws_is_logged_once_and_the_next_planning_is_carried_out()
    {
        var log = new RecordingLogger();
        int plannings = 0, moving = 0;
        await using var overlay = await StartAsync(log, seed: 1, (snapshot, token) =>
        {
            if (Interlocked.Increment(ref plannings) == 1) throw new InvalidOperationException("a planning bug, on purpose");
            var plan = snapshot.Plan(token);
            // Edges the plan moves: a parent that differs from the one in the snapshot.
            if (plan is not null) Volatile.Write(ref moving, Enumerable.Range(0, snapshot.ShardCount).Sum(s => Enumerable.Range(0, snapshot.PeerCount).Count(i => plan.Target[s][snapshot.Peers[i]] != snapshot.Parent[s][i])));
            return plan;
        });

        // Before the fix the first planning's exception ended the loop of latency moves, silently:
        // no planning after it, no rebuild.
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LatencyRebuilds >= 1, "a rebuild is carried out after the planning that threw");
        Assert.True(Volatile.Read(ref plannings) >= 2, $"{plannings} planning(s)");
        Assert.True(Volatile.Read(ref moving) > 0, "the rebuild carried out moves no edge (a test set-up that shows nothing)");
        Assert.True(overlay.Coordinator.LatencyMoves > 0, "no edge moved");

        var failed = log.Lines.Where(l => l.Id.Id == 1687).ToList();
        var line = Assert.Single(failed);
        Assert.Equal(LogLevel.Error, line.Level);
        Assert.IsType<InvalidOperationException>(line.Exception);
        Assert.Contains("a planning bug, on purpose", line.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(log.Lines, l => l.Id.Id == 9100); // BackgroundTaskFailed: the loop did not end
    }

    [Fact]
    public async Task A_planning_under_way_is_cancelled_when_the_coordinator_stops()
    {
        var log = new RecordingLogger();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var outcome = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        int plannings = 0;
        await using var overlay = await StartAsync(log, seed: 2, (snapshot, token) =>
        {
            Interlocked.Increment(ref plannings);
            started.TrySetResult();
            // Held until the coordinator has stopped: then the planning itself runs, with the
            // token the coordinator gave it.
            if (!stopped.Task.Wait(Overlay.Deadline)) outcome.TrySetResult("the test never stopped the coordinator");
            try
            {
                var plan = snapshot.Plan(token);
                outcome.TrySetResult("planned to its end");
                return plan;
            }
            catch (OperationCanceledException)
            {
                outcome.TrySetResult("cancelled");
                throw;
            }
        });

        await started.Task.WaitAsync(Overlay.Deadline);
        await overlay.Coordinator.DisposeAsync();
        stopped.SetResult();
        Assert.Equal("cancelled", await outcome.Task.WaitAsync(Overlay.Deadline));

        // The snapshot comes back, and a cancellation at the stop is no failure.
        await Overlay.WaitUntilAsync(() => !overlay.Coordinator.RebuildBeingPlanned, "the snapshot is handed back");
        Assert.Equal(1, Volatile.Read(ref plannings));
        Assert.DoesNotContain(log.Lines, l => l.Id.Id is 1687 or 9100);
    }
}

using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The coordinator stops waiting for its peers (the drain timeout, 15 s after the CLI's SIGTERM)
/// while a viewer is still catching up. Its exit reset the viewer's links, and the viewer took the
/// coordinator for lost and joined again for its rejoin time (60 s by default) against a stream
/// that had ended, then stopped with "lost the coordinator before the end of the stream". It is
/// told instead (Goodbye(ShuttingDown), ahead of what was queued for it), writes what it has, and
/// stops with the reason, without joining again.
/// </summary>
public sealed class CoordinatorStopsTests
{
    [Fact]
    public async Task A_viewer_still_behind_when_the_coordinator_stops_learns_it_and_stops_with_the_reason_without_joining_again()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { DrainTimeout = TimeSpan.FromSeconds(2) }, loggers: logs.Factory);
        // A rejoin time short enough that the failing case ends within the test's deadline.
        var viewer = await overlay.AddPeerAsync(upload: 0, configure: o => o with { RejoinFor = TimeSpan.FromSeconds(5) });
        var (_, output, run, host) = overlay.PeerById(viewer.Id);
        overlay.Network.SetDownloadRate(host, 512 * 1024);
        overlay.StartStreaming();
        // 16 s of this viewer's download, the source's end at once after it: it is far behind when the 2 s drain ends.
        var data = Overlay.RandomBytes(8 << 20, seed: 23);
        await overlay.WriteAsync(data);
        await overlay.EndAsync();
        // As the CLI does once the run is over: the coordinator's links end with it.
        await overlay.Coordinator.DisposeAsync();

        string ended = await Overlay.HowEndedAsync(run, () => $"completed, {output.Length} bytes: {string.Join(" | ", logs.Lines.Where(l => l.Category == "peer" && l.Level >= LogLevel.Information).Select(l => l.Message))}");
        Assert.True(ended.StartsWith("the coordinator stopped before the whole stream reached this peer (the stream ended at 8388608 bytes", StringComparison.Ordinal), ended);
        Assert.True(logs.Has(LogLevel.Warning, "still behind at the end of the wait for them"), "the coordinator did not say it told the viewer");
        Assert.False(logs.Has(LogLevel.Warning, "lost the coordinator"), "the viewer took the coordinator for lost");
        // Everything it wrote is the stream's, from its start.
        var wrote = output.ToArray();
        Assert.True(wrote.Length > 0 && wrote.Length < data.Length, $"wrote {wrote.Length} of {data.Length} bytes");
        Assert.True(data.AsSpan(0, wrote.Length).SequenceEqual(wrote), "what the viewer wrote is not the stream's start");
    }

    /// <summary>
    /// A viewer whose control link breaks just as the source ends cannot reach the coordinator
    /// again before the coordinator's wait for its peers (the drain) is over; its rejoin comes
    /// after it. It was refused "the stream has ended", taken for a refusal worth trying again, and
    /// the viewer tried for its whole rejoin time against a run that was over, then stopped with
    /// "lost the coordinator … could not join again". It is told the run is over
    /// (Goodbye(ShuttingDown), as a peer still listed then is) and stops at once with that reason.
    /// </summary>
    [Fact]
    public async Task A_viewer_that_joins_again_once_the_run_is_over_stops_with_the_reason_without_trying_again()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { DrainTimeout = TimeSpan.FromSeconds(2) }, loggers: logs.Factory);
        // A rejoin time short enough that the failing case ends within the test's deadline.
        var viewer = await overlay.AddPeerAsync(upload: 0, configure: o => o with { RejoinFor = TimeSpan.FromSeconds(20) });
        var (_, output, run, host) = overlay.PeerById(viewer.Id);
        var data = Overlay.RandomBytes(200_000, seed: 24);
        // Its path to the coordinator breaks; the source ends, and the coordinator's 2 s wait for
        // the viewer (kept for its rejoin) runs out. Only then can the viewer reach it again.
        await StreamWithThePathCutAsync(overlay, viewer, host, data);
        overlay.Network.Unblock(host, "coord");

        string ended = await Overlay.HowEndedAsync(run, () => $"completed, {output.Length} bytes");
        // Every attempt that failed is logged; none may follow the coordinator's answer that the run
        // is over (before 7ce007e the answer was a refusal, "the stream has ended", and the viewer
        // went on trying for its whole rejoin time).
        var lines = logs.Lines.ToList();
        int told = lines.FindIndex(l => l.Message.Contains("not joining again", StringComparison.Ordinal));
        var triedAfter = lines.Skip(told + 1).Count(l => l.Message.StartsWith("joining again failed", StringComparison.Ordinal));
        var refusedAgain = lines.Count(l => l.Message.StartsWith("joining again failed", StringComparison.Ordinal) && l.Message.Contains("the stream has ended", StringComparison.Ordinal));
        Assert.True(told >= 0, $"the viewer did not say it would not join again: {ended}");
        Assert.True(ended.StartsWith("the coordinator stopped before the whole stream reached this peer (the stream ended at 200000 bytes and the coordinator waits no longer)", StringComparison.Ordinal) && triedAfter == 0 && refusedAgain == 0,
            $"{ended}; it tried again {triedAfter} times after it said it would not, and was refused {refusedAgain} times with 'the stream has ended'");
        var wrote = output.ToArray();
        Assert.True(wrote.Length >= 100_000 && data.AsSpan(0, wrote.Length).SequenceEqual(wrote), $"what the viewer wrote ({wrote.Length} bytes) is not the stream's start");
    }

    /// <summary>
    /// A viewer under a relay (its stream comes from a peer parent, not on its control link) whose
    /// control link breaks just as the source ends: its parent still brings it the tail and the
    /// End. The coordinator waits for it for its 2 s drain, then exits, as the CLI does (its port
    /// refuses connections; here its host is unreachable). The viewer has the whole stream: it must
    /// complete with it written, and make no attempt to join again once it has it (its rejoin time
    /// is 20 s here, 60 s by default). A viewer that lacks part of the stream still tries for its
    /// rejoin time: an exited coordinator and one about to restart refuse alike.
    /// </summary>
    [Fact]
    public async Task A_viewer_whose_control_link_broke_as_the_stream_ended_and_whose_parent_brought_the_end_completes_without_trying_again()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1, DrainTimeout = TimeSpan.FromSeconds(2) }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 1);
        var viewer = await overlay.AddPeerAsync(upload: 0, configure: o => o with { RejoinFor = TimeSpan.FromSeconds(20) });
        Assert.Equal(relay.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == viewer.Id).Parents[0]);
        var (_, output, run, host) = overlay.PeerById(viewer.Id);
        var data = Overlay.RandomBytes(200_000, seed: 25);
        await StreamWithThePathCutAsync(overlay, viewer, host, data);
        await overlay.Coordinator.DisposeAsync();

        string ended = await Overlay.HowEndedAsync(run, () => $"completed, {output.Length} bytes");
        Assert.True(ended == "completed, 200000 bytes" && data.AsSpan().SequenceEqual(output.ToArray()), ended);
        var lines = logs.Lines.ToList();
        Assert.True(lines.Any(l => l.Message.StartsWith("lost the coordinator", StringComparison.Ordinal)), "the viewer's control link did not break");
        // The relay's line, then the viewer's (the End reaches it through the relay).
        int complete = lines.FindLastIndex(l => l.Category == "peer" && l.Message.StartsWith("stream complete: 200000 bytes", StringComparison.Ordinal));
        var after = lines.Skip(complete + 1).Where(l => l.Message.StartsWith("joining again failed", StringComparison.Ordinal)).Select(l => l.Message).ToList();
        Assert.True(after.Count == 0, $"the viewer tried to join again {after.Count} times with the whole stream written: {string.Join(" | ", after.Take(2))}");
    }

    /// <summary>
    /// Streams the first half of <paramref name="data"/> until <paramref name="viewer"/> (on
    /// <paramref name="host"/>) has it, then blocks and cuts its path to the coordinator, streams the
    /// rest and ends the source: returns once the coordinator's run (its drain) is over.
    /// </summary>
    private static async Task StreamWithThePathCutAsync(Overlay overlay, Peer viewer, string host, byte[] data)
    {
        overlay.StartStreaming();
        int half = data.Length / 2;
        await overlay.WriteAsync(data[..half]);
        await Overlay.WaitUntilAsync(() => viewer.BytesWritten == half, "the viewer has the first part");
        overlay.Network.Block(host, "coord");
        overlay.Network.Cut(host, "coord");
        await overlay.WriteAsync(data[half..]);
        await overlay.EndAsync();
    }
}

using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Simulation;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The rebuild by regions (<see cref="CoordinatorOptions.LatencyRebuild"/>, docs/topology.md, "The
/// rebuild by regions", "With real nodes") with real nodes on a <see cref="ShardStream.Transport.VirtualNetwork"/>
/// whose delays come from the world latency model: the coordinator plans a rebuild and carries it
/// out as Moves while the stream flows. What a user would check: every peer writes the source's
/// bytes (none lost, none twice), the plan keeps every node within its budget and the trees
/// acyclic within the depth bound at every sample, the nodes' own child links are over budget
/// only while Moves are under way, and a rebuild is counted. With 48 peers the planner's own
/// estimate declines most rebuilds (clusters are not regions yet), so the test carries the plan
/// out whatever its estimate (a margin of -1, which carries out any plan: until 2026-12-06 it
/// allowed at most twice the plan before, and at load 40-70 a plan estimated at 2.05 times it with
/// the measured RTTs was declined, ci215; 24 plannings under load earlier that day were at
/// 0.77-1.33 times it, the coordinator's event 1683) and checks the mechanism, not the gain: the
/// delays before and after are printed, not asserted.
/// </summary>
[Collection(ManyNodesCollection.Name)]
public sealed class LatencyRebuildOverlayTests(ITestOutputHelper output)
{
    /// <summary>The largest value any coordinator of this process reports for <c>shardstream.latency.rebuilds</c> now.</summary>
    private static long ExportedLatencyRebuilds()
    {
        long most = -1;
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == ShardStreamMetrics.MeterName && instrument.Name == "shardstream.latency.rebuilds") l.EnableMeasurementEvents(instrument);
            },
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => most = Math.Max(most, value));
        listener.Start();
        listener.RecordObservableInstruments();
        return most;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_rebuild_with_real_peers_loses_no_byte_and_keeps_budgets_and_trees(int seed)
    {
        const int count = 48;
        const int shards = 4;
        var model = new WorldLatencyModel(seed);
        // The coordinator's lines (the peers log to Overlay.Loggers): what a failure prints.
        var coordinatorLog = new LogCapture();
        // The rebuild starts when the last peer joins (count peers): the plan before it is measured
        // with count - 1; it is carried out whatever its estimated gain (see above). A round of moves every 250 ms, 16 edges each (a rebuild of 192 edges in a
        // few seconds); peers heartbeat and ping every 250 ms, as in LatencyMovesTests.
        await using var overlay = await Overlay.StartAsync(shards: shards, configure: o => o with
        {
            LatencyAware = true,
            LatencyRebuild = true,
            LatencyRebuildMinPeers = count,
            LatencyRebuildMinGainShare = -1,
            LatencyMovesPerSecond = 16,
            LatencyMoveInterval = TimeSpan.FromMilliseconds(250),
        }, loggers: coordinatorLog.Factory);
        overlay.Network.UseLatencyModel(["coord", .. Enumerable.Range(1, count).Select(i => $"p{i}")], model.OneWay);
        overlay.StartStreaming();
        var hostOf = new Dictionary<int, int>();
        var data = Overlay.RandomBytes(800_000, seed);
        int written = 0;
        async Task WriteSomeAsync()
        {
            if (written >= data.Length - 10_000) return;
            await overlay.WriteAsync(data.AsMemory(written, 10_000).ToArray());
            written += 10_000;
        }
        async Task JoinAsync(int i)
        {
            var peer = await overlay.JoinHostAsync(i, TimeSpan.FromMilliseconds(250));
            lock (hostOf) hostOf[peer.Id] = i;
        }

        for (int first = 1; first < count; first += 12)
        {
            await Task.WhenAll(Enumerable.Range(first, Math.Min(12, count - first)).Select(JoinAsync));
            await WriteSomeAsync();
        }

        // The stream flows until every peer has measured its parent links often enough for the
        // coordinator to use them (what a rebuild fits its local coordinates to), as in an overlay
        // that has run for a while; leaf moves may happen meanwhile. Each peer at its own moment:
        // waiting for a moment when all had (Overlay.EveryParentLinkMeasured) failed at load 35-98
        // (ci214, seed 1, "not every parent link measured after a minute"). Leaf moves go on all
        // the while, and each gives its peer a new link that starts from no sample and needs 3.5 s
        // or more of pings for 6; the longer that takes on a loaded machine, the rarer a moment
        // with no link that young anywhere. Forced with pings every 750 ms instead of 250 ms
        // (2026-12-06, load 50-100): seven peers each had one link of 1-5 samples, their others
        // 15-20, after a minute; each peer at its own moment got there in 17 and 28 s.
        var measuring = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        while (!overlay.EveryPeerMeasuredItsParents())
        {
            Assert.True(DateTime.UtcNow < measuring, $"not every peer measured its parent links after a minute: {string.Join(" | ", overlay.UnmeasuredParentLinks(neverMeasuredOnly: true))}");
            await WriteSomeAsync();
            await Task.Delay(100);
        }

        // Before: count - 1 peers, so nothing can have been rebuilt yet.
        var before = overlay.Coordinator.Snapshot();
        Assert.Equal(0, overlay.Coordinator.LatencyRebuilds);
        var violations = new List<string>();
        var overSince = new Dictionary<int, DateTime>();
        double longestOver = 0;
        int maxOver = 0;
        Check(before, "before");
        await JoinAsync(count);

        // The stream goes on while the coordinator rebuilds; every sample checks the budgets both
        // in the plan and at the peers themselves (the child links each one serves), and the trees.
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        int samples = 0;
        int maxDepthDuring = 0;
        long movesAtStart = overlay.Coordinator.LatencyMoves;
        long lastJoined = System.Diagnostics.Stopwatch.GetTimestamp();
        while (overlay.Coordinator.LatencyRebuilds < 1)
        {
            // A plan deeper than its trees' depth bound is not carried out, even with this test's
            // margin of -1 (d18da96): until 2026-12-06 seed 1's was now and then (ci230: tree 0,
            // where the source has two slots, planned a level past its bound of 4), and 7281c92
            // let the test pass without a rebuild. Said at once, with the depths.
            if (coordinatorLog.Lines.Select(l => l.Message).FirstOrDefault(m => m.Contains("deeper than the trees' depth bound", StringComparison.Ordinal)) is { } deeper)
            {
                Assert.Fail($"the plan was declined: {deeper}");
            }

            if (DateTime.UtcNow >= deadline)
            {
                // What decides a rebuild: the peers the coordinator lists (LatencyRebuildMinPeers),
                // and what it said (plannings, leaves, demotions, failures; not its joins, rounds
                // of moves and child links).
                var told = coordinatorLog.Lines.Where(l => l.Level >= LogLevel.Information && !l.Message.StartsWith("round ", StringComparison.Ordinal)
                    && !l.Message.Contains(" joined at offset ", StringComparison.Ordinal) && !l.Message.Contains("): serving shard(s) ", StringComparison.Ordinal))
                    .Select(l => $"{(l.Timestamp - lastJoined) / (double)System.Diagnostics.Stopwatch.Frequency:+0.0;-0.0} s after the last join, {l.Level}: {l.Message}").TakeLast(30);
                Assert.Fail($"no rebuild done after 2 minutes ({overlay.Coordinator.LatencyMoves - movesAtStart} edges moved); the coordinator lists {overlay.Coordinator.Snapshot().Nodes.Count - 1} " +
                    $"peers of {count}; it said:\n{string.Join("\n", told)}");
            }
            var snapshot = overlay.Coordinator.Snapshot();
            Check(snapshot, $"sample {samples}");
            maxDepthDuring = Math.Max(maxDepthDuring, snapshot.MaxDepth);
            samples++;
            await WriteSomeAsync();
            await Task.Delay(100);
        }
        var after = overlay.Coordinator.Snapshot();
        Check(after, "after");
        // The count is what /metrics exports (shardstream_latency_rebuilds_total); the other
        // coordinators of this process, if any, rebuild nothing.
        int rebuilds = overlay.Coordinator.LatencyRebuilds;
        Assert.Equal(rebuilds, ExportedLatencyRebuilds());

        // A moved child attaches to its new parent before it leaves its old one: a node may serve
        // more child links than its budget while Moves are under way, but not once they are done.
        string OverBudget()
        {
            var budgets = overlay.Coordinator.Snapshot().Nodes.ToDictionary(n => n.Id, n => n.Budget);
            List<(Peer Peer, MemoryStream Output, Task Run, string Host)> peers;
            lock (overlay.Peers) peers = [.. overlay.Peers];
            var over = peers.Where(p => budgets.TryGetValue(p.Peer.Id, out var b) && p.Peer.Status().Children.Sum(c => c.Length) > b).Select(p => $"peer {p.Peer.Id}").ToList();
            if (overlay.Coordinator.ChildCount > budgets[0]) over.Add("the coordinator");
            return string.Join(", ", over);
        }
        string overNow = OverBudget();
        try
        {
            await Overlay.WaitUntilAsync(() => (overNow = OverBudget()).Length == 0, "every node serves within its budget after the rebuild");
        }
        catch (TimeoutException)
        {
            Assert.Fail($"a minute after the rebuild, over budget: {overNow}");
        }
        long moved = overlay.Coordinator.LatencyMoves - movesAtStart;

        // Each peer's delay from the source under the model: the slowest of its shards' paths.
        // Before and after over the same peers (the last joiner is not in the plan before).
        var peersBefore = before.Nodes.Where(n => n.Id != 0).Select(n => n.Id).ToList();
        double beforeDelay = MeanSlowestDelay(before, peersBefore), afterDelay = MeanSlowestDelay(after, peersBefore);
        double beforeRdp = MeanRdp(before, peersBefore), afterRdp = MeanRdp(after, peersBefore);
        output.WriteLine($"{model.Description}, {count} peers, K={shards} striped: {moved} edges moved, {samples} samples during the rebuild (max depth {maxDepthDuring}); " +
            $"mean source delay {beforeDelay:0.#} -> {afterDelay:0.#} ms, mean RDP {beforeRdp:0.##} -> {afterRdp:0.##}, max depth {before.MaxDepth} -> {after.MaxDepth}; served over budget by up to {maxOver} for up to {longestOver:0} ms");

        await overlay.WriteAsync(data.AsMemory(written).ToArray());
        await overlay.EndAsync(TimeSpan.FromMinutes(3));
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
        foreach (var v in violations) output.WriteLine(v);
        Assert.True(violations.Count == 0, string.Join("; ", violations.Take(10)));
        Assert.True(moved > 0, "the rebuild moved no edge");
        Assert.True(maxDepthDuring <= count, $"max depth {maxDepthDuring} during the rebuild");
        Assert.True(after.MaxDepth <= before.MaxDepth + 1, $"max depth {after.MaxDepth} after the rebuild, {before.MaxDepth} before");

        void Check(OverlaySnapshot snapshot, string when)
        {
            var byId = snapshot.Nodes.ToDictionary(n => n.Id);
            foreach (var node in snapshot.Nodes)
            {
                int children = snapshot.Nodes.Sum(c => c.Id == 0 ? 0 : c.Parents.Count(p => p == node.Id));
                if (children > node.Budget) violations.Add($"{when}: node {node.Id} has {children} children in the plan, budget {node.Budget}");
                if (node.Id == 0) continue;
                for (int s = 0; s < snapshot.ShardCount; s++)
                {
                    int hops = 0;
                    for (int at = node.Id; at != 0; at = byId.TryGetValue(byId[at].Parents[s], out var up) ? up.Id : 0)
                    {
                        if (!byId.ContainsKey(byId[at].Parents[s])) { violations.Add($"{when}: node {at}'s parent {byId[at].Parents[s]} in shard {s} is not in the plan"); break; }
                        if (++hops > snapshot.Nodes.Count) { violations.Add($"{when}: a cycle through node {node.Id} in shard {s}"); break; }
                    }
                }
            }
            // What the nodes serve: a peer's child links (per shard) never more than its budget in the plan.
            List<(Peer Peer, MemoryStream Output, Task Run, string Host)> peers;
            lock (overlay.Peers) peers = [.. overlay.Peers];
            foreach (var p in peers)
            {
                if (!byId.TryGetValue(p.Peer.Id, out var node)) continue;
                int serving = p.Peer.Status().Children.Sum(c => c.Length);
                if (serving > node.Budget)
                {
                    overSince.TryAdd(p.Peer.Id, DateTime.UtcNow);
                    longestOver = Math.Max(longestOver, (DateTime.UtcNow - overSince[p.Peer.Id]).TotalMilliseconds);
                    maxOver = Math.Max(maxOver, serving - node.Budget);
                }
                else overSince.Remove(p.Peer.Id);
            }
            if (overlay.Coordinator.ChildCount > byId[0].Budget)
            {
                overSince.TryAdd(0, DateTime.UtcNow);
                longestOver = Math.Max(longestOver, (DateTime.UtcNow - overSince[0]).TotalMilliseconds);
                maxOver = Math.Max(maxOver, overlay.Coordinator.ChildCount - byId[0].Budget);
            }
            else overSince.Remove(0);
        }

        int Host(int id) => id == 0 ? 0 : hostOf[id];
        double SlowestDelay(OverlaySnapshot snapshot, Dictionary<int, OverlayNode> byId, int id) => Enumerable.Range(0, snapshot.ShardCount).Max(s =>
        {
            double delay = 0;
            for (var node = byId[id]; node.Id != 0; node = byId[node.Parents[s]]) delay += model.RttMs(Host(node.Parents[s]), Host(node.Id)) / 2;
            return delay;
        });
        double MeanSlowestDelay(OverlaySnapshot snapshot, List<int> ids)
        {
            var byId = snapshot.Nodes.ToDictionary(n => n.Id);
            return ids.Average(id => SlowestDelay(snapshot, byId, id));
        }
        double MeanRdp(OverlaySnapshot snapshot, List<int> ids)
        {
            var byId = snapshot.Nodes.ToDictionary(n => n.Id);
            return ids.Average(id => SlowestDelay(snapshot, byId, id) / (model.RttMs(0, Host(id)) / 2));
        }
    }
}

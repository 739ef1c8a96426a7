using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Topology;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>How the coordinator judges a leaf reported behind for the whole grace: once, and against what its parent serves it.</summary>
public sealed partial class SlowViewerTests
{
    /// <summary>
    /// A leaf stopped as too slow leaves the plan only once its goodbye has crossed its slow link
    /// (up to three close timeouts). Its parents, still finding it slow, report it meanwhile, and
    /// each report was judged again: across network namespaces (K=4, a viewer behind a tbf at a
    /// third of the stream rate) the coordinator logged "stopping it" 15 times in 14 s for one
    /// viewer, with reasons it never sent ("you took nothing", "0.5 vs 2.0 Mbit/s"), while the
    /// viewer was told the first.
    /// </summary>
    [Fact]
    public async Task A_leaf_being_stopped_is_not_judged_again_by_its_parents_later_reports()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        // As in the test above: the coordinator's two slots taken, the leaf under the relay, and
        // no other free slot, so that the relay's report stops it at once.
        var (relay, watcher, leaf) = await LeafUnderRelayAsync(overlay);
        // The leaf's host stands still: its goodbye is not read, so its control link stays open
        // (closing) for the close timeouts, as behind a slow link.
        string host = overlay.PeerById(leaf.Id).Host;
        overlay.Network.Freeze(host);
        try
        {
            uint behind = (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 1_000);
            void Report(ulong child, uint queueAgeMs, uint downloadKbps) => ((IPeerParents)relay).SendToCoordinator(new SlowChild(child, queueAgeMs, (downloadKbps, 8_000)).Write);
            Report((ulong)leaf.Id, behind, 700);
            Report((ulong)leaf.Id, behind + 500, 600);
            // A report about a peer the relay does not serve: frames of one link are handled in
            // order, so once it is ignored, both reports about the leaf have been judged.
            Report((ulong)watcher.Id, behind, 600);
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {relay.Id} reported peer {watcher.Id} as slow, but"), "the coordinator read the three reports");
            var stops = logs.Lines.Where(l => l.Category == "coordinator" && l.Message.StartsWith($"peer {leaf.Id}, judged as a leaf, is still slow", StringComparison.Ordinal)).Select(l => l.Message).ToList();
            Assert.True(stops.Count == 1, $"the leaf was judged {stops.Count} times:\n{string.Join("\n", stops)}");
            Assert.Contains("0.7 vs", stops[0], StringComparison.Ordinal);
        }
        finally
        {
            overlay.Network.Thaw(host);
        }
    }

    /// <summary>
    /// A leaf stopped as too slow: its parents stop serving it at the stop (DropChild), not once its
    /// goodbye has crossed its slow link and its control link closed. Across network namespaces
    /// the goodbye waited 3-16 s behind the parents' backlog on that link, and the parents kept
    /// finding it slow meanwhile (a warning every 2-3 s). Here the leaf's host stands still, so
    /// that its goodbye is not read: its parent must drop it while the coordinator still lists it.
    /// </summary>
    [Fact]
    public async Task A_leaf_stopped_as_too_slow_is_dropped_by_its_parents_at_the_stop_not_after_its_goodbye_crossed()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        var (relay, _, leaf) = await LeafUnderRelayAsync(overlay);
        string host = overlay.PeerById(leaf.Id).Host;
        overlay.Network.Freeze(host);
        try
        {
            uint behind = (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 1_000);
            ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)leaf.Id, behind, (700, 8_000)).Write);
            string dropped = $"the coordinator took child {leaf.Id} out of the overlay: stopped serving it (1 link(s) closed)";
            bool Listed() => overlay.Coordinator.Snapshot().Nodes.Any(n => n.Id == leaf.Id);
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Information, dropped) || !Listed(), "the relay dropped the leaf, or the leaf is out");
            Assert.True(logs.Has(LogLevel.Warning, $"peer {leaf.Id}, judged as a leaf, is still slow"), "the leaf was not stopped");
            Assert.True(Listed() && logs.Has(LogLevel.Information, dropped), "the leaf was out of the plan before its parent dropped it");
            Assert.True(logs.Has(LogLevel.Information, $"peer {leaf.Id} is out of the overlay (stopped as too slow): told its parent(s) {relay.Id} to stop serving it"), "the coordinator did not say it told the relay");
        }
        finally
        {
            overlay.Network.Thaw(host);
        }
    }

    /// <summary>
    /// A viewer stopped as too slow whose goodbye was lost (its host stood still until the link
    /// was reset) hears the stop when it joins again, from the coordinator's refusal, and exits
    /// with its own download figure beside the reason, as one that read the goodbye does: it said
    /// only the coordinator's reason, without the "this peer received" that lets its user tell a
    /// slow download from a slow parent.
    /// </summary>
    [Fact]
    public async Task A_leaf_stopped_as_too_slow_that_hears_it_when_it_joins_again_says_its_own_download()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        var (relay, _, leaf) = await LeafUnderRelayAsync(overlay);
        var leafRun = overlay.Peers.Single(p => p.Peer == leaf).Run;
        // Its meter has a window to speak of (half of IntakeMeter.Window of samples).
        await Overlay.WaitUntilAsync(() => leaf.IntakeSaid.Length > 0, "the leaf measured its download over a window");
        string host = overlay.PeerById(leaf.Id).Host;
        overlay.Network.Freeze(host);
        try
        {
            uint behind = (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 1_000);
            ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)leaf.Id, behind, (700, 8_000)).Write);
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {leaf.Id}, judged as a leaf, is still slow"), "the coordinator stopped the leaf");
            // The path breaks while the goodbye waits on the frozen host: it is lost with the link.
            overlay.Network.Cut("coord", host);
        }
        finally
        {
            overlay.Network.Thaw(host);
        }
        var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => leafRun.WaitAsync(Overlay.Deadline));
        Assert.True(logs.Has(LogLevel.Warning, ": refused: "), $"the leaf did not hear the stop from a refusal of its join:\n{string.Join("\n", logs.Lines.Where(l => l.Category == "peer" || l.Message.Contains($"peer {leaf.Id}", StringComparison.Ordinal)).Select(l => l.Message))}");
        Assert.Matches(BelowRateMessage.Pattern(), stopped.Message);
        Assert.Contains("; this peer received ", stopped.Message, StringComparison.Ordinal);
        await leaf.DisposeAsync();
    }

    /// <summary>
    /// A parent measures only what it serves: with K=2 striped trees, a peer parent serves a leaf
    /// one shard of two. Its report's download was compared with the whole stream's rate, so a
    /// leaf that took more than that parent queued for it ("1.6 Mbit/s while 1.0 were queued", of
    /// a 2.1 Mbit/s stream) counted as below the stream rate and was moved or stopped, where a
    /// parent that holds a leaf back must not cost it its place (event 909); across network
    /// namespaces (K=4) a leaf was stopped with "0.5 vs 2.0 Mbit/s" after taking 0.5 of the
    /// 0.5 Mbit/s its parent queued, and with "25 kbit/s vs 2.0 Mbit/s" for 25 kbit/s of one
    /// shard of four.
    /// </summary>
    [Fact]
    public async Task A_leaf_that_took_more_than_its_one_shard_parent_queued_but_less_than_the_stream_is_not_below_the_stream_rate()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 2, configure: o => o with { Topology = TopologyKind.Striped }, loggers: logs.Factory);
        var relays = new[] { await overlay.AddPeerAsync(), await overlay.AddPeerAsync() };
        (Peer Parent, Peer Leaf)? pick = null;
        for (int i = 0; i < 4 && pick is null; i++)
        {
            var leaf = await overlay.AddPeerAsync(upload: 0);
            int[] parents = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == leaf.Id).Parents;
            if (relays.FirstOrDefault(r => parents.Count(p => p == r.Id) == 1) is { } parent) pick = (parent, leaf);
        }
        Assert.True(pick is not null, "no leaf had a peer parent for one shard of two");
        var (relay, judged) = pick.Value;
        overlay.StartStreaming();
        await using var source = LiveSource.Start(overlay, SecondParentRate, maxSeconds: 30, seed: 15);
        // The coordinator knows the stream's rate after a second of it.
        await Task.Delay(TimeSpan.FromSeconds(2.5));

        // Behind for longer than the grace, and it took more than its parent queued (catching up),
        // 1.5 times it, but less than the whole stream: 0.75 of it. Taking exactly what was queued,
        // half the stream, would not do here: over the first seconds the source's measured rate can
        // come out a tenth above the rate it is written at (its first sample taken late on a loaded
        // machine), and half of it scaled by K/n would then read just below it. So this shows the
        // scaling by K/n, not that a leaf taking exactly what its parent queued is kept.
        uint half = (uint)(SecondParentRate * 8 / 2 / 1000);
        ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)judged.Id, (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 1_000), (half * 3 / 2, half)).Write);
        string about = $"peer {judged.Id}, judged as a leaf, is ";
        await Overlay.WaitUntilAsync(() => logs.Lines.Any(l => l.Category == "coordinator" && l.Message.StartsWith(about, StringComparison.Ordinal)), "the coordinator judged the leaf");
        string said = string.Join("\n", logs.Lines.Where(l => l.Category == "coordinator" && l.Message.StartsWith($"peer {judged.Id}, judged as a leaf", StringComparison.Ordinal)).Select(l => l.Message));
        Assert.True(logs.Has(LogLevel.Warning, "is not below the stream rate"), $"a leaf that took more than its one-shard parent queued was not kept: {said}");
        Assert.False(logs.Has(LogLevel.Warning, "stopping it ("), $"a leaf that took more than its one-shard parent queued was stopped: {said}");
        Assert.Contains(relay.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == judged.Id).Parents);
    }
}

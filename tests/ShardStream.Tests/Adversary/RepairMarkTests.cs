using ShardStream.Tests.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// Which lost-parent reports and which repair moves mark a peer under repair (its children's cuts
/// of it then excused, events 9308 and 9310), seen at the coordinator. Strangers (control links
/// only, leaves) report what a liar would; K = 1.
/// </summary>
public class RepairMarkTests
{
    /// <summary>
    /// A report that names a node that was never the reporter's parent in the plan (here an id no
    /// peer has) is answered with nothing. Before, the coordinator took it as a parent already out
    /// of the overlay, sent the reporter a Move to the parent it has (a repair's) and noted it under
    /// repair, at no cost: its children's cuts in the next 23 s were excused.
    /// </summary>
    [Fact]
    public async Task A_report_about_a_parent_that_never_was_the_reporters_marks_nothing()
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 2 }, heartbeatTimeout: TimeSpan.FromSeconds(5), loggers: log);
        await using var stranger = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        Assert.Equal(0, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == stranger.Id).Parents[0]);

        const int bogus = 4242;
        await stranger.SendAsync(o => new ParentLost(bogus, [new ShardStart(0, 0)]).Write(o));
        await Overlay.WaitUntilAsync(() => log.Lines.Any(l => l.Id.Id == 1661 && l.Message.StartsWith($"peer {stranger.Id} lost parent {bogus},", StringComparison.Ordinal)),
            "the coordinator handled the report");
        Assert.True(overlay.Coordinator.RepairBegan(stranger.Id, 0) == 0, $"the reporter was marked under repair for a report about node {bogus}, never its parent:\n{log.Dump()}");
    }

    /// <summary>
    /// A relay whose parent fails is moved by the coordinator (a repair's Move, not an answer to its
    /// own report): a cut of it by its child in the heartbeat timeout before (the same stall, seen
    /// further down first) is excused after the fact (9310), as when the relay's own report of its
    /// parent comes after the cut. Before, only that report excused it. Here the failure is a cut-off:
    /// a second child of the failed parent accuses it, right after the relay's child reported the relay lost.
    /// </summary>
    [Fact]
    public async Task A_cut_just_before_its_parent_is_moved_by_a_repair_is_excused_after_the_fact()
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, heartbeatTimeout: TimeSpan.FromSeconds(5), loggers: log);
        var failing = await overlay.AddPeerAsync(upload: 2);
        var relay = await overlay.AddPeerAsync(upload: 1);
        await using var accuser = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        await using var child = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        int ParentOf(int id) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents[0] ?? -1;
        var plan = overlay.Coordinator.Snapshot().Render();
        Assert.True(ParentOf(failing.Id) == 0 && ParentOf(relay.Id) == failing.Id && ParentOf(accuser.Id) == failing.Id && ParentOf(child.Id) == relay.Id, plan);

        // The child's report about the relay, which answers: counted (attached there again, 1664).
        await child.SendAsync(o => new ParentLost((ulong)relay.Id, [new ShardStart(0, 0)]).Write(o));
        await Overlay.WaitUntilAsync(() => log.Lines.Any(l => l.Id.Id == 1664 && l.Message.StartsWith($"peer {child.Id} lost parent {relay.Id},", StringComparison.Ordinal)),
            "the coordinator counted the child's report");
        // The relay's parent is cut off: the relay is moved by the repair.
        await accuser.SendAsync(o => new ParentLost((ulong)failing.Id, [new ShardStart(0, 0)], "flipped bytes").Write(o));
        await Overlay.WaitUntilAsync(() => ParentOf(failing.Id) == -1 && ParentOf(relay.Id) is var p && p != -1 && p != failing.Id, "the failed parent is out, and the relay moved");
        Assert.True(overlay.Coordinator.RepairBegan(relay.Id, 0) != 0, $"the relay's repair was not noted:\n{log.Dump()}");
        Assert.True(log.Lines.Any(l => l.Id.Id == 9310 && l.Message.StartsWith($"peer {child.Id} lost parent {relay.Id} ", StringComparison.Ordinal)),
            $"the child's cut just before the relay's repair was not excused:\n{log.Dump()}");
    }

    /// <summary>
    /// K = 2: a relay (a stranger that claims upload) whose parent in one shard failed and is out
    /// reports that former parent lost, listing the other shard, which it has from another node
    /// since its join. Its child in that shard cut it just before. The report is no lost parent of
    /// that shard: nothing is sent for it, the relay is not marked under repair of it, and the
    /// child's cut still counts. Before, the "already out" answer checked only that the node named
    /// was once its parent, sent a repair's Move to the parent it already had, marked it, and
    /// excused the cut (9310).
    /// </summary>
    [Fact]
    public async Task A_report_about_a_former_parent_listing_a_shard_it_never_fed_marks_nothing()
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 2, configure: o => o with { Upload = 1 }, heartbeatTimeout: TimeSpan.FromSeconds(5), loggers: log);
        var top = await overlay.AddPeerAsync(upload: 2);
        var failing = await overlay.AddPeerAsync(upload: 1);
        await using var kid = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "kid", uploadPercent: 50);
        await using var relay = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "relay", uploadPercent: 50);
        await using var leaf = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        int ParentOf(int id, int shard) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents[shard] ?? -1;
        // The relay has one shard from the peer that fails and the other from another node, and a child (a stranger) in that other one.
        int fed = ParentOf(relay.Id, 0) == failing.Id ? 0 : 1, kept = 1 - fed;
        int other = ParentOf(relay.Id, kept);
        var child = new[] { kid, leaf }.FirstOrDefault(c => ParentOf(c.Id, kept) == relay.Id);
        Assert.True(ParentOf(relay.Id, fed) == failing.Id && other != failing.Id && child is not null,
            $"top {top.Id}, failing {failing.Id}, kid {kid.Id}, relay {relay.Id}, leaf {leaf.Id}:\n{overlay.Coordinator.Snapshot().Render()}");

        overlay.Network.Kill(overlay.PeerById(failing.Id).Host);
        await Overlay.WaitUntilAsync(() => ParentOf(failing.Id, 0) == -1 && ParentOf(relay.Id, fed) is var p && p != -1 && p != failing.Id, "the failed parent is out, and the relay moved");
        Assert.True(overlay.Coordinator.RepairBegan(relay.Id, kept) == 0 && ParentOf(relay.Id, kept) == other, $"the relay was moved in shard {kept} too:\n{log.Dump()}");

        // The child's cut of the relay in the shard the relay kept: counted.
        await child!.SendAsync(o => new ParentLost((ulong)relay.Id, [new ShardStart((byte)kept, 0)]).Write(o));
        await Overlay.WaitUntilAsync(() => log.Lines.Any(l => l.Id.Id == 1664 && l.Message.StartsWith($"peer {child.Id} lost parent {relay.Id},", StringComparison.Ordinal)),
            "the coordinator handled the child's report");
        // The relay names its failed parent, with that shard.
        await relay.SendAsync(o => new ParentLost((ulong)failing.Id, [new ShardStart((byte)kept, 0)]).Write(o));
        await Overlay.WaitUntilAsync(() => log.Lines.Any(l => l.Id.Id == 1661 && l.Message.StartsWith($"peer {relay.Id} lost parent {failing.Id},", StringComparison.Ordinal)),
            "the coordinator handled the relay's report");
        Assert.True(overlay.Coordinator.RepairBegan(relay.Id, kept) == 0, $"the relay was marked under repair of shard {kept}, which its failed parent never fed it:\n{log.Dump()}");
        Assert.False(log.Lines.Any(l => l.Id.Id is 9308 or 9310), $"the child's cut was excused:\n{log.Dump()}");
    }

    /// <summary>
    /// A relay (a stranger that claims upload) placed under the coordinator, which really stops
    /// feeding it: its download is too slow, and what the coordinator queued for it on its control
    /// link waits longer than a heartbeat timeout. Its child cuts it (it has nothing to relay),
    /// and right after the relay reports the coordinator lost: a repair begins (no 9312), and the
    /// child's cut just before is excused after the fact (9310), as under a peer parent. Before,
    /// the report marked the relay under repair but excused no cut just before (a report about the
    /// coordinator was taken as about a parent that had sent the shards until then).
    /// </summary>
    [Fact]
    public async Task A_cut_just_before_its_parent_reports_the_coordinator_lost_is_excused_when_the_coordinator_stopped_feeding_it()
    {
        var log = new RecordingLogger();
        var heartbeatTimeout = TimeSpan.FromSeconds(5);
        // The coordinator's slow-child policy out of the way: found slow, the relay would be demoted and its child moved.
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1, SlowChildAge = TimeSpan.FromMinutes(5) }, heartbeatTimeout: heartbeatTimeout, loggers: log);
        await using var relay = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "relay", uploadPercent: 200);
        await using var child = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        int ParentOf(int id) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents[0] ?? -1;
        Assert.True(ParentOf(relay.Id) == 0 && ParentOf(child.Id) == relay.Id, overlay.Coordinator.Snapshot().Render());

        // The relay's download carries a tenth of what is written: the coordinator's queue for it ages.
        overlay.Network.SetDownloadRate("relay", 20_000);
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(1_000_000, 5));
        await Overlay.WaitUntilAsync(() => !overlay.Coordinator.Feeds(relay.Id, [0]), "the coordinator's link to the relay no longer keeps up");

        await child.SendAsync(o => new ParentLost((ulong)relay.Id, [new ShardStart(0, 0)]).Write(o));
        await Overlay.WaitUntilAsync(() => log.Lines.Any(l => l.Id.Id == 1664 && l.Message.StartsWith($"peer {child.Id} lost parent {relay.Id},", StringComparison.Ordinal)),
            "the coordinator handled the child's report");
        Assert.False(log.Lines.Any(l => l.Id.Id == 9308), $"the child's report was excused when it came:\n{log.Dump()}");
        await relay.SendAsync(o => new ParentLost(0, [new ShardStart(0, 0)]).Write(o));
        await Overlay.WaitUntilAsync(() => log.Lines.Any(l => l.Id.Id == 1664 && l.Message.StartsWith($"peer {relay.Id} lost parent 0,", StringComparison.Ordinal)),
            "the coordinator handled the relay's report");
        Assert.True(overlay.Coordinator.RepairBegan(relay.Id, 0) != 0, $"the relay's repair was not noted (the coordinator took itself for feeding it):\n{log.Dump()}");
        Assert.True(log.Lines.Any(l => l.Id.Id == 9310 && l.Message.StartsWith($"peer {child.Id} lost parent {relay.Id} ", StringComparison.Ordinal)),
            $"the child's cut just before the relay's repair was not excused:\n{log.Dump()}");
    }
}

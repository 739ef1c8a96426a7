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
}

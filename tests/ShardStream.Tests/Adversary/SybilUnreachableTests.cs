using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// Two peer ids of one liar say they cannot connect to an honest relay: as its children (each
/// reports it lost twice, never attaching: 804), or as joiners that say they could not reach it
/// when they measured it (RTT 0 in their Join, with another node reached: 807). Two such verdicts
/// made a relay a leaf (806), its honest children moved. A child of it that reaches it (its
/// heartbeats report a round trip on its link to it) says otherwise: the relay keeps its place
/// (809); the liars' own edges to it are still taken out. K = 1: the coordinator's one slot, the
/// relay under it with 4 (a second relay, the honest viewer, the two strangers), the second relay
/// with 4 (where the strangers' edges go), which can take the relay's place when it is made a leaf.
/// </summary>
public class SybilUnreachableTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Two_strangers_cannot_get_a_relay_its_child_reaches_made_a_leaf(bool asChildren)
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, heartbeatTimeout: TimeSpan.FromSeconds(5), loggers: log);
        var relay = await overlay.AddPeerAsync(upload: 4);
        var other = await overlay.AddPeerAsync(upload: 4);
        var viewer = await overlay.AddPeerAsync(upload: 0);
        int ParentOf(int id) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents[0] ?? -1;
        // The honest viewer reaches the relay: its heartbeats say so.
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.ReportedParentRtts(viewer.Id).Any(r => r.NodeId == (ulong)relay.Id && r.Samples > 0),
            "the viewer reports a round trip to the relay");

        Assert.True(ParentOf(relay.Id) == 0 && ParentOf(other.Id) == relay.Id && ParentOf(viewer.Id) == relay.Id, overlay.Coordinator.Snapshot().Render());

        MeasuredRtt[]? measured = asChildren ? null : [new MeasuredRtt((ulong)relay.Id, 0), new MeasuredRtt((ulong)other.Id, 2_000)];
        await using var first = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, measured: measured, host: "liar1");
        await using var second = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, measured: measured, host: "liar2");

        if (asChildren)
        {
            foreach (var liar in new[] { first, second })
            {
                Assert.True(ParentOf(liar.Id) == relay.Id, overlay.Coordinator.Snapshot().Render());
                // Twice, never attaching: the second, within the retry window, counts the relay as one it cannot connect to.
                foreach (int answer in new[] { 1664, 804 })
                {
                    int mark = log.Lines.Count;
                    await liar.SendAsync(o => new ParentLost((ulong)relay.Id, [new ShardStart(0, 0)]).Write(o));
                    await Overlay.WaitUntilAsync(() => log.Lines.Skip(mark).Any(l => l.Id.Id == answer && l.Message.StartsWith($"peer {liar.Id} ", StringComparison.Ordinal)),
                        $"the coordinator answered peer {liar.Id}'s report about the relay ({answer})");
                }
                Assert.True(ParentOf(liar.Id) == other.Id, $"peer {liar.Id}'s edge to the relay was not taken out:\n{overlay.Coordinator.Snapshot().Render()}");
            }
        }
        else
        {
            Assert.Equal(2, log.Lines.Count(l => l.Id.Id == 807 && l.Message.Contains($"could not connect to peer {relay.Id} (", StringComparison.Ordinal)));
        }

        // Said, and the relay keeps its budget and its children: nothing made it a leaf.
        await Overlay.WaitUntilAsync(() => log.Lines.Any(l => (l.Id.Id is 806 or 809) && l.Message.Contains($"peer {relay.Id} (", StringComparison.Ordinal)),
            "the coordinator judged the verdicts");
        var after = overlay.Coordinator.Snapshot();
        Assert.True(!log.Lines.Any(l => l.Id.Id == 806) && after.Nodes.Single(n => n.Id == relay.Id).Budget == 4 && ParentOf(viewer.Id) == relay.Id && ParentOf(other.Id) == relay.Id,
            $"two strangers had the relay its viewer reaches made a leaf:\n{after.Render()}\n{log.Dump()}");
        Assert.Contains(log.Lines, l => l.Id.Id == 809 && l.Message.StartsWith($"2 peers say they cannot connect to peer {relay.Id} (", StringComparison.Ordinal));
    }

    /// <summary>
    /// Two strangers under a relay that no child reaches (its children are strangers: a relay one,
    /// with 2 slots, and a third that says nothing) say they cannot connect to it: it is to be made a
    /// leaf, but nobody has room for its children (event 904), and it stays a relay. Before, the
    /// coordinator said it was made a leaf all the same (806, before it tried) and told it so: the
    /// relay logged "this peer relays nothing" (801) while it still served its children. Now both
    /// come only after a demotion that was made.
    /// </summary>
    [Fact]
    public async Task A_relay_that_could_not_be_made_a_leaf_is_not_told_it_relays_nothing()
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, heartbeatTimeout: TimeSpan.FromSeconds(5), loggers: log);
        var relay = await overlay.AddPeerAsync(upload: 4);
        int ParentOf(int id) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents[0] ?? -1;
        await using var other = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "liar0", uploadPercent: 200);
        await using var first = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "liar1");
        await using var second = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "liar2");
        await using var third = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "liar3");
        Assert.True(new[] { other, first, second, third }.All(s => ParentOf(s.Id) == relay.Id) && overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == other.Id).Budget == 2,
            overlay.Coordinator.Snapshot().Render());

        foreach (var liar in new[] { first, second })
        {
            foreach (int answer in new[] { 1664, 804 })
            {
                int mark = log.Lines.Count;
                await liar.SendAsync(o => new ParentLost((ulong)relay.Id, [new ShardStart(0, 0)]).Write(o));
                await Overlay.WaitUntilAsync(() => log.Lines.Skip(mark).Any(l => l.Id.Id == answer && l.Message.StartsWith($"peer {liar.Id} ", StringComparison.Ordinal)),
                    $"the coordinator answered peer {liar.Id}'s report about the relay ({answer})");
            }
        }

        await Overlay.WaitUntilAsync(() => log.Lines.Any(l => l.Id.Id == 904 && l.Message.StartsWith($"peer {relay.Id} is not demoted", StringComparison.Ordinal)), "the demotion was refused");
        var after = overlay.Coordinator.Snapshot();
        Assert.True(after.Nodes.Single(n => n.Id == relay.Id).Budget == 4 && ParentOf(third.Id) == relay.Id, after.Render());
        // 806 came before the demotion was tried, and so before its refusal (904): none by now is none at all.
        Assert.True(!log.Lines.Any(l => l.Id.Id == 806), $"the relay, still a relay, was said to be made a leaf:\n{log.Dump()}");
    }
}

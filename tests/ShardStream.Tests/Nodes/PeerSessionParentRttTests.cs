using ShardStream.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// <see cref="PeerSession.Report"/>: the coordinator keeps a peer's reported RTTs only about nodes
/// the plan made its parents during its session (now, or among the former parents remembered), and
/// what it remembers per peer is bounded.
/// </summary>
public sealed class PeerSessionParentRttTests
{
    private static ParentRtt Rtt(int node, uint ms) => new((ulong)node, ms * 1000, ms * 1000, 50);

    private static int[] Kept(PeerSession session) => [.. session.ParentRtts.Select(r => (int)r.NodeId)];

    [Fact]
    public void Rtts_to_its_parents_now_and_before_are_kept_and_to_any_other_node_dropped()
    {
        // Welcomed under 3 (shard 0) and the coordinator (shard 1); shard 0 then moved to 5.
        var session = new PeerSession(9, "p:1", null!);
        session.PlannedParent(0, 3);
        session.PlannedParent(1, 0);
        Assert.Empty(session.Report([Rtt(3, 40), Rtt(0, 10)]));
        session.PlannedParent(0, 5);

        // It reports 5 (its parent now), 3 (its parent before) and 7 and 8, never its parents.
        var ignored = session.Report([Rtt(5, 30), Rtt(3, 41), Rtt(7, 1), Rtt(8, 1)]);

        Assert.Equal([7UL, 8UL], ignored);
        Assert.Equal([5, 3, 0], Kept(session));
        Assert.True(session.WasPlannedParent(3));
        Assert.False(session.WasPlannedParent(7));
        Assert.False(session.WasPlannedParent(ulong.MaxValue));
    }

    [Fact]
    public void A_parent_it_still_has_in_another_shard_is_not_a_former_parent_and_both_stay_known()
    {
        var session = new PeerSession(9, "p:1", null!);
        session.PlannedParent(0, 3);
        session.PlannedParent(1, 3);
        session.PlannedParent(0, 4);
        Assert.Empty(session.Report([Rtt(3, 20), Rtt(4, 20)]));
        session.PlannedParent(1, 4);
        Assert.Empty(session.Report([Rtt(4, 20), Rtt(3, 20)]));
    }

    [Fact]
    public void Former_parents_past_the_sixteen_latest_are_forgotten_with_their_rtts()
    {
        // Shard 0 moves through parents 1, 2, ..., 20, each reported once while it is the parent.
        var session = new PeerSession(99, "p:1", null!);
        for (int parent = 1; parent <= 20; parent++)
        {
            session.PlannedParent(0, parent);
            Assert.Empty(session.Report([Rtt(parent, (uint)parent)]));
        }

        // Its parent now (20) and the 16 before it (19 down to 4) are kept; 1, 2 and 3 are forgotten.
        Assert.Equal([.. Enumerable.Range(4, 17).Reverse()], Kept(session));
        Assert.False(session.WasPlannedParent(3));
        Assert.True(session.WasPlannedParent(4));
        Assert.Equal([3UL], session.Report([Rtt(20, 20), Rtt(3, 3)]));
    }
}

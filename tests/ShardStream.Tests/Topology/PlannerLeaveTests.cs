using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

public sealed class PlannerLeaveTests
{
    private static Planner BinaryOf(int peers)
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        for (var i = 0; i < peers; i++)
        {
            planner.Join(2);
        }

        return planner;
    }

    [Fact]
    public void Surviving_orphans_keep_their_own_children()
    {
        var planner = BinaryOf(100);
        var gone = planner.Peers.First(p => planner.DepthOf(p, 0) == 2);
        var orphans = planner.ChildrenOf(gone, 0).ToList();
        var grandchildren = orphans.ToDictionary(o => o, o => planner.ChildrenOf(o, 0).Order().ToList());

        var moves = planner.Leave([gone]);

        Assert.All(orphans, o => Assert.Equal(grandchildren[o], planner.ChildrenOf(o, 0).Order().ToList()));
        Assert.All(orphans, o => Assert.Equal(3, planner.DepthOf(o, 0)));
        Assert.Equal(orphans.Count + 1, moves.Count); // a leaf promoted into the hole, orphans under it
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void A_peer_that_ends_under_the_parent_it_had_is_not_told_to_move()
    {
        // The chain source, p1, p2, p3 of AfterTheEndTests' lagging child: when p1 leaves, p2 takes
        // its place under the source and p3 stays under p2. The repair took p3 off p2 (p2 was the
        // replacement pulled up from above the bottom, its children released) and put it back
        // under p2, and reported that as a move: the coordinator sent p3 a Move to the parent it
        // had, p3 attached to p2 again and closed its first link, and whatever p2 still had queued
        // for it there was gone (p3 lagged by more than the windows: 1,851,392 bytes lost).
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, SourceBudget: 1));
        int p1 = planner.Join(1), p2 = planner.Join(1), p3 = planner.Join(0);
        Assert.Equal((Planner.Source, p1, p2), (planner.ParentOf(p1, 0), planner.ParentOf(p2, 0), planner.ParentOf(p3, 0)));

        var moves = planner.Leave([p1]);

        Assert.Equal((Planner.Source, p2), (planner.ParentOf(p2, 0), planner.ParentOf(p3, 0)));
        Assert.Equal([new Reattachment(p2, 0, Planner.Source)], moves);
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Leaving_a_whole_branch_moves_nobody_else()
    {
        var planner = BinaryOf(100);
        var root = planner.Peers.First(p => planner.DepthOf(p, 0) == 3);
        var branch = new List<int> { root };
        for (var i = 0; i < branch.Count; i++)
        {
            branch.AddRange(planner.ChildrenOf(branch[i], 0));
        }

        var moves = planner.Leave(branch);

        Assert.Empty(moves);
        Assert.Equal(100 - branch.Count, planner.PeerCount);
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Ids_are_never_reused_and_gone_peers_are_ignored()
    {
        var planner = BinaryOf(5);
        planner.Leave([5, 4]);

        Assert.Empty(planner.Leave([5, 4]));
        Assert.Equal(6, planner.Join(2));
        Assert.False(planner.Contains(5));
        Assert.Throws<ArgumentException>(() => planner.ParentOf(5, 0));
    }
}

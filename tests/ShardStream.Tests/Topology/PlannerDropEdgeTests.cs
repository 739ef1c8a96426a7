using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary><see cref="Planner.DropEdge"/>: a child that cannot connect to its parent gets another, and never that one again.</summary>
public sealed class PlannerDropEdgeTests
{
    [Fact]
    public void A_dropped_edge_moves_the_child_with_its_subtree_under_another_parent()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        for (var i = 0; i < 30; i++)
        {
            planner.Join(2);
        }

        var child = planner.Peers.First(p => planner.DepthOf(p, 0) == 2 && planner.ChildrenOf(p, 0).Any());
        var parent = planner.ParentOf(child, 0);
        var below = PlanAssert.Subtree(planner, child, 0);

        var moves = planner.DropEdge(child, 0);

        var now = planner.ParentOf(child, 0);
        Assert.NotEqual(parent, now);
        Assert.Equal([new Reattachment(child, 0, now)], moves);
        Assert.True(planner.IsAvoided(child, parent));
        Assert.Equal(below.Order(), PlanAssert.Subtree(planner, child, 0).Order());
        Assert.Equal(30, planner.PeerCount);
        PlanAssert.Consistent(planner);
    }

    [Theory]
    [InlineData(1, TopologyKind.Binary)]
    [InlineData(2, TopologyKind.Tessellated)]
    [InlineData(4, TopologyKind.Striped)]
    [InlineData(8, TopologyKind.Striped)]
    public void Dropped_edges_never_come_back_through_joins_leaves_and_demotions(int shards, TopologyKind topology)
    {
        var planner = new Planner(PlannerOptions.Default(shards, topology));
        var random = new Random(shards);
        for (var i = 0; i < 80; i++)
        {
            TryJoin(planner, i >= 10 && random.Next(4) == 0 ? 0 : shards + 1);
        }

        var dropped = new List<(int Child, int Parent)>();
        for (var i = 0; i < 25; i++)
        {
            var peers = planner.Peers.ToList();
            var child = peers[random.Next(peers.Count)];
            var shard = random.Next(shards);
            var parent = planner.ParentOf(child, shard);
            var moves = planner.DropEdge(child, shard);
            if (moves.Count == 0)
            {
                // The source, or no free slot elsewhere in that tree: nothing changes.
                Assert.Equal(parent, planner.ParentOf(child, shard));
                Assert.False(planner.IsAvoided(child, parent));
                continue;
            }

            Assert.NotEqual(Planner.Source, parent);
            dropped.Add((child, parent));
            PlanAssert.MovesMatchPlan(planner, moves);
            PlanAssert.Consistent(planner);
            AssertNoDroppedEdge(planner, dropped);
        }

        Assert.NotEmpty(dropped);
        for (var i = 0; i < 60; i++)
        {
            var peers = planner.Peers.ToList();
            var op = peers.Count < 10 ? 0 : random.Next(3);
            IReadOnlyList<Reattachment> moves;
            if (op == 0)
            {
                moves = TryJoin(planner, random.Next(4) == 0 ? 0 : shards + 1) ? planner.LastJoinMoves : [];
            }
            else if (op == 1)
            {
                moves = planner.Leave([peers[random.Next(peers.Count)]]);
            }
            else
            {
                moves = planner.Demote(peers[random.Next(peers.Count)]);
            }

            PlanAssert.MovesMatchPlan(planner, moves);
            PlanAssert.Consistent(planner);
            AssertNoDroppedEdge(planner, dropped);
        }
    }

    [Fact]
    public void The_source_is_never_dropped_as_a_parent()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        var first = planner.Join(2);
        planner.Join(2);
        planner.Join(2);

        Assert.Empty(planner.DropEdge(first, 0));
        Assert.Equal(Planner.Source, planner.ParentOf(first, 0));
        Assert.False(planner.IsAvoided(first, Planner.Source));
    }

    [Fact]
    public void With_no_free_slot_the_child_exchanges_places_with_a_leaf_elsewhere()
    {
        // Source budget 2: a (budget 1) and b (a viewer) under it; c (a viewer) under a. No slot is free.
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        var a = planner.Join(1);
        var b = planner.Join(0);
        var c = planner.Join(0);
        Assert.Equal(a, planner.ParentOf(c, 0));

        var moves = planner.DropEdge(c, 0);

        Assert.Equal(Planner.Source, planner.ParentOf(c, 0));
        Assert.Equal(a, planner.ParentOf(b, 0));
        Assert.Equal(2, moves.Count);
        Assert.True(planner.IsAvoided(c, a));
        PlanAssert.MovesMatchPlan(planner, moves);
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Without_making_room_a_full_tree_keeps_the_edge_and_nobody_moves()
    {
        // As above: no slot is free, and b could give c its place; not asked to make room.
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        var a = planner.Join(1);
        var b = planner.Join(0);
        var c = planner.Join(0);

        Assert.Empty(planner.DropEdge(c, 0, exchanges: 0));

        Assert.Equal(a, planner.ParentOf(c, 0));
        Assert.Equal(Planner.Source, planner.ParentOf(b, 0));
        Assert.False(planner.IsAvoided(c, a));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Without_making_room_a_free_slot_still_takes_the_child()
    {
        // As above, then b leaves: its slot at the source is free.
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        var a = planner.Join(1);
        var b = planner.Join(0);
        var c = planner.Join(0);
        planner.Leave([b]);
        Assert.Equal(a, planner.ParentOf(c, 0));

        var moves = planner.DropEdge(c, 0, exchanges: 0);

        Assert.Equal([new Reattachment(c, 0, Planner.Source)], moves);
        Assert.True(planner.IsAvoided(c, a));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void With_no_other_place_at_all_the_edge_stays_and_nothing_is_remembered()
    {
        // Source budget 1: a (budget 1) under it, c (a viewer) under a; no free slot, no other leaf.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1));
        var a = planner.Join(1);
        var c = planner.Join(0);

        Assert.Empty(planner.DropEdge(c, 0));

        Assert.Equal(a, planner.ParentOf(c, 0));
        Assert.False(planner.IsAvoided(c, a));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void A_child_is_never_placed_inside_its_own_subtree()
    {
        // Source budget 1: a under it; b and c under a; d and e under b; two viewers under c.
        // The only free slots are d's and e's, below b: b takes a viewer's place under c instead.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1));
        var a = planner.Join(2);
        var b = planner.Join(2);
        var c = planner.Join(2);
        var d = planner.Join(2);
        var e = planner.Join(2);
        planner.Join(0);
        planner.Join(0);
        Assert.Equal(a, planner.ParentOf(b, 0));
        Assert.Equal([d, e], planner.ChildrenOf(b, 0).Order());
        Assert.Equal(2, planner.ChildrenOf(c, 0).Count());

        var moves = planner.DropEdge(b, 0);

        Assert.Equal(c, planner.ParentOf(b, 0));
        Assert.Equal([d, e], planner.ChildrenOf(b, 0).Order());
        PlanAssert.MovesMatchPlan(planner, moves);
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Every_shard_a_child_received_from_the_dropped_parent_moves()
    {
        // Tessellated: in the seed's pattern P1 feeds P2 both shards.
        var planner = new Planner(PlannerOptions.Default(2, TopologyKind.Tessellated));
        for (var i = 0; i < 12; i++)
        {
            planner.Join(3);
        }

        var child = planner.Peers.First(p => planner.ParentOf(p, 0) != Planner.Source && planner.ParentOf(p, 0) == planner.ParentOf(p, 1));
        var parent = planner.ParentOf(child, 0);

        var moves = planner.DropEdge(child, 0);

        Assert.NotEqual(parent, planner.ParentOf(child, 0));
        Assert.NotEqual(parent, planner.ParentOf(child, 1));
        Assert.Contains(moves, m => m.Peer == child && m.Shard == 1);
        PlanAssert.MovesMatchPlan(planner, moves);
        PlanAssert.Consistent(planner);
    }

    /// <summary>Joins, or leaves the plan unchanged when no tree has room (a legitimate refusal).</summary>
    private static bool TryJoin(Planner planner, int budget)
    {
        try
        {
            planner.Join(budget);
            return true;
        }
        catch (PlacementException)
        {
            return false;
        }
    }

    private static void AssertNoDroppedEdge(Planner planner, List<(int Child, int Parent)> dropped)
    {
        foreach (var (child, parent) in dropped)
        {
            if (!planner.Contains(child))
            {
                continue;
            }

            for (var s = 0; s < planner.ShardCount; s++)
            {
                Assert.True(planner.ParentOf(child, s) != parent, $"peer {child} is under {parent} in shard {s} again, after that edge was dropped");
            }
        }
    }
}

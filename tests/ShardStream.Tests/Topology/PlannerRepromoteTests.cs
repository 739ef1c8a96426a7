using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary><see cref="Planner.Repromote"/>: a demoted peer gets its budget back where it is, and later joiners use it.</summary>
public sealed class PlannerRepromoteTests
{
    [Fact]
    public void A_repromoted_leaf_moves_nobody_and_takes_the_next_joiner_when_nobody_else_has_room()
    {
        // Source budget 1 -> relay (budget 2) -> a peer of budget 2 and a viewer. Once the peer is
        // demoted, the overlay is full: a viewer cannot join.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1));
        var relay = planner.Join(2);
        var peer = planner.Join(2);
        var viewer = planner.Join(0);
        Assert.Equal([peer, viewer], planner.ChildrenOf(relay, 0).Order());
        Assert.Empty(planner.Demote(peer));
        Assert.Throws<PlacementException>(() => planner.Join(0));
        var parents = planner.Peers.ToDictionary(p => p, p => planner.ParentOf(p, 0));

        Assert.True(planner.Repromote(peer, 2));

        Assert.Equal(2, planner.Budget(peer));
        Assert.Equal(parents, planner.Peers.ToDictionary(p => p, p => planner.ParentOf(p, 0)));
        PlanAssert.Consistent(planner);
        var joiner = planner.Join(0);
        Assert.Equal(peer, planner.ParentOf(joiner, 0));
        Assert.Empty(planner.LastJoinMoves);
        PlanAssert.Consistent(planner);
    }

    [Theory]
    [InlineData(TopologyKind.Tessellated, 2, 3)]
    [InlineData(TopologyKind.Striped, 4, 5)]
    [InlineData(TopologyKind.Striped, 8, 9)]
    public void A_repromoted_relay_gets_its_budget_split_as_a_joiners_and_serves_later_joiners(TopologyKind topology, int k, int budget)
    {
        var planner = new Planner(new PlannerOptions(k, topology, k + 1));
        for (var i = 0; i < 30; i++)
        {
            planner.Join(budget);
        }

        // An interior peer: demoted, its children go elsewhere.
        var peer = planner.Peers.First(p => Enumerable.Range(0, k).Any(s => planner.ChildrenOf(p, s).Any()));
        planner.Demote(peer);
        Assert.Equal(0, planner.Budget(peer));
        Assert.Equal(0, Enumerable.Range(0, k).Sum(s => planner.CapacityIn(peer, s)));
        var parents = planner.Peers.ToDictionary(p => p, p => string.Join(",", Enumerable.Range(0, k).Select(s => planner.ParentOf(p, s))));

        Assert.True(planner.Repromote(peer, budget));

        Assert.Equal(budget, planner.Budget(peer));
        Assert.Equal(budget, Enumerable.Range(0, k).Sum(s => planner.CapacityIn(peer, s)));
        Assert.Equal(parents, planner.Peers.ToDictionary(p => p, p => string.Join(",", Enumerable.Range(0, k).Select(s => planner.ParentOf(p, s)))));
        if (topology == TopologyKind.Striped)
        {
            // Interior in one tree only, its home, as a joiner of that budget.
            var home = planner.HomeShard(peer);
            Assert.InRange(home, 0, k - 1);
            Assert.Equal(budget, planner.CapacityIn(peer, home));
        }
        else
        {
            Assert.Equal([1, 2], Enumerable.Range(0, k).Select(s => planner.CapacityIn(peer, s)).Order());
        }

        PlanAssert.Consistent(planner);
        // Viewers join until one is under it (its slots are free slots like any other).
        for (var i = 0; i < 200 && Enumerable.Range(0, k).All(s => !planner.ChildrenOf(peer, s).Any()); i++)
        {
            planner.Join(0);
            PlanAssert.Consistent(planner);
        }

        Assert.Contains(Enumerable.Range(0, k), s => planner.ChildrenOf(peer, s).Any());
    }

    [Fact]
    public void Only_a_peer_with_budget_0_is_repromoted()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        var relay = planner.Join(2);
        var viewer = planner.Join(0);
        var version = planner.Version;

        Assert.False(planner.Repromote(relay, 3));
        Assert.False(planner.Repromote(99, 2));
        Assert.Throws<ArgumentException>(() => planner.Repromote(Planner.Source, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => planner.Repromote(viewer, 0));
        Assert.Equal(version, planner.Version);
        Assert.Equal(2, planner.Budget(relay));
        Assert.True(planner.Repromote(viewer, 1));
        Assert.Equal(1, planner.Budget(viewer));
        PlanAssert.Consistent(planner);
    }
}

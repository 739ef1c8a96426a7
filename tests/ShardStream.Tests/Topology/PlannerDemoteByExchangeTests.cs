using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary><see cref="Planner.DemoteByExchange"/>: a relay nobody else has room to replace exchanges places with one of its children.</summary>
public sealed class PlannerDemoteByExchangeTests
{
    [Fact]
    public void The_only_child_of_a_source_with_one_slot_exchanges_places_with_its_child_that_relays()
    {
        // Source budget 1 -> relay 1 (budget 2) -> peers 2 (a viewer by now) and 3 (budget 2):
        // nobody else has room for the relay's two children, but peer 3 has room for peer 2 and the relay.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1));
        var relay = planner.Join(2);
        var viewer = planner.Join(2);
        var child = planner.Join(2);
        Assert.Equal([viewer, child], planner.ChildrenOf(relay, 0).Order());
        planner.Demote(viewer);
        Assert.Equal(relay, planner.ParentOf(viewer, 0));
        Assert.False(planner.CanDemoteWithoutEviction(relay));
        Assert.False(planner.CanDemoteByExchange(relay, viewer), "a child with no budget cannot take a relay's place");

        Assert.True(planner.CanDemoteByExchange(relay, child));
        var moves = planner.DemoteByExchange(relay, child);

        Assert.Equal(
            [new Reattachment(child, 0, Planner.Source), new Reattachment(viewer, 0, child), new Reattachment(relay, 0, child)],
            moves.OrderBy(m => m.Peer == child ? 0 : m.Peer == viewer ? 1 : 2));
        Assert.Equal(0, planner.Budget(relay));
        Assert.Equal(2, planner.Budget(child));
        Assert.Equal(3, planner.PeerCount);
        Assert.Equal(2, planner.MaxDepth(0));
        PlanAssert.MovesMatchPlan(planner, moves);
        PlanAssert.Consistent(planner);
        // A leaf now: demoting it again changes nothing.
        Assert.False(planner.CanDemoteByExchange(relay, child));
        Assert.Empty(planner.DemoteByExchange(relay, child));
    }

    [Fact]
    public void A_child_that_has_no_room_for_its_siblings_beside_its_own_children_is_refused_and_nothing_changes()
    {
        // Source budget 1 -> relay 1 (budget 3) -> three children; one of budget 1 cannot hold two siblings.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1));
        var relay = planner.Join(3);
        var weak = planner.Join(1);
        var strong = planner.Join(3);
        var third = planner.Join(0);
        Assert.All(new[] { weak, strong, third }, c => Assert.Equal(relay, planner.ParentOf(c, 0)));
        var version = planner.Version;

        Assert.False(planner.CanDemoteByExchange(relay, weak));
        Assert.Empty(planner.DemoteByExchange(relay, weak));
        Assert.False(planner.CanDemoteByExchange(weak, relay), "a parent is not a child");
        Assert.False(planner.CanDemoteByExchange(Planner.Source, relay));
        Assert.False(planner.CanDemoteByExchange(relay, 99));
        Assert.False(planner.CanDemoteByExchange(strong, third), "a relay with no children has nothing to exchange");
        Assert.Equal(version, planner.Version);

        // The strong one has room for both siblings and the relay.
        Assert.True(planner.CanDemoteByExchange(relay, strong));
        var moves = planner.DemoteByExchange(relay, strong);
        Assert.Equal(strong, planner.ParentOf(relay, 0));
        Assert.Equal(3, planner.UsedUnits(strong));
        PlanAssert.MovesMatchPlan(planner, moves);
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void When_the_child_has_no_slot_left_for_the_demoted_peer_it_takes_a_free_slot_elsewhere()
    {
        // Source budget 1 -> relay (budget 2) -> child (budget 1) and sibling (budget 2). The child
        // has room for the sibling only; the relay goes to the sibling's free slot.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1));
        var relay = planner.Join(2);
        var child = planner.Join(1);
        var sibling = planner.Join(2);
        Assert.Equal([child, sibling], planner.ChildrenOf(relay, 0).Order());

        Assert.True(planner.CanDemoteByExchange(relay, child));
        var moves = planner.DemoteByExchange(relay, child);

        Assert.Equal(
            [new Reattachment(relay, 0, sibling), new Reattachment(child, 0, Planner.Source), new Reattachment(sibling, 0, child)],
            moves.OrderBy(m => m.Peer));
        Assert.Equal(3, planner.MaxDepth(0));
        PlanAssert.MovesMatchPlan(planner, moves);
        PlanAssert.Consistent(planner);
    }

    [Theory]
    [InlineData(1, TopologyKind.Binary, 21)]
    [InlineData(1, TopologyKind.Binary, 22)]
    [InlineData(2, TopologyKind.Tessellated, 23)]
    [InlineData(4, TopologyKind.Striped, 24)]
    [InlineData(8, TopologyKind.Striped, 25)]
    public void An_exchange_the_check_allows_evicts_nobody_holds_every_budget_and_keeps_the_trees_near_their_best(int k, TopologyKind topology, int seed)
    {
        var random = new Random(seed);
        var planner = new Planner(new PlannerOptions(k, topology, k) { Seed = seed });
        int exchanges = 0;
        for (var step = 0; step < 1500; step++)
        {
            if (planner.PeerCount < 12 || random.NextDouble() < 0.55)
            {
                try
                {
                    planner.Join(random.Next(5) == 0 ? 0 : random.Next(1, 2 * k + 2));
                }
                catch (PlacementException)
                {
                    // A viewer-heavy plan may run out of room for another viewer.
                }

                continue;
            }

            var peers = planner.Peers.ToList();
            var slow = peers[random.Next(peers.Count)];
            var children = Enumerable.Range(0, k).SelectMany(s => planner.ChildrenOf(slow, s)).Distinct().ToList();
            var child = children.Where(c => planner.CanDemoteByExchange(slow, c)).OrderByDescending(planner.Budget).FirstOrDefault(Planner.None);
            if (child == Planner.None)
            {
                if (random.Next(3) == 0)
                {
                    planner.Leave([slow]);
                }

                continue;
            }

            var budgets = peers.ToDictionary(p => p, planner.Budget);
            var depths = Enumerable.Range(0, k).Select(planner.MaxDepth).ToArray();
            var moves = planner.DemoteByExchange(slow, child);
            exchanges++;

            Assert.DoesNotContain(moves, m => m.NewParent == Planner.None);
            Assert.Equal(peers.Count, planner.PeerCount);
            Assert.Equal(0, planner.Budget(slow));
            Assert.Equal(0, planner.UsedUnits(slow));
            Assert.All(peers.Where(p => p != slow), p => Assert.Equal(budgets[p], planner.Budget(p)));
            Assert.All(Enumerable.Range(0, k), s => Assert.NotEqual(slow, planner.ParentOf(child, s)));
            PlanAssert.MovesMatchPlan(planner, moves);
            PlanAssert.Consistent(planner);
            if (topology == TopologyKind.Tessellated)
            {
                PlanAssert.NearTessellationOrBest(planner, $"after exchange {exchanges}");
            }
            else
            {
                PlanAssert.NearBestDepth(planner, $"after exchange {exchanges}");
            }

            // Nobody but the demoted peer gets deeper, by one level: no tree grows by more.
            Assert.All(Enumerable.Range(0, k), s => Assert.True(planner.MaxDepth(s) <= depths[s] + 1, $"shard {s}: {depths[s]} -> {planner.MaxDepth(s)}"));
        }

        Assert.True(exchanges > 10, $"only {exchanges} exchanges were possible");
    }
}

using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary><see cref="Planner.Shed"/>: a relay whose upload does not carry its children gives up one, into a free slot outside its subtree, and takes no more.</summary>
public sealed class PlannerShedTests
{
    [Theory]
    [InlineData(1, TopologyKind.Binary)]
    [InlineData(2, TopologyKind.Tessellated)]
    [InlineData(4, TopologyKind.Striped)]
    [InlineData(8, TopologyKind.Striped)]
    public void A_relay_sheds_one_child_into_a_free_slot_outside_its_subtree_and_its_budget_drops_to_what_it_serves(int shards, TopologyKind topology)
    {
        var random = new Random(shards * 11);
        int moved = 0, stayed = 0;
        for (var round = 0; round < 20; round++)
        {
            var planner = new Planner(PlannerOptions.Default(shards, topology));
            for (var i = 0; i < 40; i++)
            {
                try
                {
                    planner.Join(random.Next(4) == 0 ? 0 : random.Next(1, 3 * shards));
                }
                catch (PlacementException)
                {
                    // No tree had room for it: a legitimate refusal.
                }
            }

            var relays = planner.Peers.Where(p => planner.ChildrenInAnyShard(p).Any()).ToList();
            var relay = relays[random.Next(relays.Count)];
            var children = planner.ChildrenInAnyShard(relay).ToList();
            var first = children[random.Next(children.Count)];
            var before = PlanAssert.Parents(planner);
            var budgets = planner.Peers.ToDictionary(p => p, planner.Budget);

            var moves = planner.Shed(relay, first);

            PlanAssert.Consistent(planner);
            PlanAssert.MovesMatchPlan(planner, moves);
            // Its budget is what it still serves; nobody else's changes.
            Assert.Equal(planner.UsedUnits(relay), planner.Budget(relay));
            Assert.Equal(budgets.Where(b => b.Key != relay), planner.Peers.Where(p => p != relay).ToDictionary(p => p, planner.Budget));
            if (moves.Count == 0)
            {
                Assert.Equal(before, PlanAssert.Parents(planner));
                stayed++;
            }
            else
            {
                // One child, in every shard it had from the relay, each now outside the relay's subtree.
                var child = Assert.Single(moves.Select(m => m.Peer).Distinct());
                Assert.Contains(child, children);
                for (var s = 0; s < shards; s++)
                {
                    Assert.Equal(before[(child, s)] == relay, moves.Any(m => m.Shard == s));
                    Assert.NotEqual(relay, planner.ParentOf(child, s));
                    if (before[(child, s)] == relay)
                    {
                        Assert.DoesNotContain(planner.ParentOf(child, s), PlanAssert.Subtree(planner, relay, s));
                    }
                }

                Assert.Equal(before.Where(e => e.Key.Peer != child), PlanAssert.Parents(planner).Where(e => e.Key.Peer != child));
                moved++;
            }

            // No later join or leave gives it a child beyond what it serves now.
            var cap = planner.Budget(relay);
            for (var i = 0; i < 20; i++)
            {
                try
                {
                    planner.Join(random.Next(3) == 0 ? 0 : random.Next(1, 3 * shards));
                }
                catch (PlacementException)
                {
                }

                Assert.True(planner.UsedUnits(relay) <= cap, $"the shed relay serves {planner.UsedUnits(relay)} > {cap}");
            }

            var leaving = planner.Peers.Where(p => p != relay).OrderBy(_ => random.Next()).Take(5).ToList();
            planner.Leave(leaving);
            PlanAssert.Consistent(planner);
            // (The repair of a leave may evict it, as any peer, when no capacity is left.)
            if (planner.Contains(relay))
            {
                Assert.True(planner.UsedUnits(relay) <= cap, $"after leaves the shed relay serves {planner.UsedUnits(relay)} > {cap}");
            }
        }

        Assert.True(moved > 0, $"no child moved ({stayed} stayed)");
    }

    [Fact]
    public void The_slow_child_goes_first_and_a_child_with_no_free_slot_outside_stays()
    {
        // The source's two slots: a relay (four) and another (one); the relay's: three viewers.
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary) with { SourceBudget = 2 });
        var relay = planner.Join(4);
        var other = planner.Join(1);
        var viewers = Enumerable.Range(0, 3).Select(_ => planner.Join(0)).ToList();
        Assert.All(viewers, v => Assert.Equal(relay, planner.ParentOf(v, 0)));

        var moves = planner.Shed(relay, viewers[2]);
        Assert.Equal([new Reattachment(viewers[2], 0, other)], moves);
        Assert.Equal(2, planner.Budget(relay));

        // No free slot outside its subtree now: nobody moves, the budget stays what it serves.
        Assert.Empty(planner.Shed(relay, viewers[1]));
        Assert.Equal(relay, planner.ParentOf(viewers[1], 0));
        Assert.Equal(2, planner.Budget(relay));
        PlanAssert.Consistent(planner);
    }
}

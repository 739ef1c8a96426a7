using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>
/// <see cref="Planner.CanEvictWithoutEvictingOthers"/>: the check the coordinator makes before it
/// evicts a relay whose upload does not carry its children, where the overlay has no room to demote it.
/// </summary>
public sealed class PlannerEvictRelayTests
{
    /// <summary>
    /// In random plans (joins of viewers and relays of random budgets, leaves, demotions), every
    /// relay the check allows to be taken out leaves with nobody else evicted: each other peer is
    /// still in the plan, with its budget, and the plan is consistent. Some of those relays could
    /// not have been demoted (that is what the eviction is for), and the check refuses some.
    /// </summary>
    [Theory]
    [InlineData(1, TopologyKind.Binary, 21)]
    [InlineData(2, TopologyKind.Tessellated, 22)]
    [InlineData(2, TopologyKind.Striped, 23)]
    [InlineData(3, TopologyKind.Striped, 24)]
    [InlineData(4, TopologyKind.Striped, 25)]
    [InlineData(8, TopologyKind.Striped, 26)]
    [InlineData(16, TopologyKind.Striped, 27)]
    public void A_relay_the_check_allows_to_evict_leaves_alone_and_the_plan_stays_consistent(int k, TopologyKind topology, int seed)
    {
        var random = new Random(seed);
        int allowed = 0, beyondDemotion = 0, refused = 0;
        for (var round = 0; round < 30; round++)
        {
            var planner = new Planner(PlannerOptions.Default(k, topology) with { Seed = seed * 100 + round });
            for (var step = 0; step < 400; step++)
            {
                var roll = random.NextDouble();
                if (planner.PeerCount < 8 || roll < 0.55)
                {
                    try
                    {
                        // Mostly tight: viewers and peers that give about what they take.
                        planner.Join(random.Next(5) switch { 0 => 0, 1 => random.Next(1, 3 * k + 1), _ => k + 1 });
                    }
                    catch (PlacementException)
                    {
                        // No room for it: a legitimate refusal.
                    }

                    continue;
                }

                var peers = planner.Peers.ToList();
                if (roll < 0.7)
                {
                    planner.Leave([peers[random.Next(peers.Count)]]);
                    continue;
                }

                if (roll < 0.75)
                {
                    var slow = peers[random.Next(peers.Count)];
                    if (planner.CanDemoteWithoutEviction(slow))
                    {
                        planner.Demote(slow);
                    }

                    continue;
                }

                var relays = peers.Where(p => planner.ChildrenInAnyShard(p).Any()).ToList();
                if (relays.Count == 0)
                {
                    continue;
                }

                var relay = relays[random.Next(relays.Count)];
                if (!planner.CanEvictWithoutEvictingOthers(relay))
                {
                    refused++;
                    continue;
                }

                allowed++;
                if (!planner.CanDemoteWithoutEviction(relay))
                {
                    beyondDemotion++;
                }

                var budgets = planner.Peers.Where(p => p != relay).ToDictionary(p => p, planner.Budget);
                var moves = planner.Leave([relay]);
                Assert.DoesNotContain(moves, m => m.NewParent == Planner.None);
                Assert.False(planner.Contains(relay));
                Assert.Equal(budgets.Keys.Order(), planner.Peers.Order());
                Assert.Equal(budgets, planner.Peers.ToDictionary(p => p, planner.Budget));
                PlanAssert.Consistent(planner);
                PlanAssert.MovesMatchPlan(planner, moves);
            }
        }

        Assert.True(allowed > 20, $"only {allowed} evictions were allowed ({refused} refused)");
        Assert.True(beyondDemotion > 0, $"every relay allowed ({allowed}) could have been demoted: the check adds nothing");
        Assert.True(refused > 0, "the plan never ran short of room: the check was never exercised");
    }
}

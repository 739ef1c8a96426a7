using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>
/// With the default budgets (every node, the source too, serves K+1 shard-streams: more than the
/// stream needs) the planner always has room: no join, no leave and no leave of several peers at
/// once may evict anyone. <see cref="ShardStream.Tests.Nodes.FailureScheduleTests"/> relies on it:
/// there a survivor missing from the coordinator's view is a failure, never an excused eviction.
/// (Striped plans are not covered: with fewer peers than shards some shard has no home peer, and
/// the planner can evict there although the budgets add up; see docs/topology.md.)
/// </summary>
public class PlannerNoEvictionTests
{
    [Theory]
    [InlineData(1, TopologyKind.Binary)]
    [InlineData(2, TopologyKind.Tessellated)]
    public void Default_budgets_never_evict_in_small_overlays_under_any_leaves(int k, TopologyKind topology)
    {
        for (int seed = 0; seed < 1500; seed++)
        {
            var random = new Random(seed);
            var planner = new Planner(new PlannerOptions(k, topology, k + 1));
            int peers = random.Next(2, 16);
            for (int i = 0; i < peers; i++) planner.Join(k + 1);
            var log = new List<string>();
            while (planner.PeerCount > 1)
            {
                if (random.Next(3) == 0 && planner.PeerCount < 12)
                {
                    int id = planner.Join(k + 1);
                    log.Add($"join {id}");
                    Assert.DoesNotContain(planner.LastJoinMoves, m => m.NewParent == Planner.None);
                    continue;
                }
                var alive = planner.Peers.ToList();
                var gone = alive.OrderBy(_ => random.Next()).Take(random.Next(1, Math.Min(4, alive.Count))).ToList();
                log.Add($"leave {string.Join(",", gone)}");
                var evicted = planner.Leave(gone).Where(m => m.NewParent == Planner.None).Select(m => m.Peer).Distinct().ToList();
                Assert.True(evicted.Count == 0, $"seed {seed}, K={k}, {peers} peers: {string.Join("; ", log)}: evicted {string.Join(",", evicted)}");
            }
        }
    }

    /// <summary>
    /// K = 2 with pure viewers (budget 0) among the default-budget peers: their first join ends the
    /// tessellated pattern, and from then each budget is split over the two trees. A relay's death
    /// could then leave an orphan without a free slot in one tree while the nodes above had units
    /// unused in the other, and evict it with its subtree, healthy peers "without capacity" in an
    /// overlay with a third of its upload free (CliMetricsTests: peers 3 and 5 evicted when relay 1
    /// was killed, 5 peers and a frozen viewer). Here the overlay always has room for everyone
    /// left, with units to spare: at most peers / 2 viewers, so after the death at least 2 of the
    /// budgets' units are free. (With fewer free, the repair that keeps subtrees whole can still
    /// evict: an orphan's subtree cannot hold the orphan.)
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Pure_viewers_among_default_budgets_do_not_make_a_relay_death_evict_anyone(bool latencyAware)
    {
        for (int seed = 0; seed < 1500; seed++)
        {
            var random = new Random(seed);
            var planner = new Planner(new PlannerOptions(2, TopologyKind.Tessellated, 3, LatencyAware: latencyAware));
            NetworkCoordinate Somewhere() => new(random.NextDouble() * 300 - 150, random.NextDouble() * 300 - 150, 20 + (random.NextDouble() * 40), 0.13);
            int peers = random.Next(3, 10);
            var log = new List<string>();
            for (int i = 0; i < peers; i++) planner.Join(3, Somewhere());
            int viewers = random.Next(1, (peers / 2) + 1);
            for (int i = 0; i < viewers; i++) log.Add($"viewer {planner.Join(0, Somewhere())}");
            int relay = planner.Peers.Where(p => planner.CapacityIn(p, 0) + planner.CapacityIn(p, 1) > 0).OrderBy(_ => random.Next()).First();
            log.Add($"relay {relay} leaves");
            var evicted = planner.Leave([relay]).Where(m => m.NewParent == Planner.None).Select(m => m.Peer).Distinct().ToList();
            Assert.True(evicted.Count == 0, $"seed {seed}, {peers} peers of budget 3: {string.Join("; ", log)}: evicted {string.Join(",", evicted)}");
            PlanAssert.Consistent(planner);
        }
    }

    /// <summary>
    /// Once the source has ended (the coordinator sets <see cref="Planner.SourceTakesStranded"/>)
    /// no leave evicts anyone, in the plans that do evict otherwise: striped with fewer peers than
    /// shards (K = 16, 8 peers, budgets 1.25x or K+1), as the peers leave one after another as
    /// they finish. An orphan no peer has room for is the source's, beyond its budget, which says
    /// so (the plan stays consistent: nobody over its budget). Without the flag some of the same
    /// sequences evict (checked last), as the end of an acceptance run did.
    /// </summary>
    [Theory]
    [InlineData(20)]
    [InlineData(17)]
    public void After_the_end_leaves_one_after_another_evict_nobody_in_a_striped_plan_with_fewer_peers_than_shards(int budget)
    {
        const int k = 16, peers = 8;
        int evictingSequences = 0;
        for (int seed = 0; seed < 200; seed++)
        {
            foreach (bool ended in new[] { false, true })
            {
                var random = new Random(seed);
                var planner = new Planner(new PlannerOptions(k, TopologyKind.Striped, budget));
                for (int i = 0; i < peers; i++) planner.Join(budget);
                planner.SourceTakesStranded = ended;
                var log = new List<string>();
                bool evicted = false;
                while (planner.PeerCount > 0)
                {
                    int gone = planner.Peers.OrderBy(_ => random.Next()).First();
                    log.Add($"leave {gone}");
                    var lost = planner.Leave([gone]).Where(m => m.NewParent == Planner.None).Select(m => m.Peer).Distinct().ToList();
                    evicted |= lost.Count > 0;
                    if (ended) Assert.True(lost.Count == 0, $"seed {seed}, budget {budget}: {string.Join("; ", log)}: evicted {string.Join(",", lost)}");
                    PlanAssert.Consistent(planner);
                }
                if (!ended && evicted) evictingSequences++;
            }
        }
        Assert.True(evictingSequences > 0, "no leave sequence evicted without the flag: the test shows nothing");
    }
}

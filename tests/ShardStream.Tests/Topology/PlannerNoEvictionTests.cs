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
}

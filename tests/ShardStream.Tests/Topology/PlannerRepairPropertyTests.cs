using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>
/// Random sequences of every operation the coordinator applies to its plan (joins, leaves,
/// evictions of a whole branch, demotions, re-promotions, dropped edges), interleaved, on small and mid-sized
/// overlays: after every single operation each shard tree is a tree rooted at the source, no node
/// is over its budget, and the trees stay near their depth bound.
/// </summary>
public sealed class PlannerRepairPropertyTests
{
    public static TheoryData<TopologyKind, int, bool, bool, int> Cases()
    {
        var data = new TheoryData<TopologyKind, int, bool, bool, int>();
        foreach (var (topology, k) in new[] { (TopologyKind.Binary, 1), (TopologyKind.Tessellated, 2), (TopologyKind.Striped, 3), (TopologyKind.Striped, 4), (TopologyKind.Striped, 8) })
        {
            foreach (var aware in new[] { false, true })
            {
                foreach (var uniform in new[] { false, true })
                {
                    for (var seed = 1; seed <= 3; seed++)
                    {
                        data.Add(topology, k, aware, uniform, seed);
                    }
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Every_operation_keeps_every_shard_tree_a_tree_rooted_at_the_source_within_budgets(TopologyKind topology, int k, bool aware, bool uniform, int seed)
    {
        // Uniform: every peer with the default budget K + 1 (as the CLI's peers), which keeps the
        // seed's tessellation pattern until an edge is dropped or a peer demoted.
        var random = new Random(seed * 7919 + k);
        var planner = new Planner(new PlannerOptions(k, topology, k + 1, seed, aware));
        var budgets = uniform ? new[] { k + 1 } : topology switch
        {
            TopologyKind.Binary => new[] { 0, 1, 2, 2, 3 },
            TopologyKind.Tessellated => new[] { 0, 1, 2, 3, 3, 3 },
            _ => new[] { 0, 1, k, k + 1, k + 1, 2 * k },
        };

        var log = new List<string>();
        for (var step = 0; step < 1500; step++)
        {
            var peers = planner.Peers.ToList();
            var target = step % 300 < 150 ? 12 : 40; // small overlays, like the node tests, and mid-sized ones
            var roll = random.NextDouble();
            string what;
            IReadOnlyList<Reattachment> moves = [];
            if (peers.Count < 3 || (peers.Count < target && roll < 0.45))
            {
                var budget = budgets[random.Next(budgets.Length)];
                try
                {
                    var id = aware
                        ? planner.Join(budget, new NetworkCoordinate(random.NextDouble() * 100, random.NextDouble() * 100, random.NextDouble() * 5))
                        : planner.Join(budget);
                    moves = planner.LastJoinMoves;
                    what = $"join {id} budget {budget}";
                }
                catch (PlacementException)
                {
                    what = $"join refused (budget {budget})";
                }
            }
            else if (roll < 0.65)
            {
                var peer = peers[random.Next(peers.Count)];
                var shard = random.Next(k);
                what = $"drop edge {peer} <- {planner.ParentOf(peer, shard)} in shard {shard}";
                moves = planner.DropEdge(peer, shard);
            }
            else if (roll < 0.80)
            {
                var gone = new List<int> { peers[random.Next(peers.Count)] };
                if (random.Next(4) == 0)
                {
                    gone.Add(peers[random.Next(peers.Count)]);
                }

                what = $"leave {string.Join(",", gone)}";
                moves = planner.Leave(gone);
            }
            else if (roll < 0.90)
            {
                var root = peers[random.Next(peers.Count)];
                var branch = PlanAssert.Subtree(planner, root, random.Next(k)).Prepend(root).ToList();
                what = $"evict branch {string.Join(",", branch)}";
                moves = planner.Leave(branch);
            }
            else if (peers.Where(p => planner.Budget(p) == 0).ToList() is { Count: > 0 } viewers && random.Next(3) == 0)
            {
                // A demoted peer (or a viewer) given a budget: nobody moves.
                var peer = viewers[random.Next(viewers.Count)];
                var budget = random.Next(1, k + 2);
                var version = planner.Version;
                var parents = Enumerable.Range(0, k).Select(s => planner.ParentOf(peer, s)).ToList();
                what = $"re-promote {peer} budget {budget}";
                Assert.True(planner.Repromote(peer, budget));
                Assert.Equal(budget, planner.Budget(peer));
                Assert.Equal(parents, Enumerable.Range(0, k).Select(s => planner.ParentOf(peer, s)));
                Assert.True(planner.Version > version);
            }
            else
            {
                var peer = peers[random.Next(peers.Count)];
                what = $"demote {peer}";
                moves = planner.Demote(peer);
            }

            log.Add($"{step}: {what} -> {string.Join(" ", moves.Select(m => $"{m.Peer}/{m.Shard}->{m.NewParent}"))}");
            try
            {
                PlanAssert.MovesMatchPlan(planner, moves);
                PlanAssert.Consistent(planner);
                if (topology != TopologyKind.Tessellated)
                {
                    AssertDepthBound(planner);
                }
            }
            catch (Exception e)
            {
                throw new Xunit.Sdk.XunitException($"after step {what}: {e.Message}\n{string.Join("\n", log.TakeLast(12))}");
            }
        }
    }

    /// <summary>
    /// A dropped edge moves a subtree as a whole and may deepen it, so the bound here is looser than
    /// the planner's own (best + 1): every tree stays within its best depth plus the number of
    /// peers, i.e. finite and acyclic, and never deeper than the peer count.
    /// </summary>
    private static void AssertDepthBound(Planner planner)
    {
        for (var s = 0; s < planner.ShardCount; s++)
        {
            Assert.True(planner.MaxDepth(s) <= planner.PeerCount, $"shard {s} depth {planner.MaxDepth(s)} > {planner.PeerCount} peers");
        }
    }
}

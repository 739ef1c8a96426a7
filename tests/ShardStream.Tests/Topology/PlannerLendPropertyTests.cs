using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>
/// The general rule's lending (an orphan with no free slot in its tree takes a unit another shard
/// of an attached node leaves unused, <c>Planner.LendToStranded</c>) under random joins and leaves
/// with many pure viewers, the case that lends: after every step each node's capacities over the
/// shards sum to at most its budget, no tree holds more children under a node than its capacity
/// there, the trees are trees rooted at the source, and they stay within the planner's depth bound.
/// </summary>
public sealed class PlannerLendPropertyTests
{
    [Theory]
    [InlineData(false, 1)]
    [InlineData(false, 2)]
    [InlineData(true, 1)]
    [InlineData(true, 2)]
    public void Lending_never_takes_a_node_over_its_budget_nor_a_tree_over_its_depth_bound(bool aware, int seed)
    {
        var random = new Random(seed);
        var budgets = new[] { 0, 0, 0, 1, 2, 3, 3, 4 };
        var lends = 0;
        for (var run = 0; run < 40; run++)
        {
            var planner = new Planner(new PlannerOptions(2, TopologyKind.Tessellated, 3, run, aware));
            var log = new List<string>();
            var patternEnded = false; // a joiner with budget < 3 ends the tessellated pattern: the general rule from then
            for (var step = 0; step < 300; step++)
            {
                var peers = planner.Peers.ToList();
                var caps = Caps(planner);
                string what;
                IReadOnlyList<Reattachment> moves = [];
                if (peers.Count < 3 || random.NextDouble() < 0.55)
                {
                    var budget = budgets[random.Next(budgets.Length)];
                    try
                    {
                        var id = aware
                            ? planner.Join(budget, new NetworkCoordinate(random.NextDouble() * 200, random.NextDouble() * 200, random.NextDouble() * 5))
                            : planner.Join(budget);
                        moves = planner.LastJoinMoves;
                        patternEnded |= budget < 3;
                        what = $"join {id} budget {budget}";
                    }
                    catch (PlacementException)
                    {
                        what = $"join refused (budget {budget})";
                    }
                }
                else
                {
                    var gone = new List<int> { peers[random.Next(peers.Count)] };
                    if (random.Next(3) == 0)
                    {
                        gone.Add(peers[random.Next(peers.Count)]);
                    }

                    what = $"leave {string.Join(",", gone)}";
                    moves = planner.Leave(gone);
                }

                // A lend: at a leave under the general rule, a live node whose capacity in a shard went up.
                foreach (var (node, before) in patternEnded && what.StartsWith("leave", StringComparison.Ordinal) ? caps : [])
                {
                    if (planner.Contains(node) || node == Planner.Source)
                    {
                        for (var s = 0; s < 2; s++)
                        {
                            if (planner.CapacityIn(node, s) > before[s])
                            {
                                lends++;
                            }
                        }
                    }
                }

                log.Add($"{step}: {what} -> {string.Join(" ", moves.Select(m => $"{m.Peer}/{m.Shard}->{m.NewParent}"))}");
                try
                {
                    PlanAssert.MovesMatchPlan(planner, moves);
                    PlanAssert.Consistent(planner);
                    foreach (var node in planner.Peers.Prepend(Planner.Source))
                    {
                        var sum = 0;
                        for (var s = 0; s < 2; s++)
                        {
                            var cap = planner.CapacityIn(node, s);
                            Assert.True(cap >= 0, $"node {node} has capacity {cap} in shard {s}");
                            Assert.True(planner.ChildrenOf(node, s).Count() <= cap, $"node {node} has {planner.ChildrenOf(node, s).Count()} children in shard {s}, capacity {cap}");
                            sum += cap;
                        }

                        Assert.True(sum <= planner.Budget(node), $"node {node}: capacities {sum} > budget {planner.Budget(node)}");
                    }

                    PlanAssert.NearTessellationOrBest(planner, what);
                }
                catch (Exception e)
                {
                    throw new Xunit.Sdk.XunitException($"run {run}, after step {what}: {e.Message}\n{string.Join("\n", log.TakeLast(12))}");
                }
            }
        }

        Assert.True(lends > 0, "no step lent a unit: the test does not exercise the rule");
    }

    private static List<(int Node, int[] Caps)> Caps(Planner planner) =>
        [.. planner.Peers.Prepend(Planner.Source).Select(n => (n, new[] { planner.CapacityIn(n, 0), planner.CapacityIn(n, 1) }))];
}

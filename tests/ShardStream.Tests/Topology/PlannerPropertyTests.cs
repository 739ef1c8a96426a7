using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>Thousands of seeded random joins and leaves; the invariants are checked after every step.</summary>
public sealed class PlannerPropertyTests
{
    public static TheoryData<TopologyKind, int, int> Policies => new()
    {
        { TopologyKind.Binary, 1, 1 },
        { TopologyKind.Binary, 1, 2 },
        { TopologyKind.Binary, 1, 3 },
        { TopologyKind.Tessellated, 2, 4 },
        { TopologyKind.Tessellated, 2, 5 },
        { TopologyKind.Tessellated, 2, 6 },
        { TopologyKind.Striped, 1, 7 },
        { TopologyKind.Striped, 2, 8 },
        { TopologyKind.Striped, 3, 9 },
        { TopologyKind.Striped, 4, 10 },
        { TopologyKind.Striped, 8, 11 },
        { TopologyKind.Striped, 8, 12 },
        { TopologyKind.Striped, 16, 13 },
    };

    [Theory]
    [MemberData(nameof(Policies))]
    public void Random_joins_and_leaves_keep_every_peer_served_within_budget_without_cycles(TopologyKind topology, int k, int seed)
    {
        var random = new Random(seed);
        var planner = new Planner(PlannerOptions.Default(k, topology) with { Seed = seed });
        var budgets = BudgetMix(topology, k);
        for (var step = 0; step < 4000; step++)
        {
            var roll = random.NextDouble();
            if (planner.PeerCount < 8 || roll < 0.62)
            {
                try
                {
                    planner.Join(budgets[random.Next(budgets.Length)]);
                }
                catch (PlacementException)
                {
                    // Only viewers can run out of room: capacity grows with every uploader.
                }

                NearPolicyBound(planner, $"step {step} (join)");
            }
            else
            {
                var gone = PickLeavers(planner, random, roll);
                var moves = planner.Leave(gone);
                AssertMovesApplied(planner, moves, gone);
                NearPolicyBound(planner, $"step {step} (leave of {gone.Count})");
            }

            PlanAssert.Consistent(planner);
        }
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    public void Tessellation_keeps_its_pattern_through_churn_of_full_budget_peers(int seed)
    {
        var random = new Random(seed);
        var planner = new Planner(PlannerOptions.Default(2, TopologyKind.Tessellated) with { Seed = seed });
        for (var step = 0; step < 2500; step++)
        {
            var roll = random.NextDouble();
            if (planner.PeerCount < 8 || roll < 0.6)
            {
                planner.Join(3);
                Assert.Empty(planner.LastJoinMoves);
            }
            else
            {
                var gone = PickLeavers(planner, random, roll);
                var moves = planner.Leave(gone);
                AssertMovesApplied(planner, moves, gone);
                if (gone.Count == 1)
                {
                    // One takeover: the spare's two parents and at most three adopted edges (plus a rare lift).
                    Assert.True(moves.Count <= 10, $"step {step}: {moves.Count} moves for one leave");
                }
            }

            Assert.True(planner.IsExactPattern);
            PlanAssert.NearExactTessellation(planner, $"step {step}");
            Assert.All(planner.Peers.Append(Planner.Source), node => Assert.True(planner.UsedUnits(node) <= 3));
            PlanAssert.Consistent(planner);
        }
    }

    [Theory]
    [InlineData(TopologyKind.Binary, 1)]
    [InlineData(TopologyKind.Tessellated, 2)]
    [InlineData(TopologyKind.Striped, 4)]
    public void Same_seed_and_calls_give_the_same_plan(TopologyKind topology, int k)
    {
        static int[] Run(TopologyKind topology, int k)
        {
            var random = new Random(42);
            var planner = new Planner(PlannerOptions.Default(k, topology) with { Seed = 7 });
            for (var i = 0; i < 400; i++)
            {
                try
                {
                    planner.Join(random.Next(4));
                }
                catch (PlacementException)
                {
                    // Viewers may find no room; the sequence stays deterministic.
                }

                if (i % 10 == 9)
                {
                    planner.Leave([planner.Peers.ElementAt(random.Next(planner.PeerCount))]);
                }
            }

            return planner.Peers.SelectMany(p => Enumerable.Range(0, k).Select(s => planner.ParentOf(p, s))).ToArray();
        }

        Assert.Equal(Run(topology, k), Run(topology, k));
    }

    private static void NearPolicyBound(Planner planner, string when)
    {
        if (planner.Options.Topology != TopologyKind.Tessellated)
        {
            PlanAssert.NearBestDepth(planner, when);
        }
        else if (planner.IsExactPattern)
        {
            PlanAssert.NearExactTessellation(planner, when);
        }
        else
        {
            PlanAssert.NearTessellationOrBest(planner, when);
        }
    }

    private static int[] BudgetMix(TopologyKind topology, int k) => topology switch
    {
        TopologyKind.Binary => [0, 1, 2, 2, 2, 3, 4],
        TopologyKind.Tessellated => [0, 1, 2, 3, 3, 3, 3, 4],
        _ => [0, k, k + 1, k + 1, k + 2, 2 * k, 1],
    };

    private static List<int> PickLeavers(Planner planner, Random random, double roll)
    {
        var peers = planner.Peers.ToArray();
        if (roll < 0.80)
        {
            return [peers[random.Next(peers.Length)]];
        }

        if (roll < 0.92)
        {
            return Enumerable.Range(0, random.Next(2, 8)).Select(_ => peers[random.Next(peers.Length)]).Distinct().ToList();
        }

        // A whole branch: a peer and everything below it in one shard, sometimes plus a stranger.
        var root = peers[random.Next(peers.Length)];
        var shard = random.Next(planner.ShardCount);
        var branch = new List<int>();
        var stack = new Stack<int>([root]);
        while (stack.Count > 0)
        {
            var node = stack.Pop();
            branch.Add(node);
            foreach (var child in planner.ChildrenOf(node, shard))
            {
                stack.Push(child);
            }
        }

        if (roll > 0.97)
        {
            branch.Add(peers[random.Next(peers.Length)]);
        }

        return branch.Distinct().ToList();
    }

    private static void AssertMovesApplied(Planner planner, IReadOnlyList<Reattachment> moves, List<int> gone)
    {
        foreach (var move in moves)
        {
            Assert.DoesNotContain(move.Peer, gone);
            if (move.NewParent == Planner.None)
            {
                Assert.False(planner.Contains(move.Peer));
            }
            else if (planner.Contains(move.Peer))
            {
                Assert.Equal(move.NewParent, planner.ParentOf(move.Peer, move.Shard));
            }
        }

        Assert.Equal(moves.Count, moves.Select(m => (m.Peer, m.Shard)).Distinct().Count());
    }
}

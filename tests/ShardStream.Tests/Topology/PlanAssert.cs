using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>Checks a plan against the invariants, computed from the public API only.</summary>
internal static class PlanAssert
{
    /// <summary>
    /// Every live peer has exactly one live parent per shard, depths follow parents, no cycle,
    /// nobody over budget, children lists agree with parents, striped peers forward only their home
    /// shard (fostering aside).
    /// </summary>
    public static void Consistent(Planner planner)
    {
        var k = planner.ShardCount;
        var peers = planner.Peers.ToList();
        Assert.Equal(planner.PeerCount, peers.Count);
        var nodes = new List<int>(peers.Count + 1) { Planner.Source };
        nodes.AddRange(peers);
        var live = new HashSet<int>(nodes);

        for (var s = 0; s < k; s++)
        {
            Assert.Equal(Planner.None, planner.ParentOf(Planner.Source, s));
            Assert.Equal(0, planner.DepthOf(Planner.Source, s));
        }

        var fostered = 0;
        foreach (var node in nodes)
        {
            var edges = 0;
            for (var s = 0; s < k; s++)
            {
                foreach (var child in planner.ChildrenOf(node, s))
                {
                    Assert.Contains(child, live);
                    Assert.Equal(node, planner.ParentOf(child, s));
                    edges++;
                    if (planner.Options.Topology == TopologyKind.Striped && node != Planner.Source && s != planner.HomeShard(node))
                    {
                        fostered++;
                    }
                }
            }

            Assert.Equal(edges, planner.UsedUnits(node));
            Assert.True(edges <= planner.Budget(node), $"node {node} sends {edges} > budget {planner.Budget(node)}");
        }

        // Striped peers forward only their home shard, but for fostering (bootstrap; see Planner.Striped).
        Assert.Equal(planner.Options.Topology == TopologyKind.Striped ? planner.FosteredEdges : 0, fostered);

        for (var s = 0; s < k; s++)
        {
            var deepest = 0;
            foreach (var peer in peers)
            {
                var parent = planner.ParentOf(peer, s);
                Assert.True(live.Contains(parent), $"peer {peer} has no live parent in shard {s} ({parent})");
                Assert.Equal(planner.DepthOf(parent, s) + 1, planner.DepthOf(peer, s));
                deepest = Math.Max(deepest, planner.DepthOf(peer, s));

                var node = peer;
                var steps = 0;
                while (node != Planner.Source)
                {
                    node = planner.ParentOf(node, s);
                    Assert.True(++steps <= planner.PeerCount, $"cycle through peer {peer} in shard {s}");
                }
            }

            Assert.Equal(deepest, planner.MaxDepth(s));
        }
    }

    /// <summary>
    /// The least possible depth of a tree holding <paramref name="peers"/> nodes below a source with
    /// <paramref name="sourceSlots"/> slots, where a node can hold as many children as its capacity:
    /// fill level by level, the largest capacities first. <see cref="int.MaxValue"/> if impossible.
    /// </summary>
    public static int BestDepth(int sourceSlots, IEnumerable<int> capacities)
    {
        var sorted = capacities.OrderByDescending(c => c).ToArray();
        long slots = sourceSlots;
        var placed = 0;
        var depth = 0;
        while (placed < sorted.Length)
        {
            if (slots == 0)
            {
                return int.MaxValue;
            }

            depth++;
            var take = (int)Math.Min(slots, sorted.Length - placed);
            slots = 0;
            for (var j = placed; j < placed + take; j++)
            {
                slots += sorted[j];
            }

            placed += take;
        }

        return depth;
    }

    /// <summary>
    /// The best depth of each shard tree for the live peers' budgets: binary, the budgets
    /// themselves; striped, the budgets of the peers whose home is that shard (everyone else is a
    /// leaf there), below the source's share of that shard; tessellated, the part of each budget the
    /// planner gives that shard.
    /// </summary>
    public static int BestDepth(Planner planner, int shard)
    {
        var k = planner.ShardCount;
        var budget = planner.Options.SourceBudget;
        var sourceShare = planner.Options.Topology == TopologyKind.Tessellated
            ? planner.CapacityIn(Planner.Source, shard) // the source may lend a unit to the other tree
            : (budget / k) + (shard < budget % k ? 1 : 0);
        var caps = planner.Peers.Select(p => planner.Options.Topology switch
        {
            TopologyKind.Striped => planner.HomeShard(p) == shard ? planner.Budget(p) : 0,
            TopologyKind.Tessellated => planner.CapacityIn(p, shard), // the planner's split of each budget
            _ => planner.Budget(p),
        });
        return BestDepth(sourceShare, caps);
    }

    /// <summary>Every shard tree is within one hop of the best depth its budgets allow.</summary>
    public static void NearBestDepth(Planner planner, string when)
    {
        if (planner.Options.Topology == TopologyKind.Striped && planner.FosteredEdges > 0)
        {
            return; // the home budgets alone cannot hold the peers yet: no bound to hold to
        }

        for (var s = 0; s < planner.ShardCount; s++)
        {
            var best = BestDepth(planner, s);
            var actual = planner.MaxDepth(s);
            Assert.True(actual <= (long)best + 1, $"{when}: shard {s} max depth {actual} > best {best} + 1 with {planner.PeerCount} peers");
        }
    }

    /// <summary>Depth of an exact tessellation of <paramref name="peers"/> peers: layers 1, 2, 3, 3, 6, 9, 9, 18, 27...</summary>
    public static int TessellationDepth(int peers)
    {
        var layers = new List<long> { 1, 2, 3 };
        long total = 0;
        var depth = 0;
        while (total < peers)
        {
            if (depth >= layers.Count)
            {
                layers.Add(layers[depth - 3] * 3);
            }

            total += layers[depth++];
        }

        return depth;
    }

    /// <summary>The tessellation is no more than one level deeper than an exact one of its peers.</summary>
    public static void NearExactTessellation(Planner planner, string when)
    {
        var deepest = Math.Max(planner.MaxDepth(0), planner.MaxDepth(1));
        var exact = TessellationDepth(planner.PeerCount);
        Assert.True(deepest <= exact + 1, $"{when}: depth {deepest} > exact tessellation {exact} + 1 with {planner.PeerCount} peers");
    }

    /// <summary>
    /// Tessellated after its pattern ended: every tree within one level of the best split of the
    /// budgets or of an exact tessellation, whichever is deeper (the planner does not sort a
    /// tessellation into the much shallower best split).
    /// </summary>
    public static void NearTessellationOrBest(Planner planner, string when)
    {
        var exact = TessellationDepth(planner.PeerCount);
        for (var s = 0; s < planner.ShardCount; s++)
        {
            var bound = (long)Math.Max(BestDepth(planner, s), exact) + 1;
            Assert.True(planner.MaxDepth(s) <= bound, $"{when}: shard {s} max depth {planner.MaxDepth(s)} > {bound} with {planner.PeerCount} peers");
        }
    }

    /// <summary>A node's depth in the tessellation: the deeper of its shard depths.</summary>
    public static int NodeDepth(Planner planner, int node) =>
        Enumerable.Range(0, planner.ShardCount).Max(s => planner.DepthOf(node, s));

    /// <summary>Every move is one (peer, shard), and says what the plan now holds: the new parent, or the peer gone.</summary>
    public static void MovesMatchPlan(Planner planner, IReadOnlyList<Reattachment> moves)
    {
        Assert.Equal(moves.Count, moves.Select(m => (m.Peer, m.Shard)).Distinct().Count());
        foreach (var m in moves)
        {
            if (m.NewParent == Planner.None)
            {
                Assert.False(planner.Contains(m.Peer));
            }
            else
            {
                Assert.Equal(m.NewParent, planner.ParentOf(m.Peer, m.Shard));
            }
        }
    }

    /// <summary>Every node below <paramref name="root"/> in <paramref name="shard"/>.</summary>
    public static List<int> Subtree(Planner planner, int root, int shard)
    {
        var result = new List<int>();
        var stack = new Stack<int>(planner.ChildrenOf(root, shard));
        while (stack.Count > 0)
        {
            var node = stack.Pop();
            result.Add(node);
            foreach (var c in planner.ChildrenOf(node, shard))
            {
                stack.Push(c);
            }
        }

        return result;
    }

    /// <summary>Every live peer's parent in every shard.</summary>
    public static Dictionary<(int Peer, int Shard), int> Parents(Planner planner) =>
        planner.Peers.SelectMany(p => Enumerable.Range(0, planner.ShardCount).Select(s => (p, s))).ToDictionary(k => k, k => planner.ParentOf(k.p, k.s));
}

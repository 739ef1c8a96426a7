using System.Diagnostics;
using ShardStream.Topology;

namespace ShardStream.Simulation;

/// <summary>
/// Fails whole branches at once: the subtree(s) of one shard tree that together hold about a given
/// fraction of the peers (the seed's "large branch of the network fails"), then lets the planner
/// repair and measures the repair.
/// </summary>
internal static class BranchFailure
{
    public static BranchFailureReport Run(Planner planner, double fraction, Random random)
    {
        var shard = random.Next(planner.ShardCount);
        var target = (int)Math.Round(planner.PeerCount * fraction);
        var roots = PickBranches(planner, shard, target);
        var failed = new List<int>();
        foreach (var root in roots)
        {
            CollectSubtree(planner, root, shard, failed);
        }

        var depthBefore = MaxDepth(planner);
        var clock = Stopwatch.StartNew();
        var moves = planner.Leave(failed);
        clock.Stop();

        var evicted = moves.Where(m => m.NewParent == Planner.None).Select(m => m.Peer).Distinct().Count();
        var after = Simulation.Depths(planner);
        return new BranchFailureReport(
            failed.Count,
            roots.Count,
            shard,
            moves.Count(m => m.NewParent != Planner.None),
            evicted,
            depthBefore,
            after.Max(s => s.MaxDepth),
            Simulation.PolicyBest(planner, after),
            clock.Elapsed,
            after);
    }

    /// <summary>
    /// Greedily picks disjoint subtrees whose sizes add up to about <paramref name="target"/>: each
    /// time the one closest to what is still missing, never inside or above one already picked.
    /// </summary>
    private static List<int> PickBranches(Planner planner, int shard, int target)
    {
        // Parents before children (breadth-first), so sizes accumulate in one backward pass.
        var order = new List<int>(planner.PeerCount + 1) { Planner.Source };
        for (var i = 0; i < order.Count; i++)
        {
            order.AddRange(planner.ChildrenOf(order[i], shard));
        }

        var size = new Dictionary<int, int>(order.Count);
        for (var i = order.Count - 1; i >= 1; i--)
        {
            var node = order[i];
            size[node] = size.GetValueOrDefault(node) + 1;
            var parent = planner.ParentOf(node, shard);
            size[parent] = size.GetValueOrDefault(parent) + size[node];
        }

        var blocked = new HashSet<int> { Planner.Source };
        var roots = new List<int>();
        var missing = target;
        while (missing > 0 && roots.Count < 16)
        {
            var best = Planner.None;
            foreach (var node in order)
            {
                if (!blocked.Contains(node) && size[node] <= missing * 1.1
                    && (best == Planner.None || Math.Abs(size[node] - missing) < Math.Abs(size[best] - missing)))
                {
                    best = node;
                }
            }

            if (best == Planner.None)
            {
                break;
            }

            roots.Add(best);
            missing -= size[best];
            for (var up = best; up != Planner.None; up = planner.ParentOf(up, shard))
            {
                blocked.Add(up);
            }

            var below = new List<int>();
            CollectSubtree(planner, best, shard, below);
            blocked.UnionWith(below);
            if (missing < target * 0.05)
            {
                break;
            }
        }

        return roots;
    }

    private static void CollectSubtree(Planner planner, int root, int shard, List<int> into)
    {
        var start = into.Count;
        into.Add(root);
        for (var i = start; i < into.Count; i++)
        {
            into.AddRange(planner.ChildrenOf(into[i], shard));
        }
    }

    private static int MaxDepth(Planner planner) =>
        Enumerable.Range(0, planner.ShardCount).Max(planner.MaxDepth);
}

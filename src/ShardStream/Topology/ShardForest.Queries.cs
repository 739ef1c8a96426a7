namespace ShardStream.Topology;

/// <summary>The questions placement and repair ask, answered from the depth indexes.</summary>
internal sealed partial class ShardForest
{
    /// <summary>
    /// The shallowest live node of <paramref name="shard"/> with a free slot (first come, first
    /// served within a depth, which fills a level breadth-first), or <see cref="Planner.None"/>.
    /// With <paramref name="requireAttached"/>, nodes inside subtrees that are cut off from the
    /// source (mid-repair) are skipped but kept for later.
    /// </summary>
    public int FindOpen(int shard, bool requireAttached)
    {
        var index = _open[shard];
        for (var d = index.Lowest; d < index.Limit; d++)
        {
            var queue = index.At(d);
            if (queue is null)
            {
                continue;
            }

            while (!queue.IsEmpty && !IsOpenEntryValid(queue.Front, shard, d))
            {
                ClearOpenMark(queue.Front, shard, d);
                queue.PopFront();
            }

            if (queue.IsEmpty)
            {
                if (d == index.Lowest)
                {
                    index.Lowest = d + 1;
                }

                continue;
            }

            if (!requireAttached)
            {
                return queue.Front;
            }

            for (var j = 0; j < queue.Count; j++)
            {
                var node = queue[j];
                if (IsOpenEntryValid(node, shard, d) && IsAttached(node, shard))
                {
                    return node;
                }
            }
        }

        return None;
    }

    /// <summary>The shallowest live node of <paramref name="shard"/> with a free slot that <paramref name="accept"/> accepts.</summary>
    public int FindOpenWhere(int shard, Func<int, bool> accept) => FindOpenWhere(shard, int.MaxValue, accept);

    /// <summary>The shallowest live node of <paramref name="shard"/> at most at <paramref name="maxDepth"/> with a free slot that <paramref name="accept"/> accepts.</summary>
    public int FindOpenWhere(int shard, int maxDepth, Func<int, bool> accept)
    {
        var index = _open[shard];
        for (var d = index.Lowest; d < index.Limit && d <= maxDepth; d++)
        {
            var queue = index.At(d);
            if (queue is null)
            {
                continue;
            }

            for (var j = 0; j < queue.Count; j++)
            {
                var node = queue[j];
                if (IsOpenEntryValid(node, shard, d) && accept(node))
                {
                    return node;
                }
            }
        }

        return None;
    }

    /// <summary>
    /// The node to push down for a joiner of capacity <paramref name="cap"/>: among live peers
    /// shallower than <paramref name="depthLimit"/> whose capacity is smaller, one of the
    /// shallowest, and of those the smallest capacity. <see cref="Planner.None"/> if none.
    /// </summary>
    public int FindWeaker(int shard, int cap, int depthLimit)
    {
        var best = None;
        var bestDepth = depthLimit;
        // Capacities of 16 and more share one class: a joiner never displaces within it.
        var classes = ClassOf(cap);

        for (var cls = 0; cls < classes; cls++)
        {
            var index = _byClass[(shard * ClassCount) + cls];
            var limit = Math.Min(bestDepth, index.Limit);
            for (var d = index.Lowest; d < limit; d++)
            {
                var queue = index.At(d);
                if (queue is null)
                {
                    continue;
                }

                while (!queue.IsEmpty && !IsClassEntryValid(queue.Front, shard, d, cls, leafOnly: false))
                {
                    ClearClassMark(queue.Front, shard, d, cls);
                    queue.PopFront();
                }

                if (queue.IsEmpty)
                {
                    if (d == index.Lowest)
                    {
                        index.Lowest = d + 1;
                    }

                    continue;
                }

                // Strictly shallower than the best so far (smaller classes win ties).
                best = queue.Front;
                bestDepth = d;
                break;
            }
        }

        return best;
    }

    /// <summary>
    /// The deepest live leaf of <paramref name="shard"/> at depth >= <paramref name="minDepth"/>
    /// with capacity >= <paramref name="minCap"/> (the largest capacity at that depth), or
    /// <see cref="Planner.None"/>. Used to promote a leaf into a dead node's place.
    /// </summary>
    public int FindDeepLeaf(int shard, int minCap, int minDepth)
    {
        var minClass = ClassOf(Math.Max(minCap, 0));
        for (var d = MaxDepth(shard); d >= Math.Max(minDepth, 1); d--)
        {
            for (var cls = ClassCount - 1; cls >= minClass; cls--)
            {
                var index = _leaves[(shard * ClassCount) + cls];
                var queue = index.At(d);
                if (queue is null)
                {
                    continue;
                }

                while (!queue.IsEmpty && !IsClassEntryValid(queue.Back, shard, d, cls, leafOnly: true))
                {
                    ClearLeafMark(queue.Back, shard, d, cls);
                    queue.PopBack();
                }

                if (queue.IsEmpty)
                {
                    continue;
                }

                if (S((queue.Back * _k) + shard).Cap >= minCap)
                {
                    return queue.Back;
                }

                // Only the pooled 16+ class can hold a leaf too small for the request.
                for (var j = queue.Count - 2; j >= 0; j--)
                {
                    var node = queue[j];
                    if (IsClassEntryValid(node, shard, d, cls, leafOnly: true) && S((node * _k) + shard).Cap >= minCap)
                    {
                        return node;
                    }
                }
            }
        }

        return None;
    }

    /// <summary>The deepest live peer of capacity class <paramref name="cls"/> in <paramref name="shard"/>, or <see cref="Planner.None"/>.</summary>
    public int FindDeepNode(int shard, int cls)
    {
        var index = _byClass[(shard * ClassCount) + cls];
        for (var d = Math.Min(MaxDepth(shard), index.Limit - 1); d >= 1; d--)
        {
            var queue = index.At(d);
            if (queue is null)
            {
                continue;
            }

            while (!queue.IsEmpty && !IsClassEntryValid(queue.Back, shard, d, cls, leafOnly: false))
            {
                ClearClassMark(queue.Back, shard, d, cls);
                queue.PopBack();
            }

            if (!queue.IsEmpty)
            {
                return queue.Back;
            }
        }

        return None;
    }

    /// <summary>
    /// A live peer of <paramref name="shard"/> at exactly <paramref name="depth"/> (if that is at least
    /// <paramref name="minDepth"/>) with capacity >= <paramref name="minCap"/>, largest class first;
    /// or <see cref="Planner.None"/>.
    /// </summary>
    public int FindDeepNode(int shard, int minCap, int depth, int minDepth)
    {
        if (depth < Math.Max(minDepth, 1))
        {
            return None;
        }

        for (var cls = ClassCount - 1; cls >= ClassOf(minCap); cls--)
        {
            var queue = _byClass[(shard * ClassCount) + cls].At(depth);
            if (queue is null)
            {
                continue;
            }

            while (!queue.IsEmpty && !IsClassEntryValid(queue.Back, shard, depth, cls, leafOnly: false))
            {
                ClearClassMark(queue.Back, shard, depth, cls);
                queue.PopBack();
            }

            for (var j = queue.Count - 1; j >= 0; j--)
            {
                var node = queue[j];
                if (IsClassEntryValid(node, shard, depth, cls, leafOnly: false) && S((node * _k) + shard).Cap >= minCap)
                {
                    return node;
                }
            }
        }

        return None;
    }

    /// <summary>Levels below <paramref name="root"/> in its subtree (0 for a leaf), from stored depths.</summary>
    public int SubtreeHeight(int root, int shard)
    {
        var top = S((root * _k) + shard).Depth;
        var deepest = top;
        var node = S((root * _k) + shard).FirstChild;
        while (node != None)
        {
            var i = (node * _k) + shard;
            deepest = Math.Max(deepest, S(i).Depth);
            if (S(i).FirstChild != None)
            {
                node = S(i).FirstChild;
                continue;
            }

            while (node != root && S((node * _k) + shard).NextSibling == None)
            {
                node = S((node * _k) + shard).Parent;
            }

            node = node == root ? None : S((node * _k) + shard).NextSibling;
        }

        return deepest - top;
    }

    /// <summary>True when following parents from <paramref name="node"/> reaches the source.</summary>
    public bool IsAttached(int node, int shard)
    {
        var steps = 0;
        while (node != Source)
        {
            if (!_alive[node] || ++steps > _slots)
            {
                return false;
            }

            node = S((node * _k) + shard).Parent;
            if (node == None)
            {
                return false;
            }
        }

        return true;
    }

    public bool IsOpenEntryValid(int node, int shard, int depth)
    {
        var i = (node * _k) + shard;
        return _alive[node] && S(i).Depth == depth && S(i).ChildCount < S(i).Cap;
    }

    /// <summary>
    /// Up to <paramref name="max"/> live peers at exactly <paramref name="depth"/> of <paramref name="shard"/>
    /// with a capacity class below that of <paramref name="cap"/> (the nodes a joiner of that
    /// capacity may push down), added to <paramref name="result"/>.
    /// </summary>
    public void CollectWeakerAt(int shard, int cap, int depth, int max, List<int> result)
    {
        var classes = ClassOf(cap);
        var examined = 0;
        for (var cls = 0; cls < classes && result.Count < max; cls++)
        {
            var queue = _byClass[(shard * ClassCount) + cls].At(depth);
            if (queue is null)
            {
                continue;
            }

            // Stale entries are skipped, not removed; the scan stops after a few times max entries.
            for (var j = 0; j < queue.Count && result.Count < max && examined < 4 * max; j++, examined++)
            {
                var node = queue[j];
                if (IsClassEntryValid(node, shard, depth, cls, leafOnly: false) && S((node * _k) + shard).Cap < cap)
                {
                    result.Add(node);
                }
            }
        }
    }

    private bool IsClassEntryValid(int node, int shard, int depth, int cls, bool leafOnly)
    {
        var i = (node * _k) + shard;
        return _alive[node] && S(i).Depth == depth && ClassOf(S(i).Cap) == cls && (!leafOnly || S(i).ChildCount == 0);
    }

    private void ClearOpenMark(int node, int shard, int depth)
    {
        var i = (node * _k) + shard;
        if (S(i).OpenMark == depth + 1)
        {
            S(i).OpenMark = 0;
        }
    }

    private void ClearClassMark(int node, int shard, int depth, int cls)
    {
        var i = (node * _k) + shard;
        if (S(i).ClassMark == ((depth + 1) * ClassCount) + cls)
        {
            S(i).ClassMark = 0;
        }
    }

    private void ClearLeafMark(int node, int shard, int depth, int cls)
    {
        var i = (node * _k) + shard;
        if (S(i).LeafMark == ((depth + 1) * ClassCount) + cls)
        {
            S(i).LeafMark = 0;
        }
    }
}

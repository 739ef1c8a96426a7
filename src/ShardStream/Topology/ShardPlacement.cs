namespace ShardStream.Topology;

/// <summary>
/// The general placement rule, one shard tree at a time, over any mix of capacities:
/// <list type="bullet">
/// <item><b>Join</b>: a joiner of capacity c takes the place of the shallowest node of smaller
/// capacity that is shallower than the shallowest free slot (that node and its children move under
/// the joiner: the children keep their depth, the pushed-down node goes one level down with no
/// children). Otherwise it takes the shallowest free slot, breadth-first. So capacity rises to the
/// top and pure viewers (capacity 0) sink to the bottom.</item>
/// <item><b>Repair</b>: top-down, every dead node that still has live descendants is replaced by
/// the deepest live leaf that can take all its children (or, failing that and if subtrees hang
/// below, by a strong node from the level above the bottom, whose leaves go to free slots), so
/// orphans keep their subtrees and their depth. Orphans nobody takes move as whole subtrees,
/// tallest first, to the shallowest free slots.</item>
/// <item><b>Improve</b>, only when a tree is more than one level deeper than the best its
/// capacities allow: deepest leaves move up into free slots two or more levels above the bottom;
/// if needed, nodes exchange places until capacity never increases with depth, and again.
/// Sorted and compact (every node at depth &lt;= max - 3 full), a tree is within one level of
/// the best.</item>
/// </list>
/// </summary>
internal sealed class ShardPlacement(ShardForest forest)
{
    private const int None = Planner.None;

    private readonly ShardForest _forest = forest;
    // Depth-first, so that a replacement still waiting for the replacements of dead children below
    // it is never mistaken for a free leaf: every pending hole hangs at or above the current one.
    private readonly Stack<(int Hole, int Parent)> _holes = new();
    private readonly List<int> _orphans = [];
    private readonly List<int> _children = [];
    private readonly List<int> _released = [];
    private readonly List<(int NegHeight, int NegCap, int Node)> _ranked = [];
    private int[] _fillStamp = new int[1024];
    private int _epoch;

    /// <summary>Latency-aware placement (<see cref="PlannerOptions.LatencyAware"/>); null for the latency-blind rule.</summary>
    public LatencyPlacement? Latency { get; set; }

    /// <summary>True when a joiner of capacity <paramref name="cap"/> has somewhere to go in <paramref name="shard"/>.</summary>
    public bool CanPlace(int shard, int cap) =>
        _forest.FindOpen(shard, requireAttached: false) != None
        || (cap > 0 && _forest.FindWeaker(shard, cap, int.MaxValue) != None);

    /// <summary>
    /// Places <paramref name="node"/> (no parent, no children in <paramref name="shard"/>). With
    /// latency-aware placement active, the same kind of place is chosen (the same weaker node's
    /// level, or a free slot of the same level for a node with capacity), but among several, by
    /// estimated delay from the source; a leaf may take any free slot whose child depth stays
    /// within <paramref name="depthBound"/>.
    /// </summary>
    public void Place(int node, int shard, List<Reattachment> moves, int depthBound = int.MaxValue)
    {
        var open = _forest.FindOpen(shard, requireAttached: false);
        var freeDepth = open == None ? int.MaxValue : _forest.Depth(open, shard) + 1;
        var cap = _forest.Cap(node, shard);
        var latency = Latency is { Active: true } ? Latency : null;
        if (cap > 0)
        {
            var weaker = _forest.FindWeaker(shard, cap, freeDepth);
            if (weaker != None)
            {
                weaker = latency?.ChooseWeaker(shard, cap, weaker) ?? weaker;
                TakePlaceOf(node, weaker, shard, moves);
                if (latency is not null && _forest.Cap(weaker, shard) == 0 && depthBound != int.MaxValue)
                {
                    // The pushed-down leaf goes where it is best placed itself (within the depth
                    // bound), not necessarily under the joiner: a joiner from far away would
                    // otherwise carry a near leaf's path across an ocean.
                    var blindDepth = _forest.Depth(node, shard);
                    _forest.Detach(weaker, shard);
                    var to = latency.ChooseOpenFor(weaker, shard, Math.Max(blindDepth, depthBound - 1), node);
                    _forest.Attach(weaker, to, shard);
                    moves.Add(new Reattachment(weaker, shard, to));
                }

                return;
            }
        }

        if (open == None)
        {
            throw new PlacementException($"No node has a free slot in shard {shard}.");
        }

        if (latency is not null)
        {
            var blindDepth = _forest.Depth(open, shard);
            var maxParentDepth = cap > 0 || depthBound == int.MaxValue ? blindDepth : Math.Max(blindDepth, depthBound - 1);
            open = latency.ChooseOpen(shard, maxParentDepth, open);
        }

        _forest.Attach(node, open, shard);
    }

    /// <summary><paramref name="node"/> takes <paramref name="weaker"/>'s slot and children; <paramref name="weaker"/> becomes its child.</summary>
    private void TakePlaceOf(int node, int weaker, int shard, List<Reattachment> moves)
    {
        var parent = _forest.Parent(weaker, shard);
        _forest.Detach(weaker, shard);
        _forest.Attach(node, parent, shard);
        CollectChildren(weaker, shard);
        foreach (var child in _children)
        {
            _forest.Detach(child, shard);
            _forest.Attach(child, node, shard);
            moves.Add(new Reattachment(child, shard, node));
        }

        _forest.Attach(weaker, node, shard);
        moves.Add(new Reattachment(weaker, shard, node));
    }

    /// <summary>
    /// Repairs <paramref name="shard"/> after <paramref name="dead"/> were killed (already not alive).
    /// Live peers that cannot be given a parent (no capacity left) are added to <paramref name="stranded"/>.
    /// </summary>
    /// <remarks>With latency-aware placement, an orphan takes, among the free slots near it where its
    /// subtree stays within <paramref name="depthBound"/>, the one with the lowest estimated delay
    /// from the source (the shallowest attached free slot when none is better).</remarks>
    public void Repair(int shard, IReadOnlyList<int> dead, List<Reattachment> moves, List<int> stranded, int depthBound = int.MaxValue)
    {
        var epoch = NextEpoch(dead);

        // A dead node needs a replacement only when some live node hangs below it.
        foreach (var x in dead)
        {
            for (var c = _forest.FirstChild(x, shard); c != None; c = _forest.NextSibling(c, shard))
            {
                if (!_forest.IsAlive(c))
                {
                    continue;
                }

                for (var y = x; y != None && !_forest.IsAlive(y) && _fillStamp[y] != epoch; y = _forest.Parent(y, shard))
                {
                    _fillStamp[y] = epoch;
                }

                break;
            }
        }

        foreach (var x in dead)
        {
            var parent = _forest.Parent(x, shard);
            if (parent == None || !_forest.IsAlive(parent))
            {
                continue;
            }

            if (_fillStamp[x] == epoch)
            {
                _holes.Push((x, parent));
            }
            else
            {
                _forest.Detach(x, shard);
            }
        }

        _orphans.Clear();
        while (_holes.Count > 0)
        {
            var (hole, parent) = _holes.Pop();
            FillHole(hole, parent, shard, epoch, moves);
        }

        // Tallest subtrees first, then the strongest: the shallowest free slots go where they
        // shorten the tree most and add the most capacity.
        _ranked.Clear();
        foreach (var orphan in _orphans)
        {
            _ranked.Add((-_forest.SubtreeHeight(orphan, shard), -_forest.Cap(orphan, shard), orphan));
        }

        _ranked.Sort();
        foreach (var (negHeight, _, orphan) in _ranked)
        {
            if (_forest.Parent(orphan, shard) != None)
            {
                continue; // promoted into some hole meanwhile
            }

            var open = _forest.FindOpen(shard, requireAttached: true);
            if (open == None)
            {
                stranded.Add(orphan);
                continue;
            }

            if (Latency is { } latency && depthBound != int.MaxValue)
            {
                latency.Begin(orphan, measured: null, exact: true);
                if (latency.Active)
                {
                    var blindDepth = _forest.Depth(open, shard);
                    open = latency.ChooseOpen(shard, Math.Max(blindDepth, depthBound - 1 + negHeight), open);
                }

                latency.End();
            }

            _forest.Attach(orphan, open, shard);
            moves.Add(new Reattachment(orphan, shard, open));
        }
    }

    private void FillHole(int hole, int parent, int shard, int epoch, List<Reattachment> moves)
    {
        var depth = _forest.Depth(hole, shard);
        _forest.Detach(hole, shard);
        CollectChildren(hole, shard);
        var needed = 0;
        var onlyLeaves = true;
        foreach (var child in _children)
        {
            if (_forest.IsAlive(child) || _fillStamp[child] == epoch)
            {
                needed++;
                onlyLeaves &= _forest.IsAlive(child) && _forest.ChildCount(child, shard) == 0;
            }
        }

        if (needed == 0)
        {
            return; // what hung below was promoted elsewhere meanwhile
        }

        // Prefer a leaf as strong as the dead node (keeps capacity high near the root), else any that fits.
        var replacement = None;
        if (parent != None)
        {
            replacement = _forest.FindDeepLeaf(shard, Math.Max(needed, _forest.Cap(hole, shard)), depth);
            if (replacement == None)
            {
                replacement = _forest.FindDeepLeaf(shard, needed, depth);
            }

            // No such leaf (every strong node feeds someone): if whole subtrees hang below, take
            // a strong node from the level above the bottom; its children are leaves, which any
            // free slot can take. Orphans that are leaves themselves just go to free slots.
            if (replacement == None && !onlyLeaves)
            {
                replacement = _forest.FindDeepNode(shard, needed, _forest.MaxDepth(shard) - 1, depth + 1);
                if (replacement != None)
                {
                    _released.Clear();
                    for (var c = _forest.FirstChild(replacement, shard); c != None; c = _forest.NextSibling(c, shard))
                    {
                        _released.Add(c);
                    }

                    foreach (var leaf in _released)
                    {
                        // A dead child is a hole still on the stack, with nothing live below any more.
                        if (_forest.IsAlive(leaf))
                        {
                            _forest.Detach(leaf, shard);
                            _orphans.Add(leaf);
                        }
                    }
                }
            }
        }

        if (replacement != None)
        {
            _forest.Detach(replacement, shard);
            _forest.Attach(replacement, parent, shard);
            moves.Add(new Reattachment(replacement, shard, parent));
        }

        foreach (var child in _children)
        {
            if (child == replacement)
            {
                continue; // already promoted into the hole
            }

            _forest.Detach(child, shard);

            if (_forest.IsAlive(child))
            {
                if (replacement != None)
                {
                    _forest.Attach(child, replacement, shard);
                    moves.Add(new Reattachment(child, shard, replacement));
                }
                else
                {
                    _orphans.Add(child);
                }
            }
            else if (_fillStamp[child] == epoch)
            {
                _holes.Push((child, replacement));
            }
        }
    }

    /// <summary>
    /// Restores the shape, only if the tree is deeper than <paramref name="allowedDepth"/> (one level
    /// more than the best the policy allows): moves deepest leaves up into free slots two or more levels above
    /// the bottom; if that is not enough, sorts capacity by depth (a node never has less capacity
    /// than a deeper one) and compacts until neither applies. Sorted and compact, a tree is within
    /// one level of the best (its levels hold the largest capacities and are full but the last two).
    /// </summary>
    public void Improve(int shard, int allowedDepth, List<Reattachment> moves)
    {
        // Both can move many peers, so they run only when the tree is out of bounds. Compaction
        // alone usually suffices; sorting then makes sure. Each step lowers the sum of capacity x
        // depth or the sum of depths, so this terminates.
        if (_forest.MaxDepth(shard) <= allowedDepth)
        {
            return;
        }

        Compact(shard, moves);
        if (_forest.MaxDepth(shard) <= allowedDepth)
        {
            return;
        }

        while (SortByCapacity(shard, moves) | Compact(shard, moves))
        {
        }
    }

    /// <summary>
    /// While some node is deeper than a node of smaller capacity, the two exchange places: the
    /// stronger takes the weaker's parent and children plus as many of its own children as it has
    /// room for; the weaker takes the stronger's old parent and the rest. Nobody gets deeper.
    /// </summary>
    private bool SortByCapacity(int shard, List<Reattachment> moves)
    {
        var changed = false;
        for (var cls = ShardForest.ClassCount - 1; cls >= 1; cls--)
        {
            while (true)
            {
                var strong = _forest.FindDeepNode(shard, cls);
                if (strong == None || ShardForest.ClassOf(_forest.Cap(strong, shard)) != cls)
                {
                    break;
                }

                // The deepest of a class sees the most candidates: if it finds none, none of its class will.
                var weaker = _forest.FindWeaker(shard, _forest.Cap(strong, shard), _forest.Depth(strong, shard));
                if (weaker == None)
                {
                    break;
                }

                ExchangePlaces(strong, weaker, shard, moves);
                changed = true;
            }
        }

        return changed;
    }

    public void ExchangePlaces(int strong, int weaker, int shard, List<Reattachment> moves)
    {
        var weakerParent = _forest.Parent(weaker, shard);
        var strongParent = _forest.Parent(strong, shard);
        CollectChildren(weaker, shard);
        var weakerChildren = _children.ToArray();
        CollectChildren(strong, shard);
        var strongChildren = _children.ToArray();

        _forest.Detach(strong, shard);
        _forest.Detach(weaker, shard);
        foreach (var child in weakerChildren)
        {
            _forest.Detach(child, shard);
        }

        foreach (var child in strongChildren)
        {
            _forest.Detach(child, shard);
        }

        _forest.Attach(strong, weakerParent, shard);
        moves.Add(new Reattachment(strong, shard, weakerParent));
        foreach (var child in weakerChildren)
        {
            if (child != strong)
            {
                _forest.Attach(child, strong, shard);
                moves.Add(new Reattachment(child, shard, strong));
            }
        }

        // The weaker node goes where the stronger was (right under it if it was its parent).
        var weakerNewParent = strongParent == weaker ? strong : strongParent;
        _forest.Attach(weaker, weakerNewParent, shard);
        moves.Add(new Reattachment(weaker, shard, weakerNewParent));

        // The stronger keeps as many of its own children as it has room for (they move up a level).
        foreach (var child in strongChildren)
        {
            var parent = _forest.HasFreeSlot(strong, shard) ? strong : weaker;
            _forest.Attach(child, parent, shard);
            moves.Add(new Reattachment(child, shard, parent));
        }
    }

    /// <summary>Moves deepest leaves up while a free slot sits two or more levels above the deepest level.</summary>
    private bool Compact(int shard, List<Reattachment> moves)
    {
        var changed = false;
        while (true)
        {
            var open = _forest.FindOpen(shard, requireAttached: false);
            if (open == None)
            {
                return changed;
            }

            var maxDepth = _forest.MaxDepth(shard);
            if (_forest.Depth(open, shard) + 1 > maxDepth - 2)
            {
                return changed;
            }

            var leaf = _forest.FindDeepLeaf(shard, 0, maxDepth);
            if (leaf == None)
            {
                return changed;
            }

            _forest.Detach(leaf, shard);
            _forest.Attach(leaf, open, shard);
            moves.Add(new Reattachment(leaf, shard, open));
            changed = true;
        }
    }

    private void CollectChildren(int node, int shard)
    {
        _children.Clear();
        for (var c = _forest.FirstChild(node, shard); c != None; c = _forest.NextSibling(c, shard))
        {
            _children.Add(c);
        }
    }

    private int NextEpoch(IReadOnlyList<int> dead)
    {
        var max = 0;
        foreach (var x in dead)
        {
            max = Math.Max(max, x);
        }

        if (max >= _fillStamp.Length)
        {
            Array.Resize(ref _fillStamp, Math.Max(max + 1, _fillStamp.Length * 2));
        }

        return ++_epoch;
    }
}

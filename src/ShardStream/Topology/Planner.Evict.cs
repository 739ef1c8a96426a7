namespace ShardStream.Topology;

/// <summary>Taking out a relay whose upload does not carry its children, where nothing else can relieve them.</summary>
public sealed partial class Planner
{
    /// <summary>
    /// Whether <see cref="Leave"/> of <paramref name="peer"/>, a relay, would evict nobody else,
    /// counted conservatively, whatever order the repair takes its children in. Only a relay whose
    /// children are all leaves where it feeds them qualifies (a leaf orphan needs one slot and
    /// brings none of the tree's with it; an orphan with a subtree may make the repair release
    /// other leaves, <c>ShardPlacement.FillHole</c>). Per shard, its children need as many slots
    /// as the slot it frees under its parent and the free slots of the nodes attached outside its
    /// subtree give. At most one shard may fall short, and only by what the repair lends there
    /// from other shards where the peer feeds nobody: striped, free slots of home trees of nodes
    /// attached in that tree (<see cref="FosterStranded"/>), with each child taken back bringing
    /// its own, counted lowest first (the worst order); otherwise, free slots of attached nodes in
    /// other shards (<see cref="LendToStranded"/>, which lists its lenders before it places anyone:
    /// the children bring nothing). The tessellated pattern's repair evicts nobody. For the
    /// coordinator's eviction of a relay whose children keep starving under it; <c>PlannerEvictRelayTests</c>
    /// checks in random plans that no leave it allows evicts anyone else. False when the peer is
    /// the source, not in the plan or a leaf (budget 0).
    /// </summary>
    public bool CanEvictWithoutEvictingOthers(int peer)
    {
        if (peer == Source || !Contains(peer) || _forest.Budget(peer) == 0)
        {
            return false;
        }

        if (_pristine)
        {
            return true;
        }

        var orphans = new int[ShardCount];
        for (var s = 0; s < ShardCount; s++)
        {
            for (var c = _forest.FirstChild(peer, s); c != None; c = _forest.NextSibling(c, s))
            {
                if (_forest.FirstChild(c, s) != None)
                {
                    return false;
                }

                orphans[s]++;
            }
        }

        var outside = new List<int>[ShardCount];
        var lacking = None;
        var room = 0;
        for (var s = 0; s < ShardCount; s++)
        {
            if (orphans[s] == 0)
            {
                continue;
            }

            var shard = s;
            outside[s] = [.. Peers.Prepend(Source).Where(n => n != peer && _forest.IsAttached(n, shard) && !IsBelow(n, peer, shard))];
            // The slot it frees under its parent, and the free slots attached outside its subtree.
            var free = 1 + outside[s].Sum(n => OpenSlots(n, shard));
            if (free >= orphans[s])
            {
                continue;
            }

            if (lacking != None)
            {
                return false;
            }

            lacking = s;
            room = free;
        }

        if (lacking == None)
        {
            return true;
        }

        // What a node lends to the lacking tree: free slots in shards where the peer feeds nobody.
        int Lends(int node)
        {
            if (Options.Topology == TopologyKind.Striped)
            {
                var home = HomeShard(node);
                return node == Source || home < 0 || home == lacking || orphans[home] > 0 ? 0 : OpenSlots(node, home);
            }

            var units = 0;
            for (var t = 0; t < ShardCount; t++)
            {
                if (t != lacking && orphans[t] == 0)
                {
                    units += OpenSlots(node, t);
                }
            }

            return units;
        }

        var available = room + outside[lacking].Sum(Lends);
        if (Options.Topology != TopologyKind.Striped)
        {
            return available >= orphans[lacking];
        }

        // The children that bring the least first: each takes one unit and brings its own.
        foreach (var brings in ChildrenOf(peer, lacking).Select(Lends).Order())
        {
            if (available <= 0)
            {
                return false;
            }

            available += brings - 1;
        }

        return true;
    }

    /// <summary>Slots of <paramref name="node"/>'s cap in <paramref name="shard"/> that no child uses.</summary>
    private int OpenSlots(int node, int shard) => Math.Max(0, _forest.Cap(node, shard) - _forest.ChildCount(node, shard));
}

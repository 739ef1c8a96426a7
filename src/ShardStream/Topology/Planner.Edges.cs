namespace ShardStream.Topology;

/// <summary>Edges that cannot work: a child that cannot connect to its parent, or one found slow there.</summary>
public sealed partial class Planner
{
    // (child, parent) pairs that must never be an edge again, in any shard: the child could not
    // connect to the parent (a NAT, a firewall, a broken route between the two).
    private readonly HashSet<(int Child, int Parent)> _avoided = [];

    /// <summary>
    /// Takes the edge from <paramref name="peer"/>'s parent in <paramref name="shard"/> out of the
    /// plan, because the peer cannot connect to that parent. The peer moves, with its whole subtree
    /// in that shard, under the shallowest other node with a free slot in the shard (never below
    /// itself, so no cycle); the trees are not reshaped otherwise, so only the moved subtree's
    /// depths change (possibly by a level or two). The pair is remembered: that parent is never
    /// given to this peer again, in any shard, by this call or by later joins, leaves and repairs
    /// (which re-place the peer elsewhere whenever they would put it back). Other shards the peer
    /// receives from the same parent move too, as the same connection carried them. When no slot
    /// is free, a leaf elsewhere takes the peer's place and the peer takes the leaf's, in at most
    /// <paramref name="exchanges"/> of those shards (one leaf's Move each); past them, or with 0,
    /// nobody else moves (and the scan for such a leaf, over every peer, is not run): only a free
    /// slot will do, and a shard with none stays under that parent.
    /// </summary>
    /// <returns>
    /// Every (peer, shard, new parent) change, already applied. Empty, and nothing remembered, when
    /// the parent is the source (every peer reached it to join), when the peer has no parent in the
    /// shard, or when no other node has a free slot in that shard outside the peer's subtree (and,
    /// with <paramref name="exchanges"/> above 0, no leaf can exchange places with it).
    /// </returns>
    /// <exception cref="ArgumentException"><paramref name="peer"/> is not a live peer.</exception>
    public IReadOnlyList<Reattachment> DropEdge(int peer, int shard, int exchanges = int.MaxValue)
    {
        if (peer == Source)
        {
            throw new ArgumentException("The source has no parent.", nameof(peer));
        }

        Check(peer, shard);
        var parent = _forest.Parent(peer, shard);
        if (parent is None or Source || !CanReparent(peer, shard, parent, exchanges > 0))
        {
            return [];
        }

        _avoided.Add((peer, parent));
        BeginMoves();
        // A re-placed edge breaks the seed's pattern; the general rule runs from now on.
        _pristine = false;
        for (var s = 0; s < ShardCount; s++)
        {
            if (_forest.Parent(peer, s) == parent)
            {
                // Each exchange is one Move of another peer (the leaf's).
                Reparent(peer, s, _moves.Count(m => m.Peer != peer) < exchanges);
            }
        }

        return Summarize(_moves, []);
    }

    /// <summary>
    /// Moves <paramref name="peer"/> away from <paramref name="parent"/>, which found it slow, so
    /// that another parent judges its download: in every shard where <paramref name="parent"/> is
    /// its parent, under the shallowest other node with a free slot in that shard (attached to the
    /// source, not in the peer's own subtree, not a parent it avoids), as <see cref="DropEdge"/>
    /// picks, but only into free slots (nobody else moves to make room, no budget changes) and
    /// without remembering the pair. All or nothing: when one of those shards has no free slot
    /// elsewhere, nothing changes.
    /// </summary>
    /// <returns>
    /// Every (peer, shard, new parent) change, already applied. Empty when the peer is not in the
    /// plan, <paramref name="parent"/> is the source or is not its parent in any shard, or a shard
    /// has no free slot for it elsewhere.
    /// </returns>
    public IReadOnlyList<Reattachment> MoveAwayFrom(int peer, int parent)
    {
        if (peer == Source || !Contains(peer) || parent is None or Source)
        {
            return [];
        }

        var moves = MoveOff(peer, parent, outsideParent: false);
        if (moves.Count > 0)
        {
            // A re-placed edge breaks the seed's pattern; the general rule runs from now on.
            _pristine = false;
        }

        return moves;
    }

    /// <summary>
    /// Moves <paramref name="peer"/> into free slots away from <paramref name="parent"/> in every
    /// shard where that is its parent, as <see cref="FindParentAvoiding"/> picks (and, with
    /// <paramref name="outsideParent"/>, never below <paramref name="parent"/>); all or nothing:
    /// when one of those shards has no such slot, nothing changes and the result is empty.
    /// </summary>
    private List<Reattachment> MoveOff(int peer, int parent, bool outsideParent)
    {
        var moves = new List<Reattachment>();
        for (var s = 0; s < ShardCount; s++)
        {
            if (_forest.Parent(peer, s) != parent)
            {
                continue;
            }

            // One shard at a time: a node's budget counts its slots over all shards together.
            var target = FindParentAvoiding(peer, s, parent, outsideParent);
            if (target == None)
            {
                foreach (var done in moves)
                {
                    _forest.Detach(peer, done.Shard);
                    _forest.Attach(peer, parent, done.Shard);
                }

                return [];
            }

            _forest.Detach(peer, s);
            _forest.Attach(peer, target, s);
            moves.Add(new Reattachment(peer, s, target));
        }

        return moves;
    }

    /// <summary>True when <paramref name="child"/> must never be under <paramref name="parent"/> (see <see cref="DropEdge"/>).</summary>
    public bool IsAvoided(int child, int parent) => _avoided.Contains((child, parent));

    /// <summary>
    /// After a join, leave or demotion: any peer that is under a parent it must avoid (moved there
    /// by the operation, or left there when a node took over its parent's place) is re-placed, and
    /// the new moves appended. Pairs whose child or parent is gone are forgotten. Costs nothing
    /// while no edge was dropped, and a walk over the dropped pairs otherwise.
    /// </summary>
    private void KeepAvoidedEdgesOut()
    {
        if (_avoided.Count == 0)
        {
            return;
        }

        _avoided.RemoveWhere(pair => !_forest.IsAlive(pair.Child) || !_forest.IsAlive(pair.Parent));
        foreach (var (child, parent) in _avoided)
        {
            for (var s = 0; s < ShardCount; s++)
            {
                if (_forest.Parent(child, s) == parent)
                {
                    Reparent(child, s);
                }
            }
        }
    }

    /// <summary>
    /// Moves the peer (with its subtree) in one shard under the best parent it does not avoid: a
    /// free slot if there is one, else the place of a leaf elsewhere, which takes the peer's place
    /// (neither parent then sends more than before), unless <paramref name="makeRoom"/> is false.
    /// Leaves it where it is if neither exists.
    /// </summary>
    private bool Reparent(int peer, int shard, bool makeRoom = true)
    {
        var parent = _forest.Parent(peer, shard);
        var target = FindParentAvoiding(peer, shard, parent);
        if (target != None)
        {
            _forest.Detach(peer, shard);
            _forest.Attach(peer, target, shard);
            _moves.Add(new Reattachment(peer, shard, target));
            return true;
        }

        var leaf = makeRoom ? FindLeafToExchange(peer, shard, parent) : None;
        if (leaf == None)
        {
            return false;
        }

        ExchangeParents(peer, _forest.Parent(leaf, shard), leaf, parent, shard);
        return true;
    }

    /// <summary>In one shard, <paramref name="a"/> goes under <paramref name="aParent"/> and <paramref name="b"/> under <paramref name="bParent"/> (each a place the other frees), as two Moves.</summary>
    private void ExchangeParents(int a, int aParent, int b, int bParent, int shard)
    {
        _forest.Detach(a, shard);
        _forest.Detach(b, shard);
        _forest.Attach(a, aParent, shard);
        _forest.Attach(b, bParent, shard);
        _moves.Add(new Reattachment(a, shard, aParent));
        _moves.Add(new Reattachment(b, shard, bParent));
    }

    /// <summary>True when <see cref="Reparent"/> would find the peer another parent in the shard.</summary>
    private bool CanReparent(int peer, int shard, int parent, bool makeRoom) =>
        FindParentAvoiding(peer, shard, parent) != None || (makeRoom && FindLeafToExchange(peer, shard, parent) != None);

    /// <summary>
    /// When no slot is free: the shallowest-placed leaf of the shard (no children in it) whose
    /// parent the peer may have (not avoided, not in the peer's subtree) and whose own parent would
    /// then be <paramref name="parent"/>, which that leaf must not avoid. A scan of all peers, run
    /// only when a tree is full.
    /// </summary>
    private int FindLeafToExchange(int peer, int shard, int parent)
    {
        var best = None;
        var bestDepth = int.MaxValue;
        for (var n = 1; n < _nextId; n++)
        {
            if (n == peer || !_forest.IsAlive(n) || _forest.FirstChild(n, shard) != None)
            {
                continue;
            }

            var p = _forest.Parent(n, shard);
            var depth = _forest.Depth(n, shard);
            if (p == None || p == parent || depth >= bestDepth || _avoided.Contains((peer, p)) || _avoided.Contains((n, parent)))
            {
                continue;
            }

            if (!_forest.IsAttached(p, shard) || p == peer || IsBelow(p, peer, shard))
            {
                continue;
            }

            best = n;
            bestDepth = depth;
        }

        return best;
    }

    /// <summary>The shallowest node with a free slot in the shard that is not <paramref name="parent"/>, not avoided by the peer, attached to the source, not inside the peer's own subtree, and, with <paramref name="outsideParent"/>, not inside <paramref name="parent"/>'s.</summary>
    private int FindParentAvoiding(int peer, int shard, int parent, bool outsideParent = false) =>
        _forest.FindOpenWhere(shard, n => n != parent && n != peer && !_avoided.Contains((peer, n)) && _forest.IsAttached(n, shard) && !IsBelow(n, peer, shard) && !(outsideParent && IsBelow(n, parent, shard)));

    /// <summary>True when <paramref name="ancestor"/> is on the path from <paramref name="node"/> up to the source.</summary>
    private bool IsBelow(int node, int ancestor, int shard)
    {
        for (var n = _forest.Parent(node, shard); n != None; n = _forest.Parent(n, shard))
        {
            if (n == ancestor)
            {
                return true;
            }
        }

        return false;
    }
}

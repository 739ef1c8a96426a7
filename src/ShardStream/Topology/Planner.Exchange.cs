namespace ShardStream.Topology;

/// <summary>
/// Demotion by exchange: when the rest of the overlay has no room for a slow relay's children
/// (<see cref="CanDemoteWithoutEviction"/> is false), one of its own children takes its place.
/// </summary>
public sealed partial class Planner
{
    /// <summary>
    /// True when <see cref="DemoteByExchange"/> would carry everyone: <paramref name="peer"/> is a
    /// relay; in every shard where it has children, <paramref name="child"/> is one of them, has
    /// room for the others beside its own children, and may be under the peer's parent; and the
    /// peer, a leaf from then on, finds a slot (under the child, or any free slot elsewhere).
    /// Striped: the child must have the peer's home shard (it has no slots in any other tree).
    /// </summary>
    public bool CanDemoteByExchange(int peer, int child)
    {
        if (peer == Source || peer == child || !Contains(peer) || !Contains(child) || child == Source || _forest.Budget(peer) == 0 || _forest.Budget(child) == 0)
        {
            return false;
        }

        var any = false;
        for (var s = 0; s < ShardCount; s++)
        {
            var others = _forest.ChildCount(peer, s) - 1;
            if (others < 0)
            {
                continue;
            }

            any = true;
            if (_forest.Parent(child, s) != peer || _avoided.Contains((child, _forest.Parent(peer, s))))
            {
                return false;
            }

            var room = _forest.Cap(child, s) - _forest.ChildCount(child, s) - others;
            if (room < 0 || Siblings(peer, child, s).Any(o => _avoided.Contains((o, child))))
            {
                return false;
            }

            if ((room == 0 || _avoided.Contains((peer, child))) && OpenSlotFor(peer, child, s) == None)
            {
                return false;
            }
        }

        return any;
    }

    /// <summary>
    /// Makes <paramref name="peer"/> a pure viewer (budget 0) by exchanging places with
    /// <paramref name="child"/> in every shard where the peer has children: the child moves up
    /// under the peer's parent, with its own subtree; the peer's other children move under the
    /// child, at the depth they had; the peer becomes a leaf under the child (or, when the child
    /// has no slot left or the pair is avoided, in the shallowest free slot). Nobody leaves the
    /// overlay and no node sends more than its budget; the shards where the peer had no children
    /// do not change. Nobody gets deeper but the peer itself (under the child, one level; in a
    /// free slot elsewhere, at most one level below the deepest node), so no tree grows by more
    /// than a level; the trees are then kept within one level of their best as after a leave
    /// (<see cref="Demote"/>).
    /// </summary>
    /// <returns>
    /// Every (peer, shard, new parent) change, already applied, one per (peer, shard). Empty, and
    /// nothing changed, when <see cref="CanDemoteByExchange"/> is false.
    /// </returns>
    public IReadOnlyList<Reattachment> DemoteByExchange(int peer, int child)
    {
        if (!CanDemoteByExchange(peer, child))
        {
            return [];
        }

        BeginMoves();
        // An exchange breaks the seed's pattern; the general rule runs from now on.
        _pristine = false;
        var budget = _forest.Budget(peer);
        for (var s = 0; s < ShardCount; s++)
        {
            if (_forest.ChildCount(peer, s) == 0)
            {
                SetCap(peer, s, 0);
                continue;
            }

            var parent = _forest.Parent(peer, s);
            var others = Siblings(peer, child, s).ToList();
            _forest.Detach(peer, s);
            _forest.Detach(child, s);
            foreach (var o in others)
            {
                _forest.Detach(o, s);
            }

            _forest.Attach(child, parent, s);
            _moves.Add(new Reattachment(child, s, parent));
            foreach (var o in others)
            {
                _forest.Attach(o, child, s);
                _moves.Add(new Reattachment(o, s, child));
            }

            SetCap(peer, s, 0);
            var under = _forest.HasFreeSlot(child, s) && !_avoided.Contains((peer, child)) ? child : OpenSlotFor(peer, child, s);
            _forest.Attach(peer, under, s);
            _moves.Add(new Reattachment(peer, s, under));
        }

        _forest.SetBudget(peer, 0);
        _homes?.Release(peer, budget);
        ForgetFosterParent(peer);
        for (var s = 0; s < ShardCount; s++)
        {
            _placement.Improve(s, AllowedDepth(s), _moves);
        }

        KeepAvoidedEdgesOut();
        return Summarize(_moves, []);
    }

    /// <summary>The children of <paramref name="peer"/> in <paramref name="shard"/> other than <paramref name="child"/>.</summary>
    private IEnumerable<int> Siblings(int peer, int child, int shard)
    {
        for (var c = _forest.FirstChild(peer, shard); c != None; c = _forest.NextSibling(c, shard))
        {
            if (c != child)
            {
                yield return c;
            }
        }
    }

    /// <summary>The shallowest attached node other than the two with a free slot in the shard that <paramref name="peer"/> does not avoid.</summary>
    private int OpenSlotFor(int peer, int child, int shard) =>
        _forest.FindOpenWhere(shard, n => n != peer && n != child && !_avoided.Contains((peer, n)) && _forest.IsAttached(n, shard));
}

namespace ShardStream.Topology;

/// <summary>Shedding: a relay whose upload does not carry its children gives one up at a time and takes no more.</summary>
public sealed partial class Planner
{
    /// <summary>
    /// For a relay whose upload does not carry its children and that can neither be demoted
    /// without evicting someone (<see cref="CanDemoteWithoutEviction"/>) nor exchanged with a child
    /// (<see cref="CanDemoteByExchange"/>): one of its children, <paramref name="first"/> when it
    /// can, else the first other that can, moves with its subtree into a free slot outside the
    /// relay's subtree, in every shard where the relay is its parent (all or nothing per child, as
    /// <see cref="MoveAwayFrom"/>; nobody else moves, nobody is evicted); then the relay's budget
    /// drops to the slots it still uses, so that no join or repair gives it a child again (its
    /// caps follow: in each shard, the children it has there; striped, its home's capacity drops
    /// by as much). Called once per finding, the relay ends up with as many children as its
    /// upload carries, or none. The budget is not given back: a relay's upload, unlike a
    /// download, shows only in the children it has.
    /// </summary>
    /// <returns>
    /// The moves of the child that moved, already applied; empty when none could (the budget may
    /// still have dropped: <see cref="Budget"/> tells). Empty, and nothing changed, when the peer is
    /// the source, not in the plan or has budget 0.
    /// </returns>
    public IReadOnlyList<Reattachment> Shed(int peer, int first)
    {
        if (peer == Source || !Contains(peer) || _forest.Budget(peer) == 0)
        {
            return [];
        }

        var children = ChildrenInAnyShard(peer).ToList();
        if (children.Remove(first))
        {
            children.Insert(0, first);
        }

        IReadOnlyList<Reattachment> moves = [];
        foreach (var child in children)
        {
            // Outside the relay's subtree: under it, the child would still wait for its upload.
            moves = MoveOff(child, peer, outsideParent: true);
            if (moves.Count > 0)
            {
                break;
            }
        }

        var budget = _forest.Used(peer);
        if (budget < _forest.Budget(peer))
        {
            // A budget below what the seed's pattern gave breaks it; the general rule runs from now on.
            _pristine = false;
            var home = HomeShard(peer);
            _homes?.Release(peer, _forest.Budget(peer));
            _forest.SetBudget(peer, budget);
            for (var s = 0; s < ShardCount; s++)
            {
                SetCap(peer, s, _forest.ChildCount(peer, s));
            }

            if (budget > 0)
            {
                // Still a relay: its home stays, with the budget it has now.
                _homes?.Set(peer, home, budget);
            }
            else
            {
                // A pure viewer now, with no home: it fosters nobody (its last child moved).
                ForgetFosterParent(peer);
            }
        }

        return moves;
    }
}

namespace ShardStream.Topology;

/// <summary>Demotion: a peer that cannot carry what it was given becomes a pure viewer.</summary>
public sealed partial class Planner
{
    /// <summary>
    /// A conservative check that <see cref="Demote"/> would carry everyone: the other nodes that
    /// may forward each shard (in striped plans, those whose home is that shard, and the source)
    /// have more spare slots than the peer's children in that shard (striped: or home peers of
    /// other trees can foster the rest, <see cref="CanFosterLacking"/>), and the overlay as a whole
    /// has room for its children plus one full viewer. A demotion that fails this check could
    /// evict peers to make room, which is worse than keeping a slow relay; the caller keeps the
    /// peer where it is instead. False also when the peer is not in the plan or is already a leaf.
    /// </summary>
    public bool CanDemoteWithoutEviction(int peer)
    {
        if (peer == Source || !Contains(peer) || _forest.Budget(peer) == 0)
        {
            return false;
        }

        var striped = Options.Topology == TopologyKind.Striped;
        var total = 0;
        var perShard = new int[ShardCount];
        foreach (var node in Peers.Prepend(Source))
        {
            if (node == peer)
            {
                continue;
            }

            var spare = Math.Max(0, _forest.Budget(node) - _forest.Used(node));
            total += spare;
            for (var s = 0; s < ShardCount; s++)
            {
                if (!striped || node == Source || HomeShard(node) == s)
                {
                    perShard[s] += spare;
                }
            }
        }

        var lacking = new bool[ShardCount];
        for (var s = 0; s < ShardCount; s++)
        {
            var children = ChildrenOf(peer, s).Count();
            if (children > 0 && perShard[s] < children + 1)
            {
                if (!striped)
                {
                    return false;
                }

                lacking[s] = true;
            }
        }

        return total >= _forest.Used(peer) + ShardCount && (!lacking.Contains(true) || CanFosterLacking(peer, lacking, perShard));
    }

    /// <summary>
    /// Striped: whether the tree of each shard in <paramref name="lacking"/> can take back the
    /// peer's children and the peer itself, a leaf, once it is out of it, with the help of home
    /// peers of other trees, as the repair of a leave does (<see cref="FosterStranded"/>: a unit of
    /// a foster parent's budget moves from its home tree to the orphan's). A foster parent must be
    /// attached in that tree and lends only free slots of its home tree (not a home tree where the
    /// peer has children: those are left to them). Attached are the nodes outside the peer's
    /// subtree; the tree's own free slots (<paramref name="spare"/>, at least the one the peer
    /// frees under its parent) take back its children first, and each child taken back brings its
    /// subtree's foster parents with it (the repair fosters in passes until one fosters nobody).
    /// Counted with the children whose subtrees lend the most taken back first: not a bound on
    /// every order the repair may take, but the repair also makes room for a foster parent when
    /// it has none (<see cref="MakeFosterRoom"/>), which this does not count;
    /// <c>PlannerDemoteTests</c> checks that no demotion it allows evicts anyone. Without this,
    /// the only home peer of a tree (4 viewers, K = 4) was never demoted: the check counted only
    /// that tree's home peers and the source as room for its children, though the repair had
    /// others foster them.
    /// </summary>
    private bool CanFosterLacking(int peer, bool[] lacking, int[] spare)
    {
        var lent = new Dictionary<int, int>();
        int Free(int node, int shard)
        {
            var home = HomeShard(node);
            return node == peer || home < 0 || home == shard || _forest.ChildCount(peer, home) > 0
                ? 0
                : Math.Max(0, _forest.Cap(node, home) - _forest.ChildCount(node, home) - lent.GetValueOrDefault(node));
        }

        for (var s = 0; s < ShardCount; s++)
        {
            if (!lacking[s])
            {
                continue;
            }

            var shard = s;
            var fosters = Peers.Where(n => _forest.IsAttached(n, shard) && !IsBelow(n, peer, shard)).ToList();
            var own = Math.Max(1, spare[s]);
            var orphans = new Queue<List<int>>(ChildrenOf(peer, s).Select(c => Subtree(c, shard).ToList()).OrderByDescending(t => t.Sum(n => Free(n, shard))));
            // The children, then the peer itself.
            for (var placed = orphans.Count + 1; placed > 0; placed--)
            {
                if (own > 0)
                {
                    own--;
                }
                else if (fosters.FirstOrDefault(n => Free(n, shard) > 0, None) is var parent && parent != None)
                {
                    lent[parent] = lent.GetValueOrDefault(parent) + 1;
                }
                else
                {
                    return false;
                }

                if (orphans.TryDequeue(out var subtree))
                {
                    fosters.AddRange(subtree);
                }
            }
        }

        return true;
    }

    /// <summary><paramref name="node"/> and every node below it in <paramref name="shard"/>.</summary>
    private IEnumerable<int> Subtree(int node, int shard)
    {
        yield return node;
        for (var c = _forest.FirstChild(node, shard); c != None; c = _forest.NextSibling(c, shard))
        {
            foreach (var below in Subtree(c, shard))
            {
                yield return below;
            }
        }
    }

    /// <summary>
    /// Gives a demoted peer (budget 0) <paramref name="budget"/> shard-streams again, where it is:
    /// nobody moves, the peer included, and no edge changes. Its slots are free slots from now on,
    /// for later joins and repairs, split over the shards as a joiner's would be (binary: all in
    /// the one tree; tessellated, whose pattern a demotion ended: the larger half to the tree with
    /// less capacity; striped: all in a home shard, the tree with the least capacity, as a joiner
    /// of that budget gets). A tree may then be more than one level deeper than its new best depth
    /// allows until the next join or leave reshapes it (<c>Improve</c>), which can move the peer.
    /// </summary>
    /// <returns>False, and nothing changed, when the peer is not in the plan or its budget is not 0.</returns>
    /// <exception cref="ArgumentException"><paramref name="peer"/> is the source.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="budget"/> is not positive.</exception>
    public bool Repromote(int peer, int budget)
    {
        if (peer == Source)
        {
            throw new ArgumentException("The source is never demoted.", nameof(peer));
        }

        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(budget);
        if (!Contains(peer) || _forest.Budget(peer) != 0)
        {
            return false;
        }

        // A demotion ended the tessellated pattern already (Demote, DemoteByExchange).
        _pristine = false;
        _forest.SetBudget(peer, budget);
        if (Options.Topology == TopologyKind.Striped)
        {
            var home = _homes!.Choose(budget);
            _homes.Set(peer, home, budget);
            SetCap(peer, home, budget);
        }
        else if (ShardCount == 1)
        {
            SetCap(peer, 0, budget);
        }
        else
        {
            var larger = _forest.TotalCap(0) <= _forest.TotalCap(1) ? 0 : 1;
            SetCap(peer, larger, (budget + 1) / 2);
            SetCap(peer, 1 - larger, budget / 2);
        }

        return true;
    }

    /// <summary>
    /// Makes <paramref name="peer"/> a pure viewer: its budget becomes 0, so it is a leaf in every
    /// shard tree and nobody depends on it (used for a peer that cannot sustain the stream rate,
    /// and for a peer that must not be trusted to relay). Its children are re-placed exactly as if
    /// it had left (<see cref="Leave"/>: orphans keep their subtrees, the trees stay within one
    /// level of their best), and then the peer itself joins again under the same id with budget 0,
    /// taking free slots like any pure viewer. Where its new parent in a shard is the parent it had,
    /// no entry is returned for it: it keeps that connection.
    /// </summary>
    /// <returns>
    /// Every (peer, shard, new parent) change, already applied, one per (peer, shard), in the form
    /// of <see cref="Leave"/>'s result. Empty when the peer is not in the plan or already has budget
    /// 0. A <see cref="Reattachment.NewParent"/> of <see cref="None"/> means that peer was evicted
    /// (no capacity left for it; possibly the demoted peer itself, when no free slot is left for a
    /// leaf).
    /// </returns>
    /// <exception cref="ArgumentException"><paramref name="peer"/> is the source.</exception>
    public IReadOnlyList<Reattachment> Demote(int peer)
    {
        if (peer == Source)
        {
            throw new ArgumentException("The source cannot be demoted.", nameof(peer));
        }

        if (!Contains(peer) || _forest.Budget(peer) == 0)
        {
            return [];
        }

        var before = new int[ShardCount];
        for (var s = 0; s < ShardCount; s++)
        {
            before[s] = _forest.Parent(peer, s);
        }

        // Leave clears _moves; keep its result before re-adding the peer. The forest's journal of
        // the parents peers had before is kept across both steps: a peer the leave moved and the
        // join put back has not moved (Summarize).
        var left = Leave([peer]);
        var evicted = new HashSet<int>(left.Where(r => r.NewParent == None).Select(r => r.Peer));

        _moves.Clear();
        var placed = true;
        try
        {
            if (Options.Topology == TopologyKind.Striped)
            {
                JoinStriped(peer, 0);
            }
            else
            {
                // A budget-0 peer has no place in the seed's tessellation pattern: the general rule runs from now on, as after a weak joiner.
                _pristine = false;
                JoinGeneral(peer, 0);
            }
        }
        catch (PlacementException)
        {
            placed = false;
        }

        if (placed)
        {
            _peerCount++;
            for (var s = 0; s < ShardCount; s++)
            {
                _placement.Improve(s, AllowedDepth(s), _moves);
            }
        }

        KeepAvoidedEdgesOut();
        for (var s = 0; placed && s < ShardCount; s++)
        {
            // The demoted peer's own new place is not among the moves: check it too.
            if (IsAvoided(peer, _forest.Parent(peer, s)))
            {
                Reparent(peer, s);
            }
        }

        // One entry per (peer, shard) that changed in either step, with its final parent; the
        // demoted peer's own placement is not among the moves (a joiner's never is): compare.
        var result = new List<Reattachment>();
        var seen = new HashSet<long>();
        foreach (var move in left.Concat(_moves))
        {
            if (move.Peer == peer || move.NewParent == None || !_forest.IsAlive(move.Peer) || !seen.Add(((long)move.Peer * ShardCount) + move.Shard))
            {
                continue;
            }

            if (Moved(move.Peer, move.Shard, out var parent))
            {
                result.Add(new Reattachment(move.Peer, move.Shard, parent));
            }
        }

        for (var s = 0; placed && s < ShardCount; s++)
        {
            var parent = _forest.Parent(peer, s);
            if (parent != before[s])
            {
                result.Add(new Reattachment(peer, s, parent));
            }
        }

        if (!placed)
        {
            evicted.Add(peer);
        }

        foreach (var gone in evicted)
        {
            for (var s = 0; s < ShardCount; s++)
            {
                result.Add(new Reattachment(gone, s, None));
            }
        }

        return result;
    }
}

namespace ShardStream.Topology;

/// <summary>Joins and leaves: the two ways the plan changes.</summary>
public sealed partial class Planner
{
    /// <summary>Live peers (the source not counted).</summary>
    public int PeerCount => _peerCount;

    /// <summary>
    /// The other peers the last <see cref="Join"/> moved (already applied): a joiner with more
    /// capacity takes the place of a shallower node with less, which then hangs below it. The
    /// coordinator sends one Move per entry. Empty for the tessellated pattern.
    /// </summary>
    public IReadOnlyList<Reattachment> LastJoinMoves => _lastJoinMoves;

    /// <summary>
    /// Adds a peer that may send <paramref name="budget"/> shard-streams (0 = pure viewer, a leaf
    /// everywhere) and gives it a parent in every shard. Placement by policy:
    /// <list type="bullet">
    /// <item>Binary and striped, and tessellated once its pattern is broken: see the general rule
    /// (a joiner takes the shallowest free slot breadth-first, or the place of a shallower node
    /// with less capacity, which moves one level down under it; see <see cref="LastJoinMoves"/>).</item>
    /// <item>Tessellated: the shallowest open position of the seed's pattern (see
    /// <see cref="Leave"/> for how leaves keep the pattern). The first joiner with a budget below 3
    /// ends the pattern for good: from then on the general rule runs, with each budget split over
    /// the two shards, holding the trees within one level of an exact tessellation.</item>
    /// <item>Striped: a peer with budget gets the home shard whose tree has the least capacity and
    /// is interior only there; in the other trees it joins as a capacity-0 leaf.</item>
    /// </list>
    /// </summary>
    /// <returns>The new peer's id: 1, 2, 3... in join order, never reused.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="budget"/> is negative.</exception>
    /// <exception cref="PlacementException">Some shard tree has no free slot; the plan is unchanged.</exception>
    public int Join(int budget)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budget);
        return JoinCore(budget);
    }

    private int JoinCore(int budget)
    {
        var id = _nextId;
        BeginMoves();
        switch (Options.Topology)
        {
            case TopologyKind.Tessellated when _pristine && budget >= 3:
                JoinPattern(id, budget);
                break;
            case TopologyKind.Striped:
                JoinStriped(id, budget);
                break;
            default:
                _pristine = false;
                JoinGeneral(id, budget);
                break;
        }

        _nextId++;
        _peerCount++;
        ExchangeAtTheTop(id);
        if (!_pristine)
        {
            // A join rarely needs this (it takes the shallowest slot, capacity first), but after
            // leaves the trees may be loose; the check is cheap and only a violation moves anyone.
            for (var s = 0; s < ShardCount; s++)
            {
                _placement.Improve(s, AllowedDepth(s), _moves);
            }
        }

        KeepAvoidedEdgesOut();
        _lastJoinMoves = Summarize(_moves, []);
        return id;
    }

    private void JoinPattern(int id, int budget)
    {
        _forest.AddNode(id, budget);
        _pattern!.Fill(id, _pattern.TakeOpenPosition(), _moves);
    }

    private void JoinGeneral(int id, int budget)
    {
        // Binary: the whole budget in the one tree. Tessellated (general rule): the budget split
        // over both trees, the larger half to the tree with less capacity so far.
        Span<int> caps = stackalloc int[ShardCount];
        if (ShardCount == 1)
        {
            caps[0] = budget;
        }
        else
        {
            var larger = _forest.TotalCap(0) <= _forest.TotalCap(1) ? 0 : 1;
            caps[larger] = (budget + 1) / 2;
            caps[1 - larger] = budget / 2;
        }

        for (var s = 0; s < ShardCount; s++)
        {
            if (!_placement.CanPlace(s, caps[s]))
            {
                throw new PlacementException($"No capacity left in shard {s} for a peer with budget {budget}.");
            }
        }

        _forest.AddNode(id, budget);
        for (var s = 0; s < ShardCount; s++)
        {
            SetCap(id, s, caps[s]);
            _placement.Place(id, s, _moves, JoinDepthBound(s));
        }
    }

    /// <summary>
    /// Removes <paramref name="peers"/> (crashed or left; any number at once, possibly a whole
    /// branch) and repairs every shard tree. Surviving orphans keep their own subtrees.
    /// <list type="bullet">
    /// <item>General rule (binary, striped, tessellated after its pattern ended), per shard:
    /// top-down, each dead node with live nodes below it is replaced by the deepest live leaf able
    /// to take all its children, so orphans keep their depth; orphans no leaf can take move as
    /// whole subtrees (tallest first) to the shallowest free slots, or, with none left in their
    /// tree, to a node that moves a unit of its budget there from another shard
    /// (<see cref="LendToStranded"/>). Then nodes exchange places
    /// until capacity never increases with depth, and deepest leaves move up into free slots two
    /// or more levels above the bottom. Together these keep every shard tree within one level of
    /// the least depth the live budgets allow. Striped: homes are rebalanced first, by re-homing
    /// leaf peers of the tree with the most capacity to the one with the least.</item>
    /// <item>Tessellated pattern: a vacated position with live nodes below is taken over by the
    /// deepest peer that feeds nobody (2 parent changes + the children it adopts); other vacated
    /// positions reopen for joiners; deepest peers move up into open positions only while the tree
    /// is more than one level deeper than an exact tessellation of the survivors.</item>
    /// </list>
    /// Ids that are not live peers (already gone) are ignored.
    /// </summary>
    /// <returns>
    /// Every (peer, shard, new parent) change, already applied, one per (peer, shard). A
    /// <see cref="Reattachment.NewParent"/> of <see cref="None"/> means no capacity was left for
    /// that peer: the planner removed it (and its subtree) and it has to join again (never once
    /// <see cref="SourceTakesStranded"/> is set).
    /// </returns>
    /// <exception cref="ArgumentException">The source is in <paramref name="peers"/>.</exception>
    public IReadOnlyList<Reattachment> Leave(IReadOnlyCollection<int> peers)
    {
        ArgumentNullException.ThrowIfNull(peers);
        var dead = new List<int>(peers.Count);
        var seen = new HashSet<int>();
        foreach (var peer in peers)
        {
            if (peer == Source)
            {
                throw new ArgumentException("The source cannot leave the plan.", nameof(peers));
            }

            if (Contains(peer) && seen.Add(peer))
            {
                dead.Add(peer);
            }
        }

        if (dead.Count == 0)
        {
            return [];
        }

        BeginMoves();
        if (_pristine)
        {
            foreach (var peer in dead)
            {
                Remove(peer);
            }

            _pattern!.Repair(dead, _peerCount, _moves);
            return Summarize(_moves, []);
        }

        var evicted = new List<int>();
        var stranded = new List<int>();
        while (dead.Count > 0)
        {
            foreach (var peer in dead)
            {
                Remove(peer);
            }

            stranded.Clear();
            for (var s = 0; s < ShardCount; s++)
            {
                var before = stranded.Count;
                _placement.Repair(s, dead, _moves, stranded, _latency is null ? int.MaxValue : AllowedDepth(s));
                for (var j = before; j < stranded.Count; j++)
                {
                    stranded[j] = (stranded[j] * ShardCount) + s;
                }
            }

            if (_homes is not null)
            {
                FosterStranded(stranded);
            }
            else if (stranded.Count > 0)
            {
                LendToStranded(stranded);
            }

            if (SourceTakesStranded)
            {
                SourceTakes(stranded);
            }

            dead = CollectStranded(stranded, seen);
            evicted.AddRange(dead);
        }

        if (_homes is not null)
        {
            RebalanceHomes();
            ReleaseFosters();
        }

        for (var s = 0; s < ShardCount; s++)
        {
            _placement.Improve(s, AllowedDepth(s), _moves);
        }

        KeepAvoidedEdgesOut();
        return Summarize(_moves, evicted);
    }

    /// <summary>
    /// The depth a shard tree may reach before the planner reshapes it: one more than the best its
    /// capacities allow. For the tessellated policy the best is never taken below the depth of an
    /// exact tessellation of the live peers: its trees are that deep by design, and sorting them
    /// into the (much shallower) best split of the budgets would move nearly every peer at once.
    /// </summary>
    private int AllowedDepth(int shard)
    {
        var best = _forest.BestDepth(shard, _peerCount);
        if (Options.Topology == TopologyKind.Tessellated)
        {
            best = Math.Max(best, TessellationPattern.ExactDepth(_peerCount));
        }

        return best == int.MaxValue ? int.MaxValue : best + 1;
    }

    /// <summary>The deepest a joiner may be placed in <paramref name="shard"/> (latency-aware only): one level more than the best its capacities allow with the joiner counted.</summary>
    private int JoinDepthBound(int shard)
    {
        if (_latency is not { Active: true })
        {
            return int.MaxValue;
        }

        var best = _forest.BestDepth(shard, _peerCount + 1);
        return best == int.MaxValue ? int.MaxValue : best + 1;
    }

    private void Remove(int peer)
    {
        _forest.Kill(peer);
        _peerCount--;

        _homes?.Release(peer, _forest.Budget(peer));
    }

    /// <summary>
    /// General rule: an orphan left without a free slot in its shard's tree is given one by a node
    /// of that tree (the source too) that has a unit of its budget unused in another shard; the
    /// unit moves to this shard, and the shallowest such node takes the orphan with its subtree.
    /// A budget is split over the shards when its node joins, so one tree could run out while the
    /// same nodes had room in the other: a relay's death in a 5-peer overlay (K = 2, a pure
    /// viewer; the survivors' budgets, the source's included, 15 shard-streams for the 10 needed)
    /// evicted two healthy peers as "no upload capacity left". Those given a parent are removed from <paramref name="stranded"/> (codes
    /// node * K + shard); only an overlay whose attached nodes have no unit free in any shard
    /// still evicts.
    /// </summary>
    private void LendToStranded(List<int> stranded)
    {
        var lenders = new List<(int Depth, int Node)>();
        var left = new List<int>();
        for (var s = 0; s < ShardCount; s++)
        {
            lenders.Clear();
            var next = 0;
            var listed = false;
            foreach (var code in stranded)
            {
                var node = code / ShardCount;
                if (code % ShardCount != s)
                {
                    continue;
                }

                if (!_forest.IsAlive(node) || _forest.Parent(node, s) != None)
                {
                    continue;
                }

                if (!listed)
                {
                    listed = true;
                    // The candidates once per shard: live nodes attached in this tree with a unit
                    // unused in another, shallowest first.
                    for (var id = Source; id < _nextId; id++)
                    {
                        if (_forest.IsAlive(id) && SpareElsewhere(id, s) != None && _forest.IsAttached(id, s))
                        {
                            lenders.Add((_forest.Depth(id, s), id));
                        }
                    }

                    lenders.Sort();
                }

                while (next < lenders.Count && SpareElsewhere(lenders[next].Node, s) == None)
                {
                    next++;
                }

                if (next == lenders.Count)
                {
                    left.Add(code);
                    continue;
                }

                var lender = lenders[next].Node;
                var from = SpareElsewhere(lender, s);
                SetCap(lender, from, _forest.Cap(lender, from) - 1);
                SetCap(lender, s, _forest.Cap(lender, s) + 1);
                _forest.Attach(node, lender, s);
                _moves.Add(new Reattachment(node, s, lender));
            }
        }

        stranded.Clear();
        stranded.AddRange(left);
    }

    /// <summary>
    /// Once true, a leave evicts nobody: an orphan no node has room for (after fostering or
    /// lending) is taken by the source, with its subtree, beyond the source's budget, which grows
    /// by one per such orphan. The coordinator sets it when its source has ended: from then on it
    /// sends only the tail of the stream from its window, to peers that lack it, and at the end
    /// peers leave one after another as they finish, each departure taking its upload with it:
    /// without it the last ones would find no room and be evicted though they have the stream or nearly.
    /// </summary>
    public bool SourceTakesStranded { get; set; }

    /// <summary>
    /// <see cref="SourceTakesStranded"/>: every orphan of <paramref name="stranded"/> (codes
    /// node * K + shard) still without a parent is attached to the source, one unit of the
    /// source's budget and cap in that shard more each; the list is emptied.
    /// </summary>
    private void SourceTakes(List<int> stranded)
    {
        foreach (var code in stranded)
        {
            var node = code / ShardCount;
            var shard = code % ShardCount;
            if (!_forest.IsAlive(node) || _forest.Parent(node, shard) != None)
            {
                continue;
            }

            _forest.SetBudget(Source, _forest.Budget(Source) + 1);
            SetCap(Source, shard, _forest.Cap(Source, shard) + 1);
            _forest.Attach(node, Source, shard);
            _moves.Add(new Reattachment(node, shard, Source));
        }

        stranded.Clear();
    }

    /// <summary>A shard other than <paramref name="shard"/> where <paramref name="node"/> has a unit of its budget unused, or <see cref="None"/>.</summary>
    private int SpareElsewhere(int node, int shard)
    {
        for (var t = 0; t < ShardCount; t++)
        {
            if (t != shard && _forest.Cap(node, t) > _forest.ChildCount(node, t))
            {
                return t;
            }
        }

        return None;
    }

    /// <summary>Peers left without a parent, with everything below them in that shard: they are evicted.</summary>
    private List<int> CollectStranded(List<int> stranded, HashSet<int> seen)
    {
        var result = new List<int>();
        var stack = new Stack<int>();
        foreach (var code in stranded)
        {
            var shard = code % ShardCount;
            stack.Push(code / ShardCount);
            while (stack.Count > 0)
            {
                var node = stack.Pop();
                if (!_forest.IsAlive(node))
                {
                    continue;
                }

                // Stranded in several shards: listed once, but its subtree is walked in each.
                if (seen.Add(node))
                {
                    result.Add(node);
                }

                for (var c = _forest.FirstChild(node, shard); c != None; c = _forest.NextSibling(c, shard))
                {
                    stack.Push(c);
                }
            }
        }

        return result;
    }

    private void SetCap(int node, int shard, int cap) => _forest.SetCap(node, shard, cap);

    /// <summary>Starts an operation's list of moves (<see cref="Summarize"/> reads it, and which parent each moved peer had before).</summary>
    private void BeginMoves()
    {
        _moves.Clear();
        _forest.StartJournal();
    }

    /// <summary>
    /// Whether <paramref name="peer"/>, listed as moved in <paramref name="shard"/>, ends under a
    /// parent other than the one it had before the operation's first detach of it (the forest's
    /// journal since <see cref="BeginMoves"/>); <paramref name="parent"/>: the one it ends under.
    /// </summary>
    private bool Moved(int peer, int shard, out int parent)
    {
        parent = _forest.Parent(peer, shard);
        return !_forest.ParentBefore(peer, shard, out var before) || before != parent;
    }

    /// <summary>
    /// One entry per (peer, shard) that changed, with its final parent; evicted peers last. A peer
    /// that the operation took off its parent and put back under it has not changed: a Move to the
    /// parent it has makes it attach there again and close its first link, and whatever that
    /// parent still had queued for it on that link is lost (a lagging child loses the chunks no
    /// window holds any more: PlannerLeaveTests).
    /// </summary>
    private List<Reattachment> Summarize(List<Reattachment> moves, List<int> evicted)
    {
        var result = new List<Reattachment>();
        var seen = new HashSet<long>();
        foreach (var move in moves)
        {
            if (_forest.IsAlive(move.Peer) && seen.Add(((long)move.Peer * ShardCount) + move.Shard))
            {
                if (Moved(move.Peer, move.Shard, out var parent))
                {
                    result.Add(new Reattachment(move.Peer, move.Shard, parent));
                }
            }
        }

        foreach (var peer in evicted)
        {
            for (var s = 0; s < ShardCount; s++)
            {
                result.Add(new Reattachment(peer, s, None));
            }
        }

        return result;
    }
}

namespace ShardStream.Topology;

/// <summary>
/// The striped policy (SplitStream's interior-node-disjoint stripe trees): homes, fostering
/// during bootstrap, and re-homing after leaves.
/// </summary>
/// <remarks>
/// <para>Bootstrap: with K trees and N &lt; K peers, some trees have no home peer yet and only the
/// source's share of slots, so pure stripes would need a source budget near K²/4 before the K-th
/// peer arrives. Instead, while a tree has no free slot, a joiner is <em>fostered</em> in it by a
/// peer that has a free slot in its own home tree: one unit of that peer's budget moves to the
/// other tree (never over budget). As soon as the tree has free slots of its own (its home peers
/// arrived), fostered children move there and the unit goes back home. With equal budgets the
/// fostering is gone after about K joins; every later peer is interior in its home tree only.</para>
/// <para>SplitStream (Castro et al., SOSP 2003) solves the same problem with a "spare capacity
/// group"; here the coordinator sees the whole overlay, so it simply picks the foster parent.</para>
/// </remarks>
public sealed partial class Planner
{
    private List<int>[]? _fosterParents;

    /// <summary>Edges where a peer forwards a shard other than its home (bootstrap only; see remarks).</summary>
    internal int FosteredEdges
    {
        get
        {
            var edges = 0;
            foreach (var node in Peers)
            {
                for (var s = 0; s < ShardCount; s++)
                {
                    if (s != HomeShard(node))
                    {
                        edges += _forest.ChildCount(node, s);
                    }
                }
            }

            return edges;
        }
    }

    private void JoinStriped(int id, int budget)
    {
        var homes = _homes!;
        _fosterParents ??= Enumerable.Range(0, ShardCount).Select(_ => new List<int>()).ToArray();
        var home = homes.Choose(budget);

        // Trees without a free slot need a foster parent each; any home peer of a tree that has
        // free slots can foster in any of them (a tree needing one has no free slot itself).
        var fostersNeeded = 0;
        long fosterSlots = 0;
        var selfFosterable = 0;
        for (var s = 0; s < ShardCount; s++)
        {
            if (s == home)
            {
                continue;
            }

            if (_forest.FindOpen(s, requireAttached: false) == None)
            {
                fostersNeeded++;
                selfFosterable += _forest.FindWeaker(s, 1, int.MaxValue) != None ? 1 : 0;
            }
            else
            {
                // One free slot of this tree goes to the joiner itself.
                fosterSlots += Math.Max(0, FreeHomeSlots(s) - 1);
            }
        }

        // Trees no one else can foster in: the joiner fosters itself there with a unit of its own
        // budget, taking the place of a node that feeds nobody in that tree (which then hangs below
        // it). Without this, viewers that joined first could fill every tree's source slots and
        // leave no way in for anyone, uploaders included. At least one unit stays home.
        var selfFosters = (int)Math.Max(0, fostersNeeded - fosterSlots);
        if (selfFosters > selfFosterable || (selfFosters > 0 && budget - selfFosters < 1))
        {
            throw new PlacementException(
                $"No capacity left in {fostersNeeded} shard trees for a peer with budget {budget}.");
        }

        var homeCap = budget - selfFosters;
        if (home >= 0 && !_placement.CanPlace(home, homeCap))
        {
            throw new PlacementException($"No capacity left in shard {home} for a peer with budget {budget}.");
        }

        _forest.AddNode(id, budget);
        homes.Set(id, home, budget);
        if (home >= 0)
        {
            SetCap(id, home, homeCap);
            _placement.Place(id, home, _moves, JoinDepthBound(home));
        }

        for (var s = 0; s < ShardCount; s++)
        {
            if (s == home)
            {
                continue;
            }

            if (_forest.FindOpen(s, requireAttached: false) != None)
            {
                _placement.Place(id, s, _moves, JoinDepthBound(s));
            }
            else if (selfFosters > 0 && _forest.FindWeaker(s, 1, int.MaxValue) != None)
            {
                // One of the units kept back from home (homeCap): a fostered slot in this tree.
                selfFosters--;
                _fosterParents![s].Add(id);
                SetCap(id, s, 1);
                _placement.Place(id, s, _moves);
            }
            else
            {
                Foster(id, s);
            }
        }

        ReleaseFosters();
    }

    /// <summary>A peer with a free slot in its home tree, shallowest in <paramref name="shard"/>'s tree.</summary>
    private int FindFosterParent(int shard)
    {
        var best = None;
        for (var t = 0; t < ShardCount; t++)
        {
            if (t == shard)
            {
                continue;
            }

            // Home peers of t only (not the source, not t's own foster parents), and placed in
            // the fostered tree (the joiner itself is not yet): never its own foster.
            var home = t;
            // Attached in the fostered tree too: an orphan's own subtree must not foster it.
            var candidate = _forest.FindOpenWhere(
                t, n => n != Source && _homes!.HomeOf(n) == home && _forest.Depth(n, shard) >= 0 && _forest.IsAttached(n, shard));
            if (candidate != None && (best == None || _forest.Depth(candidate, shard) < _forest.Depth(best, shard)))
            {
                best = candidate;
            }
        }

        return best;
    }

    /// <summary>
    /// Striped repair: orphans left without a free slot in their tree (it lost more home capacity
    /// than it had spare) are fostered, with their subtrees, by home peers of other trees; those
    /// fostered are removed from <paramref name="stranded"/> (codes node * K + shard).
    /// </summary>
    private void FosterStranded(List<int> stranded)
    {
        // Passes until one fosters nobody: a fostered orphan brings its subtree back into the tree,
        // and the home peers in it with a free slot can then foster the orphans still waiting.
        // Both searches may scan whole trees; one that found nothing for a shard finds nothing
        // again until something is fostered (they change nothing when they fail), so a real
        // shortage costs a scan per shard and pass, not one per orphan.
        var fostered = true;
        var noRoom = new bool[ShardCount];
        while (fostered && stranded.Count > 0)
        {
            fostered = false;
            Array.Clear(noRoom);
            for (var j = stranded.Count - 1; j >= 0; j--)
            {
                var node = stranded[j] / ShardCount;
                var shard = stranded[j] % ShardCount;
                if (noRoom[shard] || !_forest.IsAlive(node))
                {
                    continue;
                }

                var parent = FindFosterParent(shard);
                if (parent == None)
                {
                    parent = MakeFosterRoom(shard);
                }

                if (parent == None)
                {
                    noRoom[shard] = true;
                    continue;
                }

                Lend(parent, shard);
                _forest.Attach(node, parent, shard);
                _moves.Add(new Reattachment(node, shard, parent));
                stranded.RemoveAt(j);
                fostered = true;
                Array.Clear(noRoom);
            }
        }
    }

    /// <summary>
    /// When no home peer attached in <paramref name="shard"/>'s tree has a free slot at home (the
    /// free slots are all held by peers below the orphans, not attached there), frees one: a leaf
    /// child in its home tree t of a home peer of t that is attached in <paramref name="shard"/>
    /// moves to a home peer of t with a free slot there (attached in t). Returns the peer whose
    /// slot was freed (it fosters next), or <see cref="None"/>.
    /// </summary>
    private int MakeFosterRoom(int shard)
    {
        for (var t = 0; t < ShardCount; t++)
        {
            if (t == shard)
            {
                continue;
            }

            var home = t;
            var open = _forest.FindOpenWhere(t, n => n != Source && _homes!.HomeOf(n) == home && _forest.IsAttached(n, t));
            if (open == None)
            {
                continue;
            }

            var best = None;
            var bestLeaf = None;
            for (var id = Source + 1; id < _nextId; id++)
            {
                if (id == open || !_forest.IsAlive(id) || _homes!.HomeOf(id) != home || !_forest.IsAttached(id, shard)
                    || (best != None && _forest.Depth(id, shard) >= _forest.Depth(best, shard)))
                {
                    continue;
                }

                for (var c = _forest.FirstChild(id, t); c != None; c = _forest.NextSibling(c, t))
                {
                    if (c != open && _forest.FirstChild(c, t) == None)
                    {
                        best = id;
                        bestLeaf = c;
                        break;
                    }
                }
            }

            if (best == None)
            {
                continue;
            }

            _forest.Detach(bestLeaf, t);
            _forest.Attach(bestLeaf, open, t);
            _moves.Add(new Reattachment(bestLeaf, t, open));
            return best;
        }

        return None;
    }

    /// <summary>Free slots of home peers in <paramref name="shard"/>'s tree (what fostering can borrow from it).</summary>
    private long FreeHomeSlots(int shard)
    {
        long free = _forest.TotalCap(shard) - _peerCount;
        free -= _forest.Cap(Source, shard) - _forest.ChildCount(Source, shard);
        foreach (var parent in _fosterParents![shard])
        {
            if (_forest.IsAlive(parent))
            {
                free -= _forest.Cap(parent, shard) - _forest.ChildCount(parent, shard);
            }
        }

        return free;
    }

    private void Foster(int node, int shard)
    {
        var parent = FindFosterParent(shard);
        Lend(parent, shard);
        _forest.Attach(node, parent, shard);
    }

    /// <summary>Moves one unit of <paramref name="parent"/>'s budget from its home tree to <paramref name="shard"/>'s.</summary>
    private void Lend(int parent, int shard)
    {
        var home = _homes!.HomeOf(parent);
        if (_forest.Cap(parent, shard) == 0)
        {
            _fosterParents![shard].Add(parent);
        }

        SetCap(parent, home, _forest.Cap(parent, home) - 1);
        SetCap(parent, shard, _forest.Cap(parent, shard) + 1);
    }

    /// <summary>
    /// Takes <paramref name="peer"/>, a pure viewer now (budget 0, no home), off the foster lists,
    /// where a foster parent whose fostered child moved elsewhere may still be: ReleaseFosters
    /// must not give units back to a home it no longer has (home -1, an index out of range).
    /// </summary>
    private void ForgetFosterParent(int peer)
    {
        foreach (var parents in _fosterParents ?? [])
        {
            parents.Remove(peer);
        }
    }

    /// <summary>Moves fostered children to free slots of their own tree and gives the units back home.</summary>
    private void ReleaseFosters()
    {
        for (var s = 0; s < ShardCount; s++)
        {
            var parents = _fosterParents![s];
            for (var j = parents.Count - 1; j >= 0; j--)
            {
                var parent = parents[j];
                if (_forest.IsAlive(parent) && !Unfoster(parent, s))
                {
                    continue;
                }

                parents.RemoveAt(j);
            }
        }
    }

    /// <summary>Returns true when <paramref name="parent"/> no longer fosters anyone in <paramref name="shard"/>.</summary>
    private bool Unfoster(int parent, int shard)
    {
        var children = new List<int>();
        for (var c = _forest.FirstChild(parent, shard); c != None; c = _forest.NextSibling(c, shard))
        {
            children.Add(c);
        }

        // Closed to newcomers first, so that the free slots found below are the tree's own.
        SetCap(parent, shard, 0);
        var kept = 0;
        foreach (var child in children)
        {
            var open = _forest.FindOpen(shard, requireAttached: false);
            _forest.Detach(child, shard);
            if (open == None || !_forest.IsAttached(open, shard))
            {
                _forest.Attach(child, parent, shard);
                kept++;
                continue;
            }

            _forest.Attach(child, open, shard);
            _moves.Add(new Reattachment(child, shard, open));
        }

        SetCap(parent, shard, kept);
        var home = _homes!.HomeOf(parent);
        var lent = 0;
        for (var s = 0; s < ShardCount; s++)
        {
            lent += s == home ? 0 : _forest.Cap(parent, s);
        }

        SetCap(parent, home, _forest.Budget(parent) - lent);
        return kept == 0;
    }

    /// <summary>
    /// Re-homes leaf peers from the tree with the most capacity to the one with the least while that
    /// narrows the gap. A leaf has no children in its home tree, so only its own parent changes in
    /// the new home tree (where it is placed like a joiner).
    /// </summary>
    private void RebalanceHomes()
    {
        var homes = _homes!;
        while (true)
        {
            var (rich, poor) = homes.Extremes();
            var gap = homes.Capacity(rich) - homes.Capacity(poor);
            var leaf = gap > 0 ? _forest.FindDeepLeaf(rich, 1, 1) : None;
            if (leaf == None)
            {
                return;
            }

            // Move when it narrows the gap, or when the poorer tree cannot even hold every peer
            // and the richer one can spare the budget; never a peer that is fostering.
            var budget = _forest.Budget(leaf);
            var needed = homes.Capacity(poor) < _peerCount && homes.Capacity(rich) - budget >= _peerCount;
            if ((budget >= gap && !needed) || _forest.Cap(leaf, rich) != budget || _forest.ChildCount(leaf, poor) > 0)
            {
                return;
            }

            homes.Release(leaf, budget);
            homes.Set(leaf, poor, budget);
            SetCap(leaf, rich, 0);
            _forest.Detach(leaf, poor);
            SetCap(leaf, poor, budget);
            _placement.Place(leaf, poor, _moves);
            _moves.Add(new Reattachment(leaf, poor, _forest.Parent(leaf, poor)));
        }
    }
}

namespace ShardStream.Topology;

/// <summary>
/// Carrying a planned rebuild by regions out (docs/topology.md, "The rebuild by regions"): tree
/// by tree, top down, without letting a tree grow deeper than it was or than the plan makes it
/// while the moves are under way.
/// </summary>
public sealed partial class Planner
{
    /// <summary>
    /// Passes over a tree's nodes that were put off (no move that keeps the tree within its depth
    /// limit) after its first pass in the plan's order, at the same limit.
    /// </summary>
    public const int RebuildRetryPasses = 2;

    /// <summary>
    /// Passes after <see cref="RebuildRetryPasses"/> while nodes are still put off, each allowing
    /// the tree one level more than the one before. Every pass keeps the plan valid: within caps and
    /// acyclic. Since 2026-12-06 they run only within the plan's depth bound (<see cref="RebuildPlan.DepthBound"/>: one level more than the
    /// best the caps allow, or the tree's depth when planned); the nodes still put off then stay
    /// where they are. Without that, a binary tree of 3,000 peers (seed 1, its third rebuild) went
    /// to blind + 2 though its plan was within blind + 1. (Until then a last pass moved what was
    /// left however deep, a node taking a full parent's child that is above it under itself.)
    /// </summary>
    public const int RebuildSlackPasses = 3;

    private RebuildPlan? _carried;
    private int _carryPass;
    private int _carryLimit;
    private int _carryBase;
    private int _carrySaved;
    private int _carryNeed;
    private int _exchangeMoves;
    private int[] _carryRetry = [];
    private readonly List<int> _carryLater = [];
    private readonly Stack<(int Node, int Height)> _heightWalk = new();
    private readonly List<int> _swapA = [];
    private readonly List<int> _swapB = [];
    private readonly List<int> _requeue = [];
    private readonly List<int> _keepA = [];
    private readonly List<int> _keepB = [];

    /// <summary>
    /// Moves at most <paramref name="maxMoves"/> (peer, shard) edges of the rebuild under way
    /// (<see cref="AdoptRebuild"/>; a step that needs more: below): tree by tree, top down (a node's new parent is in place before
    /// it), each node whose parent differs moves under its new one with its subtree; when that
    /// parent is full, one of its children that is not yet in place takes the moving node's old
    /// place (two Moves). No move may take the tree deeper than its depth limit (the deeper of the
    /// tree when its turn came and the planned tree): where a move or that exchange would (a node
    /// with a tall subtree going down, or a child with one going to the node's deep old place), the
    /// child goes under a free slot shallow enough instead, or the node and the child exchange
    /// places, each taking the other's children (2 Moves and one per child moved; a child already
    /// in place that would then be too deep goes with the place and is moved back later), or the
    /// node's tall children not in place go to such free slots first; where none fits, the node is
    /// put off to a later pass (<see cref="RebuildRetryPasses"/>, <see cref="RebuildSlackPasses"/>). A move
    /// whose node or new parent is gone, or whose new parent would be in the node's own subtree
    /// (joins, leaves and repairs change the plan meanwhile, and since it was planned), is skipped;
    /// no node goes over its cap. Empty with no rebuild under way. A rebuild under way goes on when
    /// leaves take the overlay below <see cref="PlannerOptions.RebuildMinPeers"/>, which gates planning only.
    /// A step that needs more moves than <paramref name="maxMoves"/> (an exchange of places, a swap
    /// under a cap of 1 or 2) waits: the calls save their unused moves for it until they add up,
    /// so a call may move more than the cap (at most the cap and that step), but the moves over the
    /// calls stay within the cap times the calls. Without that, such a step was never made, and a
    /// small overlay's trees ran up to three levels deeper while a rebuild was under way. A planned
    /// edge to a parent the node must avoid (<see cref="DropEdge"/>) is skipped, and a node a step
    /// displaced under such a parent is re-placed at the end of the call, as after a join.
    /// </summary>
    /// <param name="maxMoves">The cap of this call: at most this many (peer, shard) edges move in it, but for one step the calls before it saved moves for.</param>
    /// <returns>Every (peer, shard, new parent) change, already applied.</returns>
    public IReadOnlyList<Reattachment> CarryOutRebuild(int maxMoves)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxMoves);
        BeginMoves();
        // The fewest peers (Options.RebuildMinPeers) gate planning only: a rebuild under way when
        // leaves take the overlay below them is carried out to its end, what no longer fits skipped.
        // Left standing, it would stop the coordinator's leaf moves too (they run only with no
        // rebuild under way) for as long as the overlay stayed that small.
        if (_rebuild is not { } plan || _latency is null || _pristine || maxMoves == 0)
        {
            return [];
        }

        if (!ReferenceEquals(plan, _carried))
        {
            _carried = plan;
            _carrySaved = 0;
            StartTree(plan);
        }

        // What this call may move: its cap, and what the calls before it left unused while they
        // waited for a step that needs more moves than the cap (saved for it: without them, such
        // a step never fits a call, and its node is put off until the tree may grow deeper).
        var budget = maxMoves + _carrySaved;
        _carrySaved = 0;
        var moved = 0;
        while (moved < budget && plan.Shard < ShardCount)
        {
            var order = _carryPass == 0 ? plan.Order[plan.Shard] : _carryRetry;
            if (plan.At >= order.Length)
            {
                if (_carryLater.Count > 0 && _carryPass < RebuildRetryPasses + RebuildSlackPasses && CarryLimitOf(_carryPass + 1) <= BoundOf(plan))
                {
                    _carryRetry = [.. _carryLater];
                    _carryLater.Clear();
                    _carryPass++;
                    _carryLimit = CarryLimitOf(_carryPass);
                }
                else
                {
                    plan.Shard++;
                    StartTree(plan);
                }

                plan.At = 0;
                continue;
            }

            var node = order[plan.At];
            var target = plan.Target[plan.Shard][node];
            var step = MoveTowards(node, target, plan.Shard, plan);
            if (step == -1)
            {
                // A step needs more moves than are left: the next call takes it up again, and when
                // it needs more than the cap, with this call's unused moves saved for it.
                _carrySaved = _carryNeed > maxMoves ? budget - moved : 0;
                break;
            }

            plan.At++;
            if (step == -2)
            {
                _carryLater.Add(node);
            }
            else
            {
                moved += step;
            }
        }

        if (plan.Shard >= ShardCount)
        {
            _rebuild = null;
            _carried = null;
            _rebuildPause = RebuildPauseCalls;
            _rebuildsDone++;
        }

        // A node another moved displaced (an exchange of places, a tall child parked) may have
        // landed under a parent it must avoid: re-placed, as after a join or leave.
        KeepAvoidedEdgesOut();
        return Summarize(_moves, []);

        // Returns the Moves made (0: nothing to do, or skipped), -1 when a step needs more moves
        // than this call has left (Wait), -2 when the node is put off to a later pass.
        int MoveTowards(int node, int target, int shard, RebuildPlan plan)
        {
            if (!_forest.IsAlive(node) || !_forest.IsAttached(node, shard) || (target != Source && (!_forest.IsAlive(target) || !_forest.IsAttached(target, shard))))
            {
                return 0;
            }

            var parent = _forest.Parent(node, shard);
            if (parent == target || _avoided.Contains((node, target)))
            {
                // In place, or a parent it must avoid (an edge taken out of the plan since the
                // snapshot, or that the rebuild's planning chose anyway): skipped.
                return 0;
            }

            // The new parent must not hang below the node (the plan changed since it was planned,
            // or its parent was put off): later, or skipped.
            for (var up = target; up != None; up = _forest.Parent(up, shard))
            {
                if (up == node)
                {
                    return -2;
                }
            }

            // How tall a subtree may be that hangs at a depth, within the limit.
            var below = _carryLimit - _forest.Depth(target, shard) - 1;
            var fits = HeightWithin(node, shard, below) <= below;
            if (_forest.HasFreeSlot(target, shard))
            {
                if (!fits)
                {
                    // Its tall children not yet in place go elsewhere first, if they find room.
                    var parked = ParkTallChildren(node, target, shard, plan, below - 1, budget - moved - 1, out var all);
                    if (parked == -1)
                    {
                        return Wait(_swapA.Count + 1);
                    }

                    moved += parked;
                    if (!all || HeightWithin(node, shard, below) > below)
                    {
                        return -2;
                    }

                    _forest.Detach(node, shard);
                    _forest.Attach(node, target, shard);
                    _moves.Add(new Reattachment(node, shard, target));
                    return 1;
                }

                _forest.Detach(node, shard);
                _forest.Attach(node, target, shard);
                _moves.Add(new Reattachment(node, shard, target));
                return 1;
            }

            // A swap takes up to 3 moves: under a cap of fewer (--latency-moves 1 or 2), the calls
            // save their moves for it.
            if (budget - moved < 3)
            {
                return Wait(3);
            }

            if (!fits)
            {
                // Too tall to go down there: it exchanges places with a child of the new parent not
                // yet in place, or its tall children not yet in place go elsewhere first.
                for (var child = _forest.FirstChild(target, shard); child != None; child = _forest.NextSibling(child, shard))
                {
                    var step = plan.Target[shard].Length > child && plan.Target[shard][child] == target ? 0 : ExchangePlaces(node, child, target, parent, shard, plan, budget - moved);
                    if (step == -1)
                    {
                        return Wait(_exchangeMoves);
                    }

                    if (step != 0)
                    {
                        return step;
                    }
                }

                var parked = ParkTallChildren(node, target, shard, plan, below - 1, budget - moved - 3, out var all);
                if (parked == -1)
                {
                    return Wait(_swapA.Count + 3);
                }

                moved += parked;
                if (!all || HeightWithin(node, shard, below) > below)
                {
                    return -2;
                }

                fits = true;
            }

            // Full: a child of the new parent not yet in place takes the node's old place, when it
            // is not above the node (then the node's old parent is not in its subtree either) and
            // its subtree fits there.
            var belowOld = _carryLimit - _forest.Depth(node, shard);
            for (var child = _forest.FirstChild(target, shard); child != None; child = _forest.NextSibling(child, shard))
            {
                if (plan.Target[shard].Length > child && plan.Target[shard][child] == target)
                {
                    continue;
                }

                var above = false;
                for (var up = parent; up != None && !above; up = _forest.Parent(up, shard))
                {
                    above = up == child;
                }

                if (!above && fits && HeightWithin(child, shard, belowOld) <= belowOld)
                {
                    ExchangeParents(node, target, child, parent, shard);
                    return 2;
                }
            }

            if (fits)
            {
                for (var child = _forest.FirstChild(target, shard); child != None; child = _forest.NextSibling(child, shard))
                {
                    if ((plan.Target[shard].Length > child && plan.Target[shard][child] == target) || IsBelow(node, child, shard))
                    {
                        continue;
                    }

                    var open = OpenSlotFor(child, shard, node, target);
                    if (open != None)
                    {
                        ExchangeParents(node, target, child, open, shard);
                        return 2;
                    }
                }
            }

            // Too deep either way: the node and a child not yet in place exchange places and
            // children, so every other node keeps its depth.
            for (var child = _forest.FirstChild(target, shard); child != None; child = _forest.NextSibling(child, shard))
            {
                if (plan.Target[shard].Length > child && plan.Target[shard][child] == target)
                {
                    continue;
                }

                var step = ExchangePlaces(node, child, target, parent, shard, plan, budget - moved);
                if (step == -1)
                {
                    return Wait(_exchangeMoves);
                }

                if (step != 0)
                {
                    return step;
                }
            }

            return -2;
        }

        int Wait(int need)
        {
            _carryNeed = need;
            return -1;
        }
    }

    /// <summary>
    /// The depth limit of pass <paramref name="pass"/> of the tree being carried out: that of its
    /// turn for the first pass and the retries, a level more for each slack pass after them.
    /// </summary>
    private int CarryLimitOf(int pass) => _carryBase + Math.Max(0, pass - RebuildRetryPasses);

    /// <summary>
    /// The deepest the tree being carried out may go (<see cref="RebuildPlan.DepthBound"/>, or its
    /// limit at its turn when that is deeper): the passes after the retries run only while they
    /// stay within it, and the nodes still put off then stay where they are.
    /// </summary>
    private int BoundOf(RebuildPlan plan) =>
        Math.Max(plan.DepthBound[plan.Shard], _carryBase);

    /// <summary>At the start of a tree's turn: the first pass, and its depth limit (the deeper of the tree now and the planned tree).</summary>
    private void StartTree(RebuildPlan plan)
    {
        _carryPass = 0;
        _carryLater.Clear();
        if (plan.Shard >= ShardCount)
        {
            return;
        }

        _carryBase = Math.Max(plan.PlannedDepth[plan.Shard], _forest.MaxDepth(plan.Shard));
        _carryLimit = _carryBase;
    }

    /// <summary>
    /// <paramref name="node"/> (under <paramref name="parent"/>) goes under <paramref name="target"/>
    /// in <paramref name="child"/>'s place, and <paramref name="child"/> in the node's: each takes
    /// the other's children but those already in place under it, so no other node changes depth.
    /// Returns the Moves made (2 and one per child moved: at most 2 and the two caps); 0 when the
    /// nodes' caps do not allow it, -1 when it needs more than <paramref name="left"/> (how many:
    /// <c>_exchangeMoves</c>).
    /// </summary>
    private int ExchangePlaces(int node, int child, int target, int parent, int shard, RebuildPlan plan, int left)
    {
        var planned = plan.Target[shard];
        bool InPlace(int n, int p) => planned.Length > n && planned[n] == p;

        // The child's child on the way down to the node, if the child is above it: it must not
        // stay with the child (a cycle).
        var way = None;
        for (var up = node; up != None && way == None; up = _forest.Parent(up, shard))
        {
            way = _forest.Parent(up, shard) == child ? up : None;
        }

        // The child takes the node's old slot; when the node was its child, it goes under the node.
        // A child already in place stays with its parent when its subtree fits below the parent's
        // new place; else it goes with the place, and comes back in a later pass.
        var childUnderNode = parent == child;
        var nodeBelow = _carryLimit - _forest.Depth(target, shard) - 2;
        var childBelow = _carryLimit - (childUnderNode ? _forest.Depth(target, shard) + 2 : _forest.Depth(node, shard)) - 1;
        _swapA.Clear(); // the node's children that go to the child
        _swapB.Clear(); // the child's children that go to the node
        _requeue.Clear();
        _keepA.Clear();
        _keepB.Clear();
        Sort(node, nodeBelow, None, _keepA, _swapA);
        Sort(child, childBelow, way, _keepB, _swapB);

        // Where one would have more children than its cap, those it keeps go with the place too.
        GiveUpOverCap(_keepA, _swapA, _swapB.Count + (childUnderNode ? 1 : 0), _forest.Cap(node, shard));
        GiveUpOverCap(_keepB, _swapB, _swapA.Count, _forest.Cap(child, shard));

        var nodeChildren = _keepA.Count + _swapB.Count + (childUnderNode ? 1 : 0);
        var childChildren = _keepB.Count + _swapA.Count;
        var moves = 2 + _swapA.Count + _swapB.Count;
        if (nodeChildren > _forest.Cap(node, shard) || childChildren > _forest.Cap(child, shard))
        {
            return 0;
        }

        if (moves > left)
        {
            _exchangeMoves = moves;
            return -1;
        }

        _forest.Detach(node, shard);
        _forest.Detach(child, shard);
        foreach (var c in _swapA)
        {
            _forest.Detach(c, shard);
        }

        foreach (var c in _swapB)
        {
            _forest.Detach(c, shard);
        }

        var childParent = childUnderNode ? node : parent;
        _forest.Attach(node, target, shard);
        _forest.Attach(child, childParent, shard);
        _moves.Add(new Reattachment(node, shard, target));
        _moves.Add(new Reattachment(child, shard, childParent));
        foreach (var c in _swapB)
        {
            _forest.Attach(c, node, shard);
            _moves.Add(new Reattachment(c, shard, node));
        }

        foreach (var c in _swapA)
        {
            _forest.Attach(c, child, shard);
            _moves.Add(new Reattachment(c, shard, child));
        }

        _carryLater.AddRange(_requeue);
        return moves;

        // The children of `of` other than the node: kept when in place and their subtree fits
        // `below` levels under `of`'s new place, else going with the place (and carried out
        // again later when they were in place); `never` never stays (a cycle).
        void Sort(int of, int below, int never, List<int> keep, List<int> swap)
        {
            for (var c = _forest.FirstChild(of, shard); c != None; c = _forest.NextSibling(c, shard))
            {
                if (c == node)
                {
                    continue;
                }

                if (!InPlace(c, of) || c == never)
                {
                    swap.Add(c);
                }
                else if (HeightWithin(c, shard, below) <= below)
                {
                    keep.Add(c);
                }
                else
                {
                    swap.Add(c);
                    _requeue.Add(c);
                }
            }
        }

        void GiveUpOverCap(List<int> keep, List<int> swap, int others, int cap)
        {
            while (keep.Count > 0 && keep.Count + others > cap)
            {
                swap.Add(keep[^1]);
                _requeue.Add(keep[^1]);
                keep.RemoveAt(keep.Count - 1);
            }
        }
    }

    /// <summary>
    /// A node of <paramref name="shard"/> with a free slot, not in <paramref name="node"/>'s subtree
    /// nor <paramref name="not"/> or <paramref name="notEither"/>, shallow enough for the node's subtree to hang there within the
    /// depth limit; <see cref="None"/> if none.
    /// </summary>
    private int OpenSlotFor(int node, int shard, int not, int notEither)
    {
        var room = _carryLimit - 1 - HeightWithin(node, shard, _carryLimit);
        return room < 0 ? None : _forest.FindOpenWhere(shard, room, o => o != not && o != notEither && o != node && !IsBelow(o, node, shard) && _forest.IsAttached(o, shard));
    }

    /// <summary>
    /// Before <paramref name="node"/> goes down: each of its children not yet in place whose
    /// subtree is taller than <paramref name="height"/> goes under a free slot elsewhere where it
    /// fits (<see cref="OpenSlotFor"/>; not <paramref name="target"/>'s, which the node needs), at
    /// most <paramref name="left"/> of them. Returns the Moves
    /// made; <paramref name="all"/> tells whether every such child found a place.
    /// </summary>
    private int ParkTallChildren(int node, int target, int shard, RebuildPlan plan, int height, int left, out bool all)
    {
        _swapA.Clear();
        all = false;
        for (var c = _forest.FirstChild(node, shard); c != None; c = _forest.NextSibling(c, shard))
        {
            if (HeightWithin(c, shard, height) > height)
            {
                if (plan.Target[shard].Length > c && plan.Target[shard][c] == node)
                {
                    return 0; // in place: it goes down with the node or not at all
                }

                _swapA.Add(c);
            }
        }

        if (_swapA.Count > left)
        {
            return -1;
        }

        var parked = 0;
        foreach (var c in _swapA)
        {
            var open = OpenSlotFor(c, shard, node, target);
            if (open == None)
            {
                return parked;
            }

            _forest.Detach(c, shard);
            _forest.Attach(c, open, shard);
            _moves.Add(new Reattachment(c, shard, open));
            parked++;
        }

        all = true;
        return parked;
    }

    /// <summary>How many levels hang below <paramref name="node"/> in <paramref name="shard"/> (0 with no children), or <paramref name="bound"/> + 1 when more than <paramref name="bound"/>: the walk goes no deeper.</summary>
    private int HeightWithin(int node, int shard, int bound)
    {
        var height = 0;
        _heightWalk.Clear();
        _heightWalk.Push((node, 0));
        while (_heightWalk.Count > 0)
        {
            var (at, h) = _heightWalk.Pop();
            height = Math.Max(height, h);
            if (height > bound)
            {
                return bound + 1;
            }

            for (var c = _forest.FirstChild(at, shard); c != None; c = _forest.NextSibling(c, shard))
            {
                _heightWalk.Push((c, h + 1));
            }
        }

        return height;
    }
}

namespace ShardStream.Topology;

/// <summary>
/// The seed's 1/2/1.5 tessellation for K = 2, as a self-similar block. A block root R owns six
/// positions: P1 = both shards from R; P2 = both from P1; P3 = shard 0 from R, shard 1 from P1;
/// P4 = both from P2; P5 = shard 0 from P2, shard 1 from P3; P6 = both from P3. P4, P5 and P6
/// root blocks of their own. Every node then sends three half-streams (roots and P2 send two in
/// shard 0 and one in shard 1; P1 and P3 the reverse), and layers grow 1, 2, 3, 3, 6, 9, 9, ...
/// <para>
/// Positions are ids of their own (block * 8 + index; position 0 is the source), occupied by at
/// most one peer. A position opens once its parents are occupied; joiners take the shallowest
/// open position (by the deeper of its two shard depths), first come first served. When peers
/// leave, a vacated position that still has live nodes below it is taken over by the deepest
/// peer that feeds nobody (it changes role, capacities included), so the shape stays the pattern
/// and nobody below moves deeper; other vacated positions simply reopen for the next joiners.
/// </para>
/// </summary>
internal sealed class TessellationPattern
{
    private const int None = Planner.None;
    private const int SourcePosition = 0;

    private readonly ShardForest _forest;
    private readonly DepthIndex _open = new();
    private readonly DepthIndex _filled = new();
    private readonly List<int> _vacated = [];
    private readonly HashSet<int> _needsFill = [];
    private int[] _occupant = new int[8 * 256];
    private int[] _depth = new int[8 * 256];
    private int[] _childBlock = new int[8 * 256];
    private bool[] _queued = new bool[8 * 256];
    private int[] _blockRoot = new int[256];
    private int[] _positionOf = new int[1024];
    private int _blockCount;

    public TessellationPattern(ShardForest forest)
    {
        _forest = forest;
        NewBlock(SourcePosition);
        _occupant[SourcePosition] = Planner.Source;
        Open(1);
    }

    /// <summary>The capacities (shard 0, shard 1) the role of a position needs.</summary>
    public static (int Shard0, int Shard1) RoleCaps(int position) => (position & 7) is 1 or 3 ? (1, 2) : (2, 1);

    /// <summary>The depth of the deepest position occupied now (the deeper of its two shard depths).</summary>
    public int MaxNodeDepth => Math.Max(_forest.MaxDepth(0), _forest.MaxDepth(1));

    /// <summary>Depth of the tessellation holding <paramref name="peers"/> peers with no hole.</summary>
    public static int ExactDepth(int peers)
    {
        // Layers 1, 2, 3, then each layer is three times the one three levels up.
        Span<long> last3 = [1, 2, 3];
        long total = 0;
        var depth = 0;
        while (total < peers)
        {
            var layer = depth < 3 ? last3[depth] : last3[depth % 3] * 3;
            if (depth >= 3)
            {
                last3[depth % 3] = layer;
            }

            total += layer;
            depth++;
        }

        return depth;
    }

    /// <summary>Removes and returns the shallowest open position.</summary>
    public int TakeOpenPosition()
    {
        var position = PeekOpenPosition();
        if (position == None)
        {
            throw new InvalidOperationException("The tessellation always has an open position.");
        }

        _open.At(_depth[position])!.PopFront();
        _queued[position] = false;
        return position;
    }

    /// <summary>
    /// Puts <paramref name="node"/> (attached nowhere, no children) at <paramref name="position"/>:
    /// role capacities, parents in both shards, and the live nodes that hang below the position.
    /// </summary>
    public void Fill(int node, int position, List<Reattachment> moves)
    {
        var (cap0, cap1) = RoleCaps(position);
        var extra = _forest.Budget(node) - 3;
        _forest.SetCap(node, 0, cap0 + ((extra + 1) / 2));
        _forest.SetCap(node, 1, cap1 + (extra / 2));
        _forest.Attach(node, _occupant[ParentPosition(position, 0)], 0);
        _forest.Attach(node, _occupant[ParentPosition(position, 1)], 1);
        EnsureNode(node);
        _occupant[position] = node;
        _positionOf[node] = position;
        _filled.Push(_depth[position], position);

        if ((position & 7) is 4 or 5 or 6 && _childBlock[position] == None)
        {
            NewBlock(position);
        }

        Span<(int Position, int Shard)> dependents = stackalloc (int, int)[3];
        Dependents(position, dependents);
        foreach (var (dependent, shard) in dependents)
        {
            if (dependent == None)
            {
                continue;
            }

            var child = _occupant[dependent];
            if (child == None)
            {
                Open(dependent);
            }
            else if (_forest.Parent(child, shard) != node)
            {
                _forest.Detach(child, shard);
                _forest.Attach(child, node, shard);
                moves.Add(new Reattachment(child, shard, node));
            }
        }
    }

    /// <summary>
    /// Repairs after <paramref name="dead"/> (already killed) left: their positions are vacated;
    /// those with live nodes below are taken over, top-down, by the deepest peers that feed nobody.
    /// Then, while the tree is more than one level deeper than an exact tessellation of the
    /// survivors, deepest such peers move up into the shallowest open positions.
    /// </summary>
    public void Repair(IReadOnlyList<int> dead, int peerCount, List<Reattachment> moves)
    {
        _vacated.Clear();
        foreach (var node in dead)
        {
            var position = _positionOf[node];
            _occupant[position] = None;
            _vacated.Add(position);
            _forest.Detach(node, 0);
            _forest.Detach(node, 1);
        }

        // Deepest first, so that a vacated position knows whether anything live hangs below it.
        _vacated.Sort((a, b) => _depth[b].CompareTo(_depth[a]));
        _needsFill.Clear();
        Span<(int Position, int Shard)> dependents = stackalloc (int, int)[3];
        foreach (var position in _vacated)
        {
            Dependents(position, dependents);
            foreach (var (dependent, _) in dependents)
            {
                if (dependent != None && (_occupant[dependent] != None || _needsFill.Contains(dependent)))
                {
                    _needsFill.Add(position);
                    break;
                }
            }
        }

        for (var j = _vacated.Count - 1; j >= 0; j--)
        {
            var position = _vacated[j];
            if (_needsFill.Contains(position) && _occupant[position] == None)
            {
                // If anything live is still below, the deepest live node feeds nobody and is
                // deeper: a spare exists. If none does, an earlier takeover already emptied it.
                var spare = FindSparePeer(_depth[position] + 1);
                if (spare != None)
                {
                    MoveTo(spare, position, moves);
                    continue;
                }
            }

            Open(position);
        }

        while (MaxNodeDepth > ExactDepth(peerCount) + 1)
        {
            var open = PeekOpenPosition();
            var deepest = MaxNodeDepth;
            if (open == None || _depth[open] > deepest - 2)
            {
                return;
            }

            var spare = FindSparePeer(deepest);
            if (spare == None)
            {
                return;
            }

            _open.At(_depth[open])!.PopFront();
            _queued[open] = false;
            MoveTo(spare, open, moves);
        }
    }

    private void MoveTo(int node, int position, List<Reattachment> moves)
    {
        var old = _positionOf[node];
        _forest.Detach(node, 0);
        _forest.Detach(node, 1);
        _occupant[old] = None;
        Fill(node, position, moves);
        moves.Add(new Reattachment(node, 0, _forest.Parent(node, 0)));
        moves.Add(new Reattachment(node, 1, _forest.Parent(node, 1)));
        Open(old);
    }

    /// <summary>The deepest live peer at depth >= <paramref name="minDepth"/> with nothing below it in either shard.</summary>
    private int FindSparePeer(int minDepth)
    {
        for (var d = Math.Min(MaxNodeDepth, _filled.Limit - 1); d >= Math.Max(minDepth, 1); d--)
        {
            var queue = _filled.At(d);
            if (queue is null)
            {
                continue;
            }

            while (!queue.IsEmpty && !IsOccupiedBySame(queue.Back))
            {
                queue.PopBack();
            }

            for (var j = queue.Count - 1; j >= 0; j--)
            {
                var node = _occupant[queue[j]];
                if (IsOccupiedBySame(queue[j]) && _forest.ChildCount(node, 0) == 0 && _forest.ChildCount(node, 1) == 0)
                {
                    return node;
                }
            }
        }

        return None;
    }

    private bool IsOccupiedBySame(int position)
    {
        var node = _occupant[position];
        return node != None && _forest.IsAlive(node) && _positionOf[node] == position;
    }

    private int PeekOpenPosition()
    {
        for (var d = _open.Lowest; d < _open.Limit; d++)
        {
            var queue = _open.At(d);
            while (queue is not null && !queue.IsEmpty)
            {
                var position = queue.Front;
                if (_occupant[position] == None && ParentsOccupied(position))
                {
                    return position;
                }

                _queued[position] = false;
                queue.PopFront();
            }

            if (d == _open.Lowest)
            {
                _open.Lowest = d + 1;
            }
        }

        return None;
    }

    private void Open(int position)
    {
        if (_queued[position] || _occupant[position] != None || !ParentsOccupied(position))
        {
            return;
        }

        var p0 = _occupant[ParentPosition(position, 0)];
        var p1 = _occupant[ParentPosition(position, 1)];
        _depth[position] = Math.Max(_forest.Depth(p0, 0), _forest.Depth(p1, 1)) + 1;
        _queued[position] = true;
        _open.Push(_depth[position], position);
    }

    private bool ParentsOccupied(int position) =>
        _occupant[ParentPosition(position, 0)] != None && _occupant[ParentPosition(position, 1)] != None;

    /// <summary>The position <paramref name="position"/> receives <paramref name="shard"/> from.</summary>
    private int ParentPosition(int position, int shard)
    {
        var block = position >> 3;
        var root = _blockRoot[block];
        var p1 = (block << 3) | 1;
        return (position & 7) switch
        {
            1 => root,
            2 => p1,
            3 => shard == 0 ? root : p1,
            4 => (block << 3) | 2,
            5 => shard == 0 ? (block << 3) | 2 : (block << 3) | 3,
            _ => (block << 3) | 3,
        };
    }

    /// <summary>The (position, shard) edges that leave <paramref name="position"/>; None where the block does not exist yet.</summary>
    private void Dependents(int position, Span<(int Position, int Shard)> result)
    {
        var block = position >> 3;
        var index = position & 7;
        if (index is 1 or 2 or 3)
        {
            // P1 feeds P2 (both) and P3 (shard 1); P2 feeds P4 (both) and P5 (shard 0); P3 feeds P6 (both) and P5 (shard 1).
            // Listed in the order they open: P2 before P3, P4 before P5 before P6 (the diagram's ids).
            var full = (block << 3) | (index == 1 ? 2 : index == 2 ? 4 : 6);
            var half = (block << 3) | (index == 1 ? 3 : 5);
            var halfEdge = (half, index == 2 ? 0 : 1);
            if (index == 3)
            {
                result[0] = halfEdge;
                result[1] = (full, 0);
                result[2] = (full, 1);
            }
            else
            {
                result[0] = (full, 0);
                result[1] = (full, 1);
                result[2] = halfEdge;
            }

            return;
        }

        // A block root feeds its block's P1 (both) and P3 (shard 0).
        var child = _childBlock[position];
        if (child == None)
        {
            result[0] = result[1] = result[2] = (None, 0);
            return;
        }

        result[0] = ((child << 3) | 1, 0);
        result[1] = ((child << 3) | 1, 1);
        result[2] = ((child << 3) | 3, 0);
    }

    private void NewBlock(int rootPosition)
    {
        var block = _blockCount++;
        if (block >= _blockRoot.Length)
        {
            Array.Resize(ref _blockRoot, _blockRoot.Length * 2);
        }

        var size = (block + 1) * 8;
        if (size > _occupant.Length)
        {
            var length = Math.Max(size, _occupant.Length * 2);
            var start = _occupant.Length;
            Array.Resize(ref _occupant, length);
            Array.Resize(ref _depth, length);
            Array.Resize(ref _childBlock, length);
            Array.Resize(ref _queued, length);
            Array.Fill(_occupant, None, start, length - start);
            Array.Fill(_childBlock, None, start, length - start);
        }

        if (block == 0)
        {
            Array.Fill(_occupant, None);
            Array.Fill(_childBlock, None);
        }

        _blockRoot[block] = rootPosition;
        _childBlock[rootPosition] = block;
    }

    private void EnsureNode(int node)
    {
        if (node >= _positionOf.Length)
        {
            Array.Resize(ref _positionOf, Math.Max(node + 1, _positionOf.Length * 2));
        }
    }
}

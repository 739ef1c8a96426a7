namespace ShardStream.Topology;

/// <summary>
/// The seed's 1/2/1.5 tessellation for K = 2, as a self-similar block. A block root R owns six
/// positions: P1 = both shards from R; P2 = both from P1; P3 = shard 0 from R, shard 1 from P1;
/// P4 = both from P2; P5 = shard 0 from P2, shard 1 from P3; P6 = both from P3. P4, P5 and P6
/// root blocks of their own. Every node then sends three half-streams (roots and P2 send two in
/// shard 0 and one in shard 1; P1 and P3 the reverse), and layers grow 1, 2, 3, 3, 6, 9, 9, ...
/// Positions open once their parents exist and are filled shallowest first (by the deeper of the
/// two shard depths), first come first served within a depth.
/// </summary>
internal sealed class TessellationPattern
{
    private const int None = Planner.None;

    private readonly ShardForest _forest;
    private readonly DepthIndex _positions = new();

    // _members[root * 3 + j] is P(j+1) of root's block, for j = 0..2 (P4..P6 are roots themselves).
    private int[] _members = new int[3 * 1024];

    public TessellationPattern(ShardForest forest)
    {
        _forest = forest;
        OpenBlock(Planner.Source);
    }

    /// <summary>The capacities (shard 0, shard 1) the role of the next position needs.</summary>
    public static (int Shard0, int Shard1) RoleCaps(int index) => index is 1 or 3 ? (1, 2) : (2, 1);

    /// <summary>Takes the shallowest open position; encoded as root * 8 + index (1..6).</summary>
    public int TakeNextPosition()
    {
        for (var d = _positions.Lowest; d < _positions.Limit; d++)
        {
            var queue = _positions.At(d);
            if (queue is null || queue.IsEmpty)
            {
                _positions.Lowest = d + 1;
                continue;
            }

            var position = queue.Front;
            queue.PopFront();
            return position;
        }

        throw new InvalidOperationException("The tessellation always has an open position.");
    }

    /// <summary>Index (1..6) of an encoded position.</summary>
    public static int IndexOf(int position) => position & 7;

    /// <summary>Attaches <paramref name="node"/> at <paramref name="position"/> in both shards and opens the positions it enables.</summary>
    public void Fill(int node, int position)
    {
        var root = position >> 3;
        var index = position & 7;
        var (parent0, parent1) = Parents(root, index);
        _forest.Attach(node, parent0, 0);
        _forest.Attach(node, parent1, 1);
        switch (index)
        {
            case 1:
                _members[root * 3] = node;
                Open(root, 2);
                Open(root, 3);
                break;
            case 2:
                _members[(root * 3) + 1] = node;
                Open(root, 4);
                if (_members[(root * 3) + 2] != None)
                {
                    Open(root, 5);
                }

                break;
            case 3:
                _members[(root * 3) + 2] = node;

                // P5 before P6, so that ids follow the seed's diagram when nothing else interleaves.
                if (_members[(root * 3) + 1] != None)
                {
                    Open(root, 5);
                }

                Open(root, 6);
                break;
            default:
                OpenBlock(node);
                break;
        }
    }

    private (int Shard0, int Shard1) Parents(int root, int index)
    {
        var p1 = _members[root * 3];
        var p2 = _members[(root * 3) + 1];
        var p3 = _members[(root * 3) + 2];
        return index switch
        {
            1 => (root, root),
            2 => (p1, p1),
            3 => (root, p1),
            4 => (p2, p2),
            5 => (p2, p3),
            _ => (p3, p3),
        };
    }

    private void OpenBlock(int root)
    {
        if ((root * 3) + 3 > _members.Length)
        {
            Array.Resize(ref _members, Math.Max((root * 3) + 3, _members.Length * 2));
        }

        _members[root * 3] = None;
        _members[(root * 3) + 1] = None;
        _members[(root * 3) + 2] = None;
        Open(root, 1);
    }

    private void Open(int root, int index)
    {
        var (parent0, parent1) = Parents(root, index);
        var depth = Math.Max(_forest.Depth(parent0, 0), _forest.Depth(parent1, 1)) + 1;
        _positions.Push(depth, (root << 3) | index);
    }
}

namespace ShardStream.Topology;

/// <summary>Read-only questions about the current plan.</summary>
public sealed partial class Planner
{
    /// <summary>Live peer ids in ascending order (the source not included).</summary>
    public IEnumerable<int> Peers
    {
        get
        {
            for (var id = 1; id < _nextId; id++)
            {
                if (_forest.IsAlive(id))
                {
                    yield return id;
                }
            }
        }
    }

    /// <summary>
    /// Changes with every change to the plan (a join, a leave, a move, a dropped edge): a reader that
    /// saw this value before has seen this plan (the coordinator's page sends the trees again only then).
    /// </summary>
    public long Version => _forest.Version;

    /// <summary>True for the source and for live peers.</summary>
    public bool Contains(int node) => node >= 0 && node < _nextId && _forest.IsAlive(node);

    /// <summary>The node <paramref name="node"/> receives <paramref name="shard"/> from; <see cref="None"/> for the source.</summary>
    public int ParentOf(int node, int shard)
    {
        Check(node, shard);
        return _forest.Parent(node, shard);
    }

    /// <summary>Hops from the source in the tree of <paramref name="shard"/>; the source is at 0.</summary>
    public int DepthOf(int node, int shard)
    {
        Check(node, shard);
        return _forest.Depth(node, shard);
    }

    /// <summary>The depth of the deepest live peer in the tree of <paramref name="shard"/>.</summary>
    public int MaxDepth(int shard)
    {
        CheckShard(shard);
        return _forest.MaxDepth(shard);
    }

    /// <summary>Shard-streams <paramref name="node"/> may send; the source's is <see cref="PlannerOptions.SourceBudget"/>.</summary>
    public int Budget(int node)
    {
        Check(node, 0);
        return _forest.Budget(node);
    }

    /// <summary>Shard-streams <paramref name="node"/> sends now: its number of (child, shard) edges.</summary>
    public int UsedUnits(int node)
    {
        Check(node, 0);
        return _forest.Used(node);
    }

    /// <summary>The nodes that receive <paramref name="shard"/> from <paramref name="node"/>.</summary>
    public IEnumerable<int> ChildrenOf(int node, int shard)
    {
        Check(node, shard);
        return Walk(node, shard);

        IEnumerable<int> Walk(int parent, int s)
        {
            for (var c = _forest.FirstChild(parent, s); c != None; c = _forest.NextSibling(c, s))
            {
                yield return c;
            }
        }
    }

    /// <summary>The nodes that receive one shard or more from <paramref name="node"/>, each once.</summary>
    public IEnumerable<int> ChildrenInAnyShard(int node) => Enumerable.Range(0, ShardCount).SelectMany(s => ChildrenOf(node, s)).Distinct();

    /// <summary>Striped: the one shard the peer forwards (-1 for a pure viewer). -1 for the source and other topologies.</summary>
    public int HomeShard(int node)
    {
        Check(node, 0);
        return node == Source || _homes is null ? -1 : _homes.HomeOf(node);
    }

    /// <summary>
    /// The least depth the tree of <paramref name="shard"/> could have with the live peers'
    /// capacities in it (largest capacities nearest the source); int.MaxValue if they cannot hold
    /// every peer (striped while fostering).
    /// </summary>
    public int BestDepth(int shard)
    {
        CheckShard(shard);
        return _forest.BestDepth(shard, _peerCount);
    }

    /// <summary>How many live nodes sit at <paramref name="depth"/> in the tree of <paramref name="shard"/> (the source at 0).</summary>
    internal int CountAtDepth(int shard, int depth) => _forest.CountAt(shard, depth);

    /// <summary>Children <paramref name="node"/> may have in <paramref name="shard"/> under the policy.</summary>
    internal int CapacityIn(int node, int shard) => _forest.Cap(node, shard);

    /// <summary>Depth of an exact tessellation of the live peers (layers 1, 2, 3, 3, 6, 9...): the tessellated policy's own best.</summary>
    internal int ExactTessellationDepth => TessellationPattern.ExactDepth(_peerCount);

    /// <summary>True while the tessellated plan is still exactly the seed's pattern.</summary>
    internal bool IsExactPattern => _pristine;

    private void Check(int node, int shard)
    {
        if (!Contains(node))
        {
            throw new ArgumentException($"Node {node} is not in the plan.", nameof(node));
        }

        CheckShard(shard);
    }

    private void CheckShard(int shard)
    {
        if ((uint)shard >= (uint)ShardCount)
        {
            throw new ArgumentOutOfRangeException(nameof(shard), shard, $"Shard must be in 0..{ShardCount - 1}.");
        }
    }
}

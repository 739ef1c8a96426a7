namespace ShardStream.Topology;

/// <summary>
/// Home shards of the striped policy. A peer with upload budget is interior in exactly one shard
/// tree, its home, and gives all its budget to it; homes are dealt to keep the total capacity of
/// the K trees (source share + budgets of their home peers) as even as possible, which with equal
/// budgets is the SplitStream rule of about N/K interior peers per tree. Pure viewers (budget 0)
/// have no home.
/// </summary>
internal sealed class StripeHomes
{
    private readonly long[] _capacity;
    private int[] _home = new int[1024];

    public StripeHomes(int shardCount, Func<int, int> sourceShare)
    {
        _capacity = new long[shardCount];
        for (var s = 0; s < shardCount; s++)
        {
            _capacity[s] = sourceShare(s);
        }
    }

    /// <summary>Total capacity (shard-streams) the tree of <paramref name="shard"/> can send.</summary>
    public long Capacity(int shard) => _capacity[shard];

    public int HomeOf(int node) => node < _home.Length ? _home[node] : -1;

    /// <summary>The home a peer of <paramref name="budget"/> would get now: the tree with the least capacity.</summary>
    public int Choose(int budget)
    {
        if (budget == 0)
        {
            return -1;
        }

        var best = 0;
        for (var s = 1; s < _capacity.Length; s++)
        {
            if (_capacity[s] < _capacity[best])
            {
                best = s;
            }
        }

        return best;
    }

    public void Set(int node, int home, int budget)
    {
        if (node >= _home.Length)
        {
            Array.Resize(ref _home, Math.Max(node + 1, _home.Length * 2));
        }

        _home[node] = home;
        if (home >= 0)
        {
            _capacity[home] += budget;
        }
    }

    public void Release(int node, int budget)
    {
        var home = HomeOf(node);
        if (home >= 0)
        {
            _capacity[home] -= budget;
            _home[node] = -1;
        }
    }

    /// <summary>The trees with the most and the least capacity.</summary>
    public (int Richest, int Poorest) Extremes()
    {
        int rich = 0, poor = 0;
        for (var s = 1; s < _capacity.Length; s++)
        {
            if (_capacity[s] > _capacity[rich])
            {
                rich = s;
            }

            if (_capacity[s] < _capacity[poor])
            {
                poor = s;
            }
        }

        return (rich, poor);
    }
}

namespace ShardStream.Topology;

// TEMPORARY: replaced by the real planner from the topology branch.
public sealed partial class Planner
{
    private readonly Dictionary<int, int[]> _parents = new() { [0] = [] };
    private readonly Dictionary<int, int> _budget = new();
    private readonly Dictionary<int, int> _used = new();
    private int _next = 1;

    public Planner(PlannerOptions options)
    {
        Options = options;
        _budget[0] = options.SourceBudget;
        _used[0] = 0;
    }

    public PlannerOptions Options { get; }

    public int ShardCount => Options.ShardCount;

    public int PeerCount => _parents.Count - 1;

    public IEnumerable<int> Peers => _parents.Keys.Where(k => k != 0);

    public int Join(int budget)
    {
        int id = _next++;
        var parents = new int[ShardCount];
        for (int s = 0; s < ShardCount; s++)
        {
            int best = -1;
            foreach (var n in _parents.Keys.OrderBy(n => DepthOf(n, s)).ThenBy(n => n))
                if (_used[n] < _budget[n]) { best = n; break; }
            if (best < 0) throw new PlacementException("no capacity");
            parents[s] = best;
            _used[best]++;
        }
        _parents[id] = parents;
        _budget[id] = budget;
        _used[id] = 0;
        return id;
    }

    public IReadOnlyList<Reattachment> Leave(IReadOnlyCollection<int> peers)
    {
        var result = new List<Reattachment>();
        foreach (var p in peers)
        {
            for (int s = 0; s < ShardCount; s++) if (_parents[p][s] is int par && _parents.ContainsKey(par)) _used[par]--;
            _parents.Remove(p);
        }
        foreach (var (id, parents) in _parents.ToList())
            for (int s = 0; s < parents.Length; s++)
                if (!_parents.ContainsKey(parents[s]))
                {
                    int best = -1;
                    foreach (var n in _parents.Keys.OrderBy(n => DepthOf(n, s)))
                        if (_used[n] < _budget[n] && n != id && !IsBelow(n, id, s)) { best = n; break; }
                    parents[s] = best;
                    _used[best]++;
                    result.Add(new Reattachment(id, s, best));
                }
        return result;
    }

    private bool IsBelow(int n, int ancestor, int s)
    {
        while (n != 0) { if (n == ancestor) return true; n = _parents[n][s]; if (!_parents.ContainsKey(n)) return false; }
        return false;
    }

    public bool Contains(int node) => _parents.ContainsKey(node);

    public int ParentOf(int node, int shard) => node == 0 ? None : _parents[node][shard];

    public int DepthOf(int node, int shard) => node == 0 ? 0 : _parents.ContainsKey(_parents[node][shard]) ? DepthOf(_parents[node][shard], shard) + 1 : 1;

    public int MaxDepth(int shard) => _parents.Keys.Max(n => DepthOf(n, shard));

    public int Budget(int node) => _budget[node];

    public int UsedUnits(int node) => _used[node];

    public IEnumerable<int> ChildrenOf(int node, int shard) => _parents.Where(kv => kv.Key != 0 && kv.Value[shard] == node).Select(kv => kv.Key);

    public int HomeShard(int node) => -1;
}

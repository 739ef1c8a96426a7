namespace ShardStream.Topology;

/// <summary>
/// The K shard trees as flat arrays indexed by <c>node * K + shard</c>: parent, depth, and the
/// children as first-child / next-sibling / previous-sibling links, so that a million peers cost a
/// few dozen bytes each and no per-node object. Also keeps, per shard, depth-bucketed indexes
/// (open slots, nodes by capacity class, leaves by capacity class) that answer the planner's
/// questions in near-constant time. Knows nothing about policies.
/// </summary>
internal sealed partial class ShardForest
{
    /// <summary>Capacities 0..15 have their own class; 16 and more share the last one.</summary>
    public const int ClassCount = 17;

    /// <summary>The stored depth of a node that has never been placed in a shard.</summary>
    public const int Unplaced = -1;

    private const int None = Planner.None;
    private const int Source = Planner.Source;

    private readonly int _k;
    private int _slots;
    private int[] _parent = [];
    private int[] _depth = [];
    private int[] _firstChild = [];
    private int[] _nextSibling = [];
    private int[] _prevSibling = [];
    private int[] _childCount = [];
    private int[] _cap = [];

    // Depth+1 at which a node was last pushed to an index: avoids duplicate entries.
    private int[] _openMark = [];
    private int[] _classMark = [];
    private int[] _leafMark = [];

    private int[] _budget = [];
    private int[] _used = [];
    private bool[] _alive = [];

    private readonly DepthIndex[] _open;
    private readonly DepthIndex[] _byClass;
    private readonly DepthIndex[] _leaves;
    private readonly int[][] _depthCount;
    private readonly int[] _maxDepth;
    private readonly long[] _totalCap;
    private readonly int[][] _capHistogram;

    public ShardForest(int shardCount)
    {
        _k = shardCount;
        _open = new DepthIndex[shardCount];
        _byClass = new DepthIndex[shardCount * ClassCount];
        _leaves = new DepthIndex[shardCount * ClassCount];
        _depthCount = new int[shardCount][];
        _maxDepth = new int[shardCount];
        _totalCap = new long[shardCount];
        _capHistogram = new int[shardCount][];
        for (var s = 0; s < shardCount; s++)
        {
            _open[s] = new DepthIndex();
            _depthCount[s] = new int[16];
            _capHistogram[s] = new int[8];
        }

        for (var i = 0; i < _byClass.Length; i++)
        {
            _byClass[i] = new DepthIndex();
            _leaves[i] = new DepthIndex();
        }

        Grow(1024);
    }

    public int ShardCount => _k;

    /// <summary>Latency-aware placement only: free slots by zone (see <see cref="ZoneIndex"/>).</summary>
    public ZoneIndex? Zones
    {
        get => _zones;
        set
        {
            _zones = value;
            _openAt = new int[_parent.Length];
            for (var node = 0; node < _slots; node++)
            {
                for (var s = 0; s < _k; s++)
                {
                    TrackOpen(node, s);
                }
            }
        }
    }

    private ZoneIndex? _zones;

    // Latency-aware placement only: depth + 1 of every (node, shard) that is live, placed and has a
    // free slot, else 0; kept on every change, so that checking an entry of the zones' queues is one
    // read instead of four (the zones hold many entries per join, most of them far apart in memory).
    private int[]? _openAt;

    /// <summary>True when <paramref name="node"/> is live, at <paramref name="depth"/> of <paramref name="shard"/>, with a free slot (latency-aware plans only).</summary>
    public bool IsOpenAt(int node, int shard, int depth) => _openAt![node * _k + shard] == depth + 1;

    private void TrackOpen(int node, int shard)
    {
        if (_openAt is null)
        {
            return;
        }

        var i = node * _k + shard;
        var depth = _depth[i];
        _openAt[i] = _alive[node] && depth >= 0 && _childCount[i] < _cap[i] ? depth + 1 : 0;
    }

    /// <summary>Sum of the capacities of the live nodes in <paramref name="shard"/>.</summary>
    public long TotalCap(int shard) => _totalCap[shard];

    public static int ClassOf(int cap) => cap < ClassCount - 1 ? cap : ClassCount - 1;

    public bool IsAlive(int node) => (uint)node < (uint)_slots && _alive[node];

    public int Parent(int node, int shard) => _parent[node * _k + shard];

    public int Depth(int node, int shard) => _depth[node * _k + shard];

    public int FirstChild(int node, int shard) => _firstChild[node * _k + shard];

    public int NextSibling(int node, int shard) => _nextSibling[node * _k + shard];

    public int ChildCount(int node, int shard) => _childCount[node * _k + shard];

    public int Cap(int node, int shard) => _cap[node * _k + shard];

    public int Budget(int node) => _budget[node];

    public int Used(int node) => _used[node];

    /// <summary>Counts the changes to the trees (nodes added or killed, edges attached or detached): equal values, equal trees.</summary>
    public long Version { get; private set; }

    private long[] _shardVersion = [];

    /// <summary>Changes so far to the parents, children or capacities of <paramref name="shard"/>'s tree (a reader's cache key).</summary>
    public long ShardVersion(int shard) => shard < _shardVersion.Length ? _shardVersion[shard] : 0;

    private void Touch(int shard)
    {
        if (_shardVersion.Length <= shard)
        {
            Array.Resize(ref _shardVersion, _k);
        }

        _shardVersion[shard]++;
    }

    public bool HasFreeSlot(int node, int shard)
    {
        var i = node * _k + shard;
        return _childCount[i] < _cap[i];
    }

    /// <summary>Registers a node (the source or a joining peer) with no parent in any shard.</summary>
    public void AddNode(int node, int budget)
    {
        if (node >= _slots)
        {
            Grow(Math.Max(node + 1, _slots * 2));
        }

        Version++;
        _alive[node] = true;
        _budget[node] = budget;
        _used[node] = 0;
        for (var s = 0; s < _k; s++)
        {
            var i = node * _k + s;
            _parent[i] = None;
            _depth[i] = node == Source ? 0 : Unplaced;
            _firstChild[i] = None;
            _nextSibling[i] = None;
            _prevSibling[i] = None;
            _childCount[i] = 0;
            _cap[i] = 0;
            TrackOpen(node, s);
        }

        for (var s = 0; s < _k; s++)
        {
            if (node == Source)
            {
                CountDepth(s, 0, +1);
            }
            else
            {
                CountCap(s, 0, +1);
            }
        }
    }

    /// <summary>Sets how many children <paramref name="node"/> may have in <paramref name="shard"/>.</summary>
    public void SetCap(int node, int shard, int cap)
    {
        _totalCap[shard] += cap - _cap[node * _k + shard];
        if (node != Source)
        {
            CountCap(shard, _cap[node * _k + shard], -1);
            CountCap(shard, cap, +1);
        }

        _cap[node * _k + shard] = cap;
        Touch(shard);
        TrackOpen(node, shard);
        if (_depth[node * _k + shard] >= 0)
        {
            Index(node, shard);
        }
    }

    /// <summary>Marks a node gone: it no longer counts in any depth, nor answers any index query.</summary>
    public void Kill(int node)
    {
        Version++;
        _alive[node] = false;
        for (var s = 0; s < _k; s++)
        {
            Touch(s);
            TrackOpen(node, s);
            _totalCap[s] -= _cap[node * _k + s];
            CountCap(s, _cap[node * _k + s], -1);
            var d = _depth[node * _k + s];
            if (d >= 0)
            {
                CountDepth(s, d, -1);
            }
        }
    }

    /// <summary>
    /// Makes <paramref name="node"/> (which has no parent in <paramref name="shard"/>) a child of
    /// <paramref name="parent"/>; its subtree comes along and is re-depthed if its depth changes.
    /// </summary>
    public void Attach(int node, int parent, int shard)
    {
        Version++;
        Touch(shard);
        var i = node * _k + shard;
        var pi = parent * _k + shard;
        _parent[i] = parent;
        var first = _firstChild[pi];
        _nextSibling[i] = first;
        _prevSibling[i] = None;
        if (first != None)
        {
            _prevSibling[first * _k + shard] = node;
        }

        _firstChild[pi] = node;
        _childCount[pi]++;
        _used[parent]++;
        TrackOpen(parent, shard);
        var depth = _depth[pi] + 1;
        if (_depth[i] != depth)
        {
            SetSubtreeDepth(node, shard, depth);
        }
    }

    /// <summary>Cuts <paramref name="node"/> from its parent in <paramref name="shard"/>; it keeps its own children and stored depth.</summary>
    public void Detach(int node, int shard)
    {
        var i = node * _k + shard;
        var parent = _parent[i];
        if (parent == None)
        {
            return;
        }

        Version++;
        Touch(shard);
        var pi = parent * _k + shard;
        var prev = _prevSibling[i];
        var next = _nextSibling[i];
        if (prev == None)
        {
            _firstChild[pi] = next;
        }
        else
        {
            _nextSibling[prev * _k + shard] = next;
        }

        if (next != None)
        {
            _prevSibling[next * _k + shard] = prev;
        }

        _parent[i] = None;
        _prevSibling[i] = None;
        _nextSibling[i] = None;
        _childCount[pi]--;
        _used[parent]--;
        TrackOpen(parent, shard);
        if (_alive[parent] && _depth[pi] >= 0)
        {
            Index(parent, shard);
        }
    }

    /// <summary>Sets the depth of <paramref name="root"/> and recomputes its whole subtree, without recursion.</summary>
    private void SetSubtreeDepth(int root, int shard, int depth)
    {
        SetDepth(root, shard, depth);
        var node = _firstChild[root * _k + shard];
        while (node != None)
        {
            var i = node * _k + shard;
            SetDepth(node, shard, _depth[_parent[i] * _k + shard] + 1);
            if (_firstChild[i] != None)
            {
                node = _firstChild[i];
                continue;
            }

            // Climb until a node with a next sibling, stopping at the subtree root.
            while (node != root && _nextSibling[node * _k + shard] == None)
            {
                node = _parent[node * _k + shard];
            }

            node = node == root ? None : _nextSibling[node * _k + shard];
        }
    }

    private void SetDepth(int node, int shard, int depth)
    {
        var i = node * _k + shard;
        var old = _depth[i];
        if (old >= 0 && _alive[node])
        {
            CountDepth(shard, old, -1);
        }

        _depth[i] = depth;
        TrackOpen(node, shard);
        if (_alive[node])
        {
            CountDepth(shard, depth, +1);
            Index(node, shard);
        }
    }

    private void CountDepth(int shard, int depth, int delta)
    {
        var counts = _depthCount[shard];
        if (depth >= counts.Length)
        {
            Array.Resize(ref _depthCount[shard], Math.Max(depth + 1, counts.Length * 2));
            counts = _depthCount[shard];
        }

        counts[depth] += delta;
        if (delta > 0 && depth > _maxDepth[shard])
        {
            _maxDepth[shard] = depth;
        }
    }

    private void CountCap(int shard, int cap, int delta)
    {
        if (cap >= _capHistogram[shard].Length)
        {
            Array.Resize(ref _capHistogram[shard], Math.Max(cap + 1, _capHistogram[shard].Length * 2));
        }

        _capHistogram[shard][cap] += delta;
    }

    /// <summary>
    /// The least depth a tree of the live peers could have in <paramref name="shard"/> with their
    /// capacities there: fill level by level, the largest capacities first (<see cref="int.MaxValue"/>
    /// if they cannot all be held). O(levels + distinct capacities).
    /// </summary>
    public int BestDepth(int shard, int peers)
    {
        var histogram = _capHistogram[shard];
        var cap = histogram.Length - 1;
        var leftOfCap = histogram[cap];
        long slots = _cap[Source * _k + shard];
        var placed = 0;
        var depth = 0;
        while (placed < peers)
        {
            if (slots == 0)
            {
                return int.MaxValue;
            }

            depth++;
            var take = (long)Math.Min(slots, peers - placed);
            placed += (int)take;
            slots = 0;
            while (take > 0)
            {
                while (leftOfCap == 0)
                {
                    leftOfCap = histogram[--cap];
                }

                var now = Math.Min(take, leftOfCap);
                slots += now * cap;
                take -= now;
                leftOfCap -= (int)now;
            }
        }

        return depth;
    }

    /// <summary>Deepest depth any live node of <paramref name="shard"/> is stored at.</summary>
    public int MaxDepth(int shard)
    {
        var counts = _depthCount[shard];
        var d = _maxDepth[shard];
        while (d > 0 && counts[d] == 0)
        {
            d--;
        }

        _maxDepth[shard] = d;
        return d;
    }

    /// <summary>Number of live nodes stored at <paramref name="depth"/> in <paramref name="shard"/>.</summary>
    public int CountAt(int shard, int depth)
    {
        var counts = _depthCount[shard];
        return depth < counts.Length ? counts[depth] : 0;
    }

    /// <summary>(Re)publishes a node in the indexes of one shard after its depth, cap or children changed.</summary>
    private void Index(int node, int shard)
    {
        var i = node * _k + shard;
        var depth = _depth[i];
        var mark = depth + 1;
        if (_childCount[i] < _cap[i])
        {
            if (_openMark[i] != mark)
            {
                _openMark[i] = mark;
                _open[shard].Push(depth, node);
            }

            // The zones keep marks of their own: their readers drop stale entries out of order.
            Zones?.PushOpen(node, shard, depth);
        }

        if (node == Source)
        {
            return;
        }

        if (_cap[i] > 0 && depth >= 0)
        {
            Zones?.PushRelay(node, shard, depth);
        }

        var cls = ClassOf(_cap[i]);
        var classMark = (mark * ClassCount) + cls;
        if (_classMark[i] != classMark)
        {
            _classMark[i] = classMark;
            _byClass[(shard * ClassCount) + cls].Push(depth, node);
        }

        if (_childCount[i] == 0 && _leafMark[i] != classMark)
        {
            _leafMark[i] = classMark;
            _leaves[(shard * ClassCount) + cls].Push(depth, node);
        }
    }

    private void Grow(int slots)
    {
        var n = slots * _k;
        Array.Resize(ref _parent, n);
        Array.Resize(ref _depth, n);
        Array.Resize(ref _firstChild, n);
        Array.Resize(ref _nextSibling, n);
        Array.Resize(ref _prevSibling, n);
        Array.Resize(ref _childCount, n);
        Array.Resize(ref _cap, n);
        if (_openAt is not null)
        {
            Array.Resize(ref _openAt, n);
        }

        Array.Resize(ref _openMark, n);
        Array.Resize(ref _classMark, n);
        Array.Resize(ref _leafMark, n);
        Array.Resize(ref _budget, slots);
        Array.Resize(ref _used, slots);
        Array.Resize(ref _alive, slots);
        _slots = slots;
    }
}

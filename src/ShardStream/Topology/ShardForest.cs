using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace ShardStream.Topology;

/// <summary>
/// The K shard trees as one flat array of records indexed by <c>node * K + shard</c> (<see cref="Slot"/>):
/// parent, depth, and the children as first-child / next-sibling / previous-sibling links, so that
/// a million peers cost a few hundred bytes each and no per-node object. Also keeps, per shard, depth-bucketed indexes
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
            _tracksOpen = true;
            _openAt.Grow(_records.Count);
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

    // Latency-aware placement only: Slot.OpenAt is kept (see there), and again in _openAt.
    private bool _tracksOpen;

    // Latency-aware placement only: Slot.OpenAt of every (node, shard), one byte each, 255 when it
    // is 255 or more (the record tells then). The zones' queues are checked entry by entry at
    // random: 8 MiB at a million peers (K = 8) stay in the processor's cache, the records' 512 MiB
    // do not, and a record is read only for the entries taken as candidates.
    private LineAlignedArray<byte> _openAt = new();

    /// <summary>True when <paramref name="node"/> is live, at <paramref name="depth"/> of <paramref name="shard"/>, with a free slot (latency-aware plans only).</summary>
    public bool IsOpenAt(int node, int shard, int depth)
    {
        var i = (node * _k) + shard;
        var open = _openAt[i];
        return open < byte.MaxValue ? open == depth + 1 : S(i).OpenAt == depth + 1;
    }

    /// <summary>Starts reading what <see cref="IsOpenAt"/> reads for (<paramref name="node"/>, <paramref name="shard"/>) into the cache (a hint: no effect without SSE).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void PrefetchOpen(int node, int shard)
    {
        if (System.Runtime.Intrinsics.X86.Sse.IsSupported)
        {
            System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref _openAt[(node * _k) + shard]));
        }
    }

    private void TrackOpen(int node, int shard)
    {
        if (!_tracksOpen)
        {
            return;
        }

        var i = (node * _k) + shard;
        ref var slot = ref S(i);
        var depth = slot.Depth;
        slot.OpenAt = _alive[node] && depth >= 0 && slot.ChildCount < slot.Cap ? depth + 1 : 0;
        _openAt[i] = (byte)Math.Min(slot.OpenAt, byte.MaxValue);
    }

    /// <summary>Sum of the capacities of the live nodes in <paramref name="shard"/>.</summary>
    public long TotalCap(int shard) => _totalCap[shard];

    public static int ClassOf(int cap) => cap < ClassCount - 1 ? cap : ClassCount - 1;

    public bool IsAlive(int node) => (uint)node < (uint)_slots && _alive[node];

    public int Parent(int node, int shard) => S(node * _k + shard).Parent;

    public int Depth(int node, int shard) => S(node * _k + shard).Depth;

    public int FirstChild(int node, int shard) => S(node * _k + shard).FirstChild;

    /// <summary>The capacity of <see cref="FirstChild"/> in <paramref name="shard"/> (0 when none), from <paramref name="node"/>'s own record.</summary>
    public int FirstChildCap(int node, int shard)
    {
        ref var slot = ref S(node * _k + shard);
        System.Diagnostics.Debug.Assert(slot.FirstChild == None ? slot.FirstChildCap == 0 : S(slot.FirstChild * _k + shard).Cap == slot.FirstChildCap, "the first child's capacity is kept with it");
        return slot.FirstChildCap;
    }

    public int NextSibling(int node, int shard) => S(node * _k + shard).NextSibling;

    public int ChildCount(int node, int shard) => S(node * _k + shard).ChildCount;

    public int Cap(int node, int shard) => S(node * _k + shard).Cap;

    public int Budget(int node) => _budget[node];

    public int Used(int node) => _used[node];

    /// <summary>Counts the changes to the trees (nodes added or killed, edges attached or detached): equal values, equal trees.</summary>
    public long Version { get; private set; }

    private long[] _shardVersion = [];

    /// <summary>
    /// Latency-aware placement only: the deepest parent whose children are watched by
    /// <see cref="TopVersion"/> (-1: none).
    /// </summary>
    public int TopWatchDepth { get; set; } = -1;

    private long[] _topVersion = [];

    /// <summary>
    /// Changes so far to the children of <paramref name="shard"/>'s nodes at depth at most
    /// <see cref="TopWatchDepth"/> (edges attached or detached there): equal values, the same
    /// nodes down to depth <see cref="TopWatchDepth"/> + 1, with the same parents, depths and
    /// child order. A node reached from the source has its true depth stored, so a change that
    /// brings a node into those levels or takes one out is an edge attached or detached there.
    /// </summary>
    public long TopVersion(int shard) => shard < _topVersion.Length ? _topVersion[shard] : 0;

    /// <summary>
    /// True when <paramref name="node"/> may be among the nodes <see cref="TopVersion"/> covers in
    /// <paramref name="shard"/>: the source, or a node whose stored depth is 1 to
    /// <see cref="TopWatchDepth"/> + 1 (a node never added has none: its record reads depth 0).
    /// </summary>
    public bool MayBeInTop(int node, int shard)
    {
        if (node == Source)
        {
            return true;
        }

        if ((uint)node >= (uint)_slots)
        {
            return false;
        }

        var depth = S(node * _k + shard).Depth;
        return depth >= 1 && depth <= TopWatchDepth + 1;
    }

    private void TouchTop(int shard, int parentDepth)
    {
        if (parentDepth <= TopWatchDepth)
        {
            if (_topVersion.Length <= shard)
            {
                Array.Resize(ref _topVersion, _k);
            }

            _topVersion[shard]++;
        }
    }

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
        return S(i).ChildCount < S(i).Cap;
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
            S(i).Parent = None;
            S(i).Depth = node == Source ? 0 : Unplaced;
            S(i).FirstChild = None;
            S(i).FirstChildCap = 0;
            S(i).NextSibling = None;
            S(i).PrevSibling = None;
            S(i).ChildCount = 0;
            S(i).Cap = 0;
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

    /// <summary>Sets the shard-streams <paramref name="node"/> may send (its caps are set apart, shard by shard).</summary>
    public void SetBudget(int node, int budget)
    {
        Version++;
        _budget[node] = budget;
    }

    /// <summary>Sets how many children <paramref name="node"/> may have in <paramref name="shard"/>.</summary>
    public void SetCap(int node, int shard, int cap)
    {
        _totalCap[shard] += cap - S(node * _k + shard).Cap;
        if (node != Source)
        {
            CountCap(shard, S(node * _k + shard).Cap, -1);
            CountCap(shard, cap, +1);
        }

        S(node * _k + shard).Cap = cap;
        var parent = S(node * _k + shard).Parent;
        if (parent != None && S(parent * _k + shard).FirstChild == node)
        {
            S(parent * _k + shard).FirstChildCap = cap;
        }

        Touch(shard);
        TrackOpen(node, shard);
        if (S(node * _k + shard).Depth >= 0)
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
            _totalCap[s] -= S(node * _k + s).Cap;
            CountCap(s, S(node * _k + s).Cap, -1);
            var d = S(node * _k + s).Depth;
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
        S(i).Parent = parent;
        var first = S(pi).FirstChild;
        S(i).NextSibling = first;
        S(i).PrevSibling = None;
        if (first != None)
        {
            S(first * _k + shard).PrevSibling = node;
        }

        S(pi).FirstChild = node;
        S(pi).FirstChildCap = S(i).Cap;
        S(pi).ChildCount++;
        TouchTop(shard, S(pi).Depth);
        _used[parent]++;
        TrackOpen(parent, shard);
        var depth = S(pi).Depth + 1;
        if (S(i).Depth != depth)
        {
            SetSubtreeDepth(node, shard, depth);
        }
    }

    /// <summary>
    /// The parent each (node, shard) slot had before its first <see cref="Detach"/> since
    /// <see cref="StartJournal"/>, by slot index; null when not journaling. It holds only the slots
    /// one planner operation cut, as many as the moves it lists.
    /// </summary>
    private Dictionary<int, int>? _firstParent;

    /// <summary>Starts noting, for each (node, shard) detached from now on, the parent it had before (<see cref="ParentBefore"/>); forgets what was noted.</summary>
    public void StartJournal()
    {
        _firstParent ??= [];
        _firstParent.Clear();
    }

    /// <summary>
    /// The parent <paramref name="node"/> had in <paramref name="shard"/> before its first detach
    /// since <see cref="StartJournal"/>; false when it was not detached since (or had no parent then).
    /// </summary>
    public bool ParentBefore(int node, int shard, out int parent)
    {
        parent = None;
        return _firstParent is { } journal && journal.TryGetValue(node * _k + shard, out parent);
    }

    /// <summary>Cuts <paramref name="node"/> from its parent in <paramref name="shard"/>; it keeps its own children and stored depth.</summary>
    public void Detach(int node, int shard)
    {
        var i = node * _k + shard;
        var parent = S(i).Parent;
        if (parent == None)
        {
            return;
        }

        _firstParent?.TryAdd(i, parent);
        Version++;
        Touch(shard);
        var pi = parent * _k + shard;
        var prev = S(i).PrevSibling;
        var next = S(i).NextSibling;
        if (prev == None)
        {
            S(pi).FirstChild = next;
            S(pi).FirstChildCap = next == None ? 0 : S(next * _k + shard).Cap;
        }
        else
        {
            S(prev * _k + shard).NextSibling = next;
        }

        if (next != None)
        {
            S(next * _k + shard).PrevSibling = prev;
        }

        S(i).Parent = None;
        S(i).PrevSibling = None;
        S(i).NextSibling = None;
        S(pi).ChildCount--;
        TouchTop(shard, S(pi).Depth);
        _used[parent]--;
        TrackOpen(parent, shard);
        if (_alive[parent] && S(pi).Depth >= 0)
        {
            Index(parent, shard);
        }
    }

    /// <summary>Sets the depth of <paramref name="root"/> and recomputes its whole subtree, without recursion.</summary>
    private void SetSubtreeDepth(int root, int shard, int depth)
    {
        SetDepth(root, shard, depth);
        var node = S(root * _k + shard).FirstChild;
        while (node != None)
        {
            var i = node * _k + shard;
            SetDepth(node, shard, S(S(i).Parent * _k + shard).Depth + 1);
            if (S(i).FirstChild != None)
            {
                node = S(i).FirstChild;
                continue;
            }

            // Climb until a node with a next sibling, stopping at the subtree root.
            while (node != root && S(node * _k + shard).NextSibling == None)
            {
                node = S(node * _k + shard).Parent;
            }

            node = node == root ? None : S(node * _k + shard).NextSibling;
        }
    }

    private void SetDepth(int node, int shard, int depth)
    {
        var i = node * _k + shard;
        var old = S(i).Depth;
        if (old >= 0 && _alive[node])
        {
            CountDepth(shard, old, -1);
        }

        S(i).Depth = depth;
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
        long slots = S(Source * _k + shard).Cap;
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
        var depth = S(i).Depth;
        var mark = depth + 1;
        if (S(i).ChildCount < S(i).Cap)
        {
            if (S(i).OpenMark != mark)
            {
                S(i).OpenMark = mark;
                _open[shard].Push(depth, node);
            }

            // The zones keep marks of their own: their readers drop stale entries out of order.
            Zones?.PushOpen(node, shard, depth);
        }

        if (node == Source)
        {
            return;
        }

        if (S(i).Cap > 0 && depth >= 0)
        {
            Zones?.PushRelay(node, shard, depth);
        }

        var cls = ClassOf(S(i).Cap);
        var classMark = (mark * ClassCount) + cls;
        if (S(i).ClassMark != classMark)
        {
            S(i).ClassMark = classMark;
            _byClass[(shard * ClassCount) + cls].Push(depth, node);
        }

        if (S(i).ChildCount == 0 && S(i).LeafMark != classMark)
        {
            S(i).LeafMark = classMark;
            _leaves[(shard * ClassCount) + cls].Push(depth, node);
        }
    }

    private void Grow(int slots)
    {
        // One record per (node, shard), 64 bytes, each on a cache line of its own.
        _records.Grow(checked(slots * _k)); // an index, node * K + shard, is an int
        if (_tracksOpen)
        {
            _openAt.Grow(_records.Count);
        }

        Array.Resize(ref _budget, slots);
        Array.Resize(ref _used, slots);
        Array.Resize(ref _alive, slots);
        _slots = slots;
    }

    private const int SlotBytes = 64;

    // The records of every (node, shard), node * K + shard (see Slot).
    private LineAlignedArray<Slot> _records = new();

    /// <summary>The record of index <paramref name="i"/> (node * K + shard).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref Slot S(int i) => ref _records[i];

    /// <summary>
    /// The record of (<paramref name="node"/>, <paramref name="shard"/>): latency-aware placement
    /// keeps its cached path delay in it (<see cref="Slot.PathDelay"/>), on the cache line that
    /// checking a free slot reads anyway.
    /// </summary>
    public ref Slot SlotOf(int node, int shard) => ref S((node * _k) + shard);

    /// <summary>Starts reading the record of (<paramref name="node"/>, <paramref name="shard"/>) into the cache, so that several reads at random overlap (a hint: no effect without SSE).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public unsafe void Prefetch(int node, int shard)
    {
        if (System.Runtime.Intrinsics.X86.Sse.IsSupported)
        {
            System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref S((node * _k) + shard)));
        }
    }

    /// <summary>
    /// Everything kept per (node, shard), side by side in 64 bytes: a candidate parent's check
    /// and score, and a walk over a node's children, read one cache line per node instead of one
    /// per array (at a million peers, arrays of 32 MB each, read at random).
    /// </summary>
    [StructLayout(LayoutKind.Sequential, Size = SlotBytes)]
    internal struct Slot
    {
        public int Parent;
        public int Depth;
        public int FirstChild;
        public int NextSibling;
        public int PrevSibling;
        public int ChildCount;
        public int Cap;

        // Latency-aware placement only: depth + 1 when the node is live, placed and has a free
        // slot, else 0; kept on every change, so that checking an entry of the zones' queues is
        // one read instead of four.
        public int OpenAt;

        // Depth + 1 (and class) at which the node was last pushed to an index: no duplicate entries.
        public int OpenMark;
        public int ClassMark;
        public int LeafMark;

        // Latency-aware placement only: the cached path delay (ms) from the source and the join
        // count it was computed at (0: none), see LatencyPlacement.CachedPathDelay.
        public float PathDelay;
        public int PathStamp;

        // Latency-aware placement only: depth + 1 of the last entry queued for the pair in its
        // zone's free slots (ZoneIndex.PushOpen) and relays (ZoneIndex.PushRelay), 0 when none is
        // known to be queued.
        public int ZoneMark;
        public int RelayMark;

        // The capacity of FirstChild (0 when none), kept with it: a relay's first child is
        // judged weaker or not without reading the child's record.
        public int FirstChildCap;
    }
}

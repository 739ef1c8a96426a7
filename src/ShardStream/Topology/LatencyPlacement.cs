using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace ShardStream.Topology;

/// <summary>
/// Latency-aware choice among placements the general rule allows (<see cref="PlannerOptions.LatencyAware"/>).
/// Where the latency-blind rule takes the first free slot of the shallowest level (or the first
/// weaker node of the shallowest level holding one), this looks at a few candidates that are
/// just as valid (free slots within the depth bound, in the zones nearest the joiner; weaker nodes
/// at the same level) and takes the one that gives the joiner the lowest estimated delay from the
/// source: the estimated one-way delay of the candidate's whole path from the source plus half the
/// RTT from the candidate to the joiner (measured when the joiner probed it, else estimated from
/// the network coordinates). The blind choice is always among the candidates, so a placement is
/// never refused for latency. Pure: coordinates in, node ids out.
/// </summary>
internal sealed partial class LatencyPlacement
{
    /// <summary>Zones searched around a joiner, nearest first.</summary>
    public const int NearZones = 4;

    /// <summary>
    /// Zones searched around a joiner, nearest first, when the <see cref="NearZones"/> nearest hold
    /// no free slot in its neighbourhood (<see cref="NeighbourhoodMs"/>).
    /// </summary>
    public const int WideZones = 12;

    /// <summary>Free slots taken from one depth of one zone.</summary>
    private const int PerDepth = 3;

    /// <summary>Candidates evaluated per placement (besides the blind choice).</summary>
    public const int MaxCandidates = 16;

    private const int None = Planner.None;
    private const int Source = Planner.Source;

    private readonly ShardForest _forest;
    private readonly ZoneIndex _zones;
    private readonly List<int> _candidates = [];
    private readonly int[] _near = new int[WideZones];
    // Every node's coordinate, 32 bytes each from a cache-line boundary (a candidate's is read at
    // random among a million: one line).
    private LineAlignedArray<NetworkCoordinate> _coordinates = new();
    private int _nearCount;

    // The node being placed: its coordinate and the RTTs it measured (joins only).
    private NetworkCoordinate _subject;
    private int _subjectNode = None;
    private IReadOnlyDictionary<int, double>? _measured;

    public LatencyPlacement(ShardForest forest)
    {
        _forest = forest;
        _zones = new ZoneIndex(forest);
        forest.Zones = _zones;
        forest.TopWatchDepth = TopWatchDepth;
        _coordinateVersion = new long[forest.ShardCount];
        System.Diagnostics.Debug.Assert(Unsafe.SizeOf<NetworkCoordinate>() == 32, "a coordinate is four doubles: two to a line");
        GrowCoordinates(1024);
    }

    /// <summary>True while a node with a known coordinate is being placed (else the blind rule runs).</summary>
    public bool Active { get; private set; }

    public NetworkCoordinate CoordinateOf(int node)
    {
        if (node < 0)
        {
            NoNode(node);
        }

        return node < _coordinates.Count ? _coordinates[node] : NetworkCoordinate.Unknown;
    }

    public void SetCoordinate(int node, NetworkCoordinate coordinate)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(node);
        if (node >= _coordinates.Count)
        {
            GrowCoordinates(Math.Max(node + 1, _coordinates.Count * 2));
        }

        _coordinates[node] = coordinate;
        NoteTopCoordinate(node);
    }

    /// <summary>Starts reading <paramref name="node"/>'s coordinate into the cache (it is scored later).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private unsafe void PrefetchCoordinate(int node)
    {
        if (System.Runtime.Intrinsics.X86.Sse.IsSupported && (uint)node < (uint)_coordinates.Count)
        {
            System.Runtime.Intrinsics.X86.Sse.Prefetch0(Unsafe.AsPointer(ref _coordinates[node]));
        }
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private static void NoNode(int node) => throw new IndexOutOfRangeException($"No node {node}.");

    private void GrowCoordinates(int count)
    {
        var old = _coordinates.Count;
        _coordinates.Grow(count);
        for (var node = old; node < count; node++)
        {
            _coordinates[node] = NetworkCoordinate.Unknown;
        }
    }

    /// <summary>
    /// A live node's coordinate moved: when it is now more than twice <see cref="ZoneIndex.Radius"/>
    /// from its zone's centre, it gets the zone of where it is now and its free slots are published
    /// there too (entries left in the old zone are still valid slots, only looked up less often).
    /// Without this, free slots stay filed where their nodes first thought they were, and a peer
    /// that moved in the plane is never offered them.
    /// </summary>
    public void Rezone(int node)
    {
        var c = CoordinateOf(node);
        var zone = _zones.ZoneOf(node);
        if (c.Error >= 1 || zone < 0)
        {
            return;
        }

        var (x, y) = _zones.Centre(zone);
        if (((x - c.X) * (x - c.X)) + ((y - c.Y) * (y - c.Y)) <= 4 * ZoneIndex.Radius * ZoneIndex.Radius)
        {
            return;
        }

        var now = _zones.Assign(c);
        if (now == zone)
        {
            return;
        }

        _zones.SetZone(node, now);
        for (var s = 0; s < _forest.ShardCount; s++)
        {
            if (_forest.HasFreeSlot(node, s))
            {
                _zones.PushOpen(node, s, _forest.Depth(node, s), again: true);
            }
        }
    }

    /// <summary>Gives a joining node its coordinate and zone (before it is placed anywhere).</summary>
    public void Register(int node, NetworkCoordinate coordinate)
    {
        SetCoordinate(node, coordinate);
        if (coordinate.Error < 1)
        {
            // Its nearest zones are wanted next (Begin) anyway: the first of them is the nearest
            // centre, and when no zone is made they are not searched again.
            var slot = _zones.Count == 0 ? -1 : NearestFor(coordinate.X, coordinate.Y);
            var nearest = slot < 0 || _nearestCount[slot] == 0 ? -1 : _nearest[slot][0];
            _zones.SetZone(node, _zones.Assign(coordinate, nearest));
        }
    }

    /// <summary>
    /// From now until <see cref="End"/>, placements are chosen for <paramref name="node"/> by latency.
    /// A join (<paramref name="exact"/> false) may use path delays computed up to
    /// <see cref="PathCacheJoins"/> joins ago (every node is attached between operations); a repair
    /// walks every path, since candidates may sit in a subtree that is cut off.
    /// </summary>
    public void Begin(int node, IReadOnlyDictionary<int, double>? measured, bool exact = false)
    {
        _subject = CoordinateOf(node);
        _subjectNode = node;
        _measured = measured;
        _measuredCount = 0;
        if (measured is not null && measured.Count <= _measuredNodes.Length)
        {
            // A joiner measures a few RTTs: a short array is looked up faster than the dictionary.
            foreach (var (n, rtt) in measured)
            {
                _measuredNodes[_measuredCount] = n;
                _measuredRtts[_measuredCount++] = rtt;
            }

            _measured = null;
        }

        _exact = exact;
        if (!exact)
        {
            _joins++;
        }

        Active = _subject.Error < 1;
        if (Active)
        {
            FindNearZones(_subject);
        }
    }

    public void End()
    {
        Active = false;
        _measured = null;
        _measuredCount = 0;
    }

    // The RTTs the subject measured, when few (else _measured): node ids and RTTs (ms).
    private readonly int[] _measuredNodes = new int[32];
    private readonly double[] _measuredRtts = new double[32];
    private int _measuredCount;

    /// <summary>
    /// The free slot to take in <paramref name="shard"/>: among <paramref name="blind"/> and the free
    /// slots at depth at most <paramref name="maxParentDepth"/> in the zones nearest the subject, the
    /// one with the lowest estimated delay from the source (attached to it, and accepted by
    /// <paramref name="accept"/> when given).
    /// </summary>
    public int ChooseOpen(int shard, int maxParentDepth, int blind, Func<int, bool>? accept = null)
    {
        _candidates.Clear();
        if (blind != None)
        {
            _candidates.Add(blind);
        }

        var reuse = accept is null && _subjectNode == _previewNode && _previewVersion is not null && SameNearZones(NearZones)
            && _previewVersion[shard] == _forest.ShardVersion(shard) && _previewDepth![shard] == maxParentDepth;
        var preview = reuse ? _previewCandidates![shard] : null;
        if (preview is not null)
        {
            // The subject's probe suggestion scanned the same tree, unchanged since, in the same
            // nearest zones: same candidates.
            for (var i = 0; i < _previewNarrow![shard]; i++)
            {
                if (preview[i] != blind)
                {
                    _candidates.Add(preview[i]);
                }
            }
        }
        else
        {
            ScanZones(shard, maxParentDepth, accept, 0, Math.Min(_nearCount, NearZones), MaxCandidates);
        }

        _narrow = _candidates.Count;
        _wide = false;
        if (_candidates.Count <= MaxCandidates && !AnyLocal(shard))
        {
            // None of the nearest zones has a free slot in the subject's neighbourhood: look farther.
            _wide = true;
            if (_nearCount <= NearZones)
            {
                FindNearZones(_subject, WideZones);
            }

            if (preview is not null && _previewWideNear![shard] && SameNearZones(WideZones))
            {
                for (var i = _previewNarrow![shard]; i < preview.Count; i++)
                {
                    if (preview[i] != blind)
                    {
                        _candidates.Add(preview[i]);
                    }
                }
            }
            else
            {
                ScanZones(shard, maxParentDepth, accept, NearZones, _nearCount, _candidates.Count + (2 * PerDepth));
            }
        }

        return Best(shard, blind);
    }

    /// <summary>Adds to the candidates free slots at depth at most <paramref name="maxParentDepth"/> of the nearest zones <paramref name="from"/> to <paramref name="to"/> - 1, while there are at most <paramref name="most"/>.</summary>
    private void ScanZones(int shard, int maxParentDepth, Func<int, bool>? accept, int from, int to, int most)
    {
        Span<int> stale = stackalloc int[4 * PerDepth];
        for (var zi = from; zi < to && _candidates.Count <= most; zi++)
        {
            var index = _zones.Open(_near[zi], shard);
            var limit = Math.Min(maxParentDepth + 1, index.Limit);
            for (var d = index.Lowest; d < limit && _candidates.Count <= most; d++)
            {
                var queue = index.At(d);
                if (queue is null)
                {
                    continue;
                }

                while (!queue.IsEmpty && !_forest.IsOpenAt(queue.Front, shard, d))
                {
                    _zones.Dropped(queue.Front, shard, d);
                    queue.PopFront();
                }

                if (queue.IsEmpty)
                {
                    if (d == index.Lowest)
                    {
                        index.Lowest = d + 1;
                    }

                    continue;
                }

                // Entries behind the front may be stale (nodes that filled up, out of order since
                // any of the first few may be chosen): look at a few, and drop the stale ones seen,
                // so that no entry is examined again and again.
                var taken = 0;
                var examine = Math.Min(queue.Count, 4 * PerDepth);
                var staleCount = 0;
                for (var j = 1; j < examine; j++)
                {
                    _forest.PrefetchOpen(queue[j], shard);
                }

                for (var j = 0; j < examine && taken < PerDepth; j++)
                {
                    var node = queue[j];
                    if (!_forest.IsOpenAt(node, shard, d))
                    {
                        stale[staleCount++] = j;
                        _zones.Dropped(node, shard, d);
                    }
                    else if ((accept is null || accept(node)) && !_candidates.Contains(node))
                    {
                        // Scored next: its record (the cached path delay) and coordinate.
                        _candidates.Add(node);
                        _forest.Prefetch(node, shard);
                        PrefetchCoordinate(node);
                        taken++;
                    }
                }

                queue.RemoveNearFront(stale[..staleCount]);
            }
        }
    }

    /// <summary>
    /// <see cref="ChooseOpen"/> for <paramref name="node"/> (already registered, e.g. a leaf pushed
    /// down by the subject) instead of the subject; the subject is back afterwards.
    /// </summary>
    public int ChooseOpenFor(int node, int shard, int maxParentDepth, int blind)
    {
        var (subject, subjectNode, measured, measuredCount, nearCount) = (_subject, _subjectNode, _measured, _measuredCount, _nearCount);
        Span<int> near = stackalloc int[_near.Length];
        _near.CopyTo(near);
        _subject = CoordinateOf(node);
        _subjectNode = node;
        _measured = null;
        _measuredCount = 0;
        try
        {
            if (_subject.Error >= 1)
            {
                return blind;
            }

            FindNearZones(_subject);
            return ChooseOpen(shard, maxParentDepth, blind);
        }
        finally
        {
            (_subject, _subjectNode, _measured, _measuredCount, _nearCount) = (subject, subjectNode, measured, measuredCount, nearCount);
            near.CopyTo(_near);
        }
    }

    /// <summary>The weaker node to push down in <paramref name="shard"/>: among <paramref name="blind"/> and others of its depth, the one whose parent gives the subject the lowest estimated delay.</summary>
    public int ChooseWeaker(int shard, int cap, int blind)
    {
        _candidates.Clear();
        _candidates.Add(blind);
        var depth = _forest.Depth(blind, shard);
        _forest.CollectWeakerAt(shard, cap, depth, MaxCandidates * 2, _candidates);
        _nearFrom = _candidates.Count;
        _nearParents.Clear();
        CollectNearWeaker(shard, cap, depth);
        return BestWeaker(shard, blind);
    }

    // The candidates from _nearFrom on came from CollectNearWeaker, under the relays _nearParents.
    private int _nearFrom;
    private readonly List<int> _nearParents = [];

    /// <summary>Relays looked at per near zone for a weaker child to push down.</summary>
    private const int WeakerPerZone = 6;

    /// <summary>
    /// Adds to the candidates, from the zones nearest the subject, children weaker than
    /// <paramref name="cap"/> at <paramref name="depth"/> of relays at the level above: a push-down
    /// near the joiner, so that its subtree hangs from a parent near it. Relays with no weaker child
    /// are dropped from the zone's queue (queued again when their children change).
    /// </summary>
    private void CollectNearWeaker(int shard, int cap, int depth)
    {
        Span<int> drop = stackalloc int[4 * WeakerPerZone];
        for (var zi = 0; zi < Math.Min(_nearCount, NearZones); zi++)
        {
            var queue = _zones.Relays(_near[zi], shard).At(depth - 1);
            if (queue is null)
            {
                continue;
            }

            var taken = 0;
            var dropped = 0;
            var examine = Math.Min(queue.Count, 4 * WeakerPerZone);
            for (var j = 0; j < examine; j++)
            {
                _forest.Prefetch(queue[j], shard);
            }

            for (var j = 0; j < examine && taken < WeakerPerZone; j++)
            {
                var relay = queue[j];
                var found = None;
                if (_forest.IsAlive(relay) && _forest.Depth(relay, shard) == depth - 1 && _forest.Cap(relay, shard) > 0)
                {
                    // The first child's capacity is in the relay's own record: most often it is
                    // weaker, and its record is not read at all.
                    var first = _forest.FirstChild(relay, shard);
                    if (first != None && _forest.FirstChildCap(relay, shard) < cap)
                    {
                        found = first;
                    }

                    for (var c = found != None || first == None ? None : _forest.NextSibling(first, shard); c != None; c = _forest.NextSibling(c, shard))
                    {
                        if (_forest.Cap(c, shard) < cap)
                        {
                            found = c;
                            break;
                        }
                    }
                }

                if (found == None)
                {
                    drop[dropped++] = j;
                    _zones.DroppedRelay(relay, shard, depth - 1);
                }
                else if (!_candidates.Contains(found))
                {
                    _candidates.Add(found);
                    _nearParents.Add(relay);
                    PrefetchCoordinate(relay);
                    taken++;
                }
            }

            queue.RemoveNearFront(drop[..dropped]);
        }
    }

    /// <summary>Of the weaker candidates, the one whose parent gives the subject the lowest estimated delay, the shortest last edge winning within the slack.</summary>
    private int BestWeaker(int shard, int blind)
    {
        _costs.Clear();
        _lastEdges.Clear();
        for (var i = 0; i < _nearFrom; i++)
        {
            // The parents' records and coordinates are read at random: all requested at once.
            var parent = _forest.Parent(_candidates[i], shard);
            if (parent >= 0)
            {
                _forest.Prefetch(parent, shard);
                PrefetchCoordinate(parent);
            }
        }

        for (var i = 0; i < _candidates.Count; i++)
        {
            // The near ones' parents are the relays they were found under (no read of their records).
            var parent = i >= _nearFrom ? _nearParents[i - _nearFrom] : _forest.Parent(_candidates[i], shard);
            var measured = false;
            var last = parent == None ? double.MaxValue : LastEdge(parent, out measured);
            var cost = parent == None ? double.MaxValue : Cost(parent, shard, last, measured);
            _costs.Add(cost);
            _lastEdges.Add(last);
        }

        return ShortestWithinSlack(blind);
    }

    /// <summary>Up to <paramref name="max"/> parents the subject would consider in <paramref name="shard"/>, best first (for probing).</summary>
    public void Preview(int shard, int maxParentDepth, int blind, int max, List<(double Cost, int Node)> result)
    {
        var k = _forest.ShardCount;
        if (_previewVersion is null)
        {
            _previewVersion = new long[k];
            _previewDepth = new int[k];
            _previewNarrow = new int[k];
            _previewWideNear = new bool[k];
            _previewCandidates = new List<int>[k];
            for (var s = 0; s < k; s++)
            {
                _previewCandidates[s] = [];
            }
        }

        if (_previewNode != _subjectNode || !SameNearZones(NearZones))
        {
            Array.Fill(_previewVersion, -1);
            _previewNode = _subjectNode;
            _previewNearCount = _nearCount;
            Array.Copy(_near, _previewNear, _near.Length);
        }

        ChooseOpen(shard, maxParentDepth, blind);
        _previewNarrow![shard] = _narrow;
        _previewWideNear![shard] = _wide;
        if (_wide)
        {
            // The search looked farther: the wide list of zones (the nearest ones are the same).
            _previewNearCount = _nearCount;
            Array.Copy(_near, _previewNear, _near.Length);
        }

        _previewVersion[shard] = _forest.ShardVersion(shard);
        _previewDepth![shard] = maxParentDepth;
        _previewCandidates![shard].Clear();
        _previewCandidates[shard].AddRange(_candidates);
        var start = result.Count;
        for (var i = 0; i < _candidates.Count; i++)
        {
            var cost = _costs[i];
            if (cost < double.MaxValue)
            {
                result.Add((cost, _candidates[i]));
            }
        }

        // Insertion sort: a few dozen entries at most (List.Sort's generic comparer costs more).
        for (var i = start + 1; i < result.Count; i++)
        {
            var entry = result[i];
            var j = i;
            while (j > start && Compare(result[j - 1], entry) > 0)
            {
                result[j] = result[j - 1];
                j--;
            }

            result[j] = entry;
        }

        if (result.Count - start > max)
        {
            result.RemoveRange(start + max, result.Count - start - max);
        }
    }

    /// <summary>The order of <see cref="Comparer{T}.Default"/> for (cost, node): cost, then node.</summary>
    private static int Compare((double Cost, int Node) a, (double Cost, int Node) b)
    {
        var c = a.Cost.CompareTo(b.Cost);
        return c != 0 ? c : a.Node.CompareTo(b.Node);
    }

    /// <summary>
    /// The candidate with the lowest estimated delay from the source, except that among those
    /// within <see cref="DelaySlackMs"/> and <see cref="DelaySlackShare"/> of it the one with the
    /// shortest last edge wins: a long edge whose path happens to be a few ms shorter would
    /// cross an ocean for every child (and a whole subtree's traffic with it).
    /// </summary>
    private int Best(int shard, int blind)
    {
        _costs.Clear();
        _lastEdges.Clear();
        foreach (var node in _candidates)
        {
            var last = LastEdge(node, out var measured);
            var cost = Cost(node, shard, last, measured);
            _costs.Add(cost);
            _lastEdges.Add(last);
        }

        return ShortestWithinSlack(blind);
    }

    /// <summary>
    /// Of the candidates scored in <see cref="_costs"/> and <see cref="_lastEdges"/>, the one with
    /// the shortest last edge among those within the slack of the lowest cost;
    /// <paramref name="blind"/> when no candidate is attached to the source.
    /// </summary>
    private int ShortestWithinSlack(int blind)
    {
        var bestCost = double.MaxValue;
        foreach (var cost in _costs)
        {
            bestCost = Math.Min(bestCost, cost);
        }

        if (bestCost == double.MaxValue)
        {
            return blind;
        }

        var limit = Math.Max(bestCost + DelaySlackMs, bestCost * (1 + DelaySlackShare));
        var best = blind;
        var shortest = double.MaxValue;
        for (var i = 0; i < _candidates.Count; i++)
        {
            if (_costs[i] <= limit && _lastEdges[i] < shortest)
            {
                shortest = _lastEdges[i];
                best = _candidates[i];
            }
        }

        return best;
    }

    /// <summary>Slack (ms) on the delay from the source within which the shortest last edge wins.</summary>
    public const double DelaySlackMs = 10;

    /// <summary>Slack, as a share of the lowest delay, within which the shortest last edge wins.</summary>
    public const double DelaySlackShare = 0.1;

    private readonly List<double> _costs = [];

    // The candidates the last probe suggestion found per shard, for the same subject's join.
    private int _previewNode = None;
    private long[]? _previewVersion;
    private int[]? _previewDepth;
    private List<int>[]? _previewCandidates;
    private readonly int[] _previewNear = new int[WideZones];
    private int _previewNearCount = -1;

    // Per tree, how many of the suggestion's candidates came from the NearZones nearest zones,
    // and whether it looked farther; the same for the last ChooseOpen.
    private int[]? _previewNarrow;
    private bool[]? _previewWideNear;
    private int _narrow;
    private bool _wide;

    /// <summary>True when the subject's <paramref name="count"/> nearest zones are those of its probe suggestion.</summary>
    private bool SameNearZones(int count)
    {
        var n = Math.Min(count, _nearCount);
        return Math.Min(count, _previewNearCount) == n && _near.AsSpan(0, n).SequenceEqual(_previewNear.AsSpan(0, n));
    }
    private readonly List<double> _lastEdges = [];

    /// <summary>The RTT from the subject to <paramref name="parent"/>: measured (<paramref name="measured"/>) if the subject probed it, else estimated.</summary>
    private double LastEdge(int parent, out bool measured)
    {
        var rtt = 0.0;
        if (_measuredCount > 0)
        {
            var at = _measuredNodes.AsSpan(0, _measuredCount).IndexOf(parent);
            measured = at >= 0;
            rtt = measured ? _measuredRtts[at] : 0;
        }
        else
        {
            measured = _measured is not null && _measured.TryGetValue(parent, out rtt);
        }

        return measured ? rtt : _subject.EstimateRtt(CoordinateOf(parent));
    }

    /// <summary>
    /// Estimated one-way delay from the source to the subject through <paramref name="parent"/>
    /// (ms); <see cref="double.MaxValue"/> when the parent is not attached to the source.
    /// </summary>
    public double Cost(int parent, int shard)
    {
        var last = LastEdge(parent, out var measured);
        return Cost(parent, shard, last, measured);
    }

    private double Cost(int parent, int shard, double last, bool measured)
    {
        var path = _exact ? PathDelay(parent, shard) : CachedPathDelay(parent, shard);
        return path == double.MaxValue ? path : path + (last / 2) + Locality(parent, shard, measured ? last : double.NaN);
    }

    /// <summary>Depth from which a parent should be in the placed node's neighbourhood (the levels above are where paths branch off to the regions).</summary>
    public const int LocalFromDepth = 3;

    /// <summary>Core RTT (ms, access links left out) within which two nodes are neighbours: less than between any two regions' hubs of the world model (56 ms at least).</summary>
    public const double NeighbourhoodMs = 40;

    /// <summary>Added to the estimated delay through a parent outside the neighbourhood below the top: any parent in it is preferred.</summary>
    public const double FarPenaltyMs = 1000;

    /// <summary>True when some candidate is a parent in the subject's neighbourhood (or the rule does not apply to it).</summary>
    private bool AnyLocal(int shard)
    {
        foreach (var c in _candidates)
        {
            if (Locality(c, shard, double.NaN) == 0)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// <see cref="FarPenaltyMs"/> when <paramref name="parent"/> is at depth <see cref="LocalFromDepth"/>
    /// or deeper and not in the subject's neighbourhood, else 0. A path then crosses from the
    /// source's region to the subject's near the top, at most once, and stays there: a peer hanging
    /// under a relay of another region pays that region's detour twice (in and out), and so does
    /// every peer below it. The core RTT is <paramref name="measuredRtt"/> (the RTT the subject
    /// measured to the parent; coordinates in a plane put some regions too close) less both
    /// heights, or if NaN the distance of the two points.
    /// </summary>
    private double Locality(int parent, int shard, double measuredRtt)
    {
        if (parent == Source)
        {
            return 0;
        }

        var pc = CoordinateOf(parent);
        bool far;
        if (!double.IsNaN(measuredRtt))
        {
            far = measuredRtt - pc.Height - _subject.Height > NeighbourhoodMs;
        }
        else
        {
            var dx = pc.X - _subject.X;
            var dy = pc.Y - _subject.Y;
            far = (dx * dx) + (dy * dy) > NeighbourhoodMs * NeighbourhoodMs;
        }

        // The depth last: most candidates are neighbours, and it is one more read of a big array.
        return far && _forest.Depth(parent, shard) >= LocalFromDepth ? FarPenaltyMs : 0;
    }

    /// <summary>Joins for which a cached path delay stays in use (it is an estimate: coordinates move too).</summary>
    public const int PathCacheJoins = 4096;

    private bool _exact;
    private int _joins;

    /// <summary><see cref="PathDelay"/> from a cache of at most <see cref="PathCacheJoins"/> joins, filled on the way up.</summary>
    /// <remarks>
    /// Per (node, shard), the cached delay and the join count it was computed at (0: none) are kept
    /// in the forest's record of the pair (<see cref="ShardForest.Slot"/>), on the cache line that
    /// checking the node's free slot reads anyway.
    /// </remarks>
    private double CachedPathDelay(int node, int shard)
    {
        if (node == Source)
        {
            return 0;
        }

        ref var slot = ref _forest.SlotOf(node, shard);
        if (slot.PathStamp != 0 && _joins - slot.PathStamp < PathCacheJoins)
        {
            return slot.PathDelay;
        }

        return FillPathDelay(node, shard);
    }

    /// <summary><see cref="CachedPathDelay"/> when the cache has no fresh entry for (<paramref name="node"/>, <paramref name="shard"/>).</summary>
    private double FillPathDelay(int node, int shard)
    {
        var parent = _forest.Parent(node, shard);
        if (parent == None || !_forest.IsAlive(node))
        {
            return double.MaxValue;
        }

        var above = CachedPathDelay(parent, shard);
        if (above == double.MaxValue)
        {
            return above;
        }

        var delay = above + (CoordinateOf(node).EstimateRtt(CoordinateOf(parent)) / 2);
        ref var slot = ref _forest.SlotOf(node, shard);
        slot.PathDelay = (float)delay;
        slot.PathStamp = Math.Max(1, _joins);
        return delay;
    }

    /// <summary>Estimated one-way delay from the source to <paramref name="node"/> along its tree path (ms).</summary>
    public double PathDelay(int node, int shard)
    {
        var delay = 0.0;
        var steps = 0;
        while (node != Source)
        {
            var parent = _forest.Parent(node, shard);
            if (parent == None || !_forest.IsAlive(node) || ++steps > 4096)
            {
                return double.MaxValue;
            }

            delay += CoordinateOf(node).EstimateRtt(CoordinateOf(parent)) / 2;
            node = parent;
        }

        return delay;
    }

    /// <summary>
    /// The <paramref name="wanted"/> (at most <see cref="WideZones"/>) zones nearest
    /// <paramref name="c"/>, nearest first (ties: the older zone first), into <see cref="_near"/>.
    /// The <see cref="WideZones"/> nearest are found at once and kept for the last two points asked
    /// about (the subject, and a leaf it pushes down): the <see cref="NearZones"/> nearest are their
    /// first ones, so a search that widens costs no second pass over the zones.
    /// </summary>
    private void FindNearZones(NetworkCoordinate c, int wanted = NearZones)
    {
        var slot = NearestFor(c.X, c.Y);
        _nearCount = Math.Min(wanted, _nearestCount[slot]);
        Array.Copy(_nearest[slot], _near, _nearestCount[slot]);
    }

    // The WideZones nearest zones of the last two points asked about: point, zone count then, result.
    private readonly (double X, double Y, int Zones)[] _nearestKey = [(double.NaN, double.NaN, -1), (double.NaN, double.NaN, -1)];
    private readonly int[][] _nearest = [new int[WideZones], new int[WideZones]];
    private readonly int[] _nearestCount = new int[2];
    private int _nearestLast;
    private readonly double[] _zoneDistances = new double[ZoneIndex.MaxZones];

    /// <summary>The slot of <see cref="_nearest"/> that holds the <see cref="WideZones"/> zones nearest (<paramref name="x"/>, <paramref name="y"/>).</summary>
    private int NearestFor(double x, double y)
    {
        var zones = _zones.Count;
        for (var i = 0; i < 2; i++)
        {
            var key = _nearestKey[i];
            if (key.X == x && key.Y == y && key.Zones == zones)
            {
                return i;
            }
        }

        var slot = _nearestLast = 1 - _nearestLast;
        _nearestKey[slot] = (x, y, zones);
        var near = _nearest[slot];
        var distances = _zoneDistances.AsSpan(0, zones);
        SquaredDistances(_zones.CentreX, _zones.CentreY, x, y, distances);
        Span<int> order = stackalloc int[ZoneIndex.MaxZones];
        var considered = Shortlist(distances, order);
        Span<double> best = stackalloc double[WideZones];
        var count = 0;
        foreach (var z in order[..considered])
        {
            var d = distances[z];
            if (count == WideZones && best[WideZones - 1] <= d)
            {
                continue;
            }

            // Insertion into the short sorted list of the nearest zones (after equal ones).
            var at = count;
            while (at > 0 && best[at - 1] > d)
            {
                at--;
            }

            if (at >= WideZones)
            {
                continue;
            }

            var last = Math.Min(count, WideZones - 1);
            for (var i = last; i > at; i--)
            {
                best[i] = best[i - 1];
                near[i] = near[i - 1];
            }

            best[at] = d;
            near[at] = z;
            count = Math.Min(count + 1, WideZones);
        }

        _nearestCount[slot] = count;
        return slot;
    }

    /// <summary>
    /// The zones that may be among the <see cref="WideZones"/> nearest, in increasing order, into
    /// <paramref name="order"/>; returns how many. By the triangle inequality the nearest zone's
    /// own <see cref="WideZones"/> nearest (itself included) lie within its distance plus their
    /// reach (<see cref="Reach"/>), so no zone farther than that can be among them: the sorted
    /// insertion then sees a few dozen zones instead of all (its mispredicted branches cost more
    /// than the distances). The result is the same: the zones left out are never inserted.
    /// </summary>
    private int Shortlist(ReadOnlySpan<double> distances, Span<int> order)
    {
        var n = distances.Length;
        var least = double.MaxValue;
        var z4 = Vector256.IsHardwareAccelerated ? n & ~3 : 0;
        if (z4 > 0)
        {
            var min = Vector256.Create(double.MaxValue);
            for (var z = 0; z < z4; z += 4)
            {
                min = Vector256.Min(min, Vector256.Create(distances.Slice(z, 4)));
            }

            least = Math.Min(Math.Min(min[0], min[1]), Math.Min(min[2], min[3]));
        }

        for (var z = z4; z < n; z++)
        {
            least = Math.Min(least, distances[z]);
        }

        var nearest = least < double.MaxValue ? distances.IndexOf(least) : -1;
        var count = 0;
        if (nearest >= 0 && n > 2 * WideZones)
        {
            // A margin far above the rounding of the squares and roots.
            var bound = Math.Sqrt(least) + Reach(nearest);
            var bound2 = (bound * bound * (1 + 1e-9)) + 1e-9;
            var limit = Vector256.Create(bound2);
            for (var z = 0; z < n; z += 4)
            {
                // Four at a time: which of them are within the bound, as bits.
                var within = z < z4 ? Vector256.LessThanOrEqual(Vector256.Create(distances.Slice(z, 4)), limit).ExtractMostSignificantBits() : 0u;
                for (var j = z < z4 ? 4 : 0; j < 4 && z + j < n; j++)
                {
                    within |= distances[z + j] <= bound2 ? 1u << j : 0;
                }

                while (within != 0)
                {
                    order[count++] = z + System.Numerics.BitOperations.TrailingZeroCount(within);
                    within &= within - 1;
                }
            }

            if (count >= WideZones)
            {
                return count;
            }
        }

        // Few zones, or a point not a number: every zone, as it comes.
        for (var z = 0; z < n; z++)
        {
            order[z] = z;
        }

        return n;
    }

    // Per zone: the distance (ms in the plane) within which its WideZones nearest zones lay, itself
    // included, and how many zones there were then (more zones later: still an upper bound).
    private readonly double[] _reach = new double[ZoneIndex.MaxZones];
    private readonly int[] _reachZones = new int[ZoneIndex.MaxZones];

    /// <summary>An upper bound on the distance from <paramref name="zone"/>'s centre to its <see cref="WideZones"/>-th nearest centre (itself the first); computed again when 16 zones were added since.</summary>
    private double Reach(int zone)
    {
        var zones = _zones.Count;
        if (_reachZones[zone] == 0 || zones > _reachZones[zone] + 16)
        {
            var (x, y) = _zones.Centre(zone);
            var d = new double[zones];
            SquaredDistances(_zones.CentreX, _zones.CentreY, x, y, d);
            Array.Sort(d);
            _reach[zone] = Math.Sqrt(d[Math.Min(WideZones, zones) - 1]);
            _reachZones[zone] = zones;
        }

        return _reach[zone];
    }

    /// <summary>(cx - x)² + (cy - y)² for every centre, four at a time where the machine has the vectors (the same IEEE operations in the same order: the same values).</summary>
    private static void SquaredDistances(ReadOnlySpan<double> cx, ReadOnlySpan<double> cy, double x, double y, Span<double> into)
    {
        var z = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vx = Vector256.Create(x);
            var vy = Vector256.Create(y);
            for (; z + 4 <= into.Length; z += 4)
            {
                var dx = Vector256.Create(cx.Slice(z, 4)) - vx;
                var dy = Vector256.Create(cy.Slice(z, 4)) - vy;
                ((dx * dx) + (dy * dy)).StoreUnsafe(ref into[z]);
            }
        }

        for (; z < into.Length; z++)
        {
            var dx = cx[z] - x;
            var dy = cy[z] - y;
            into[z] = (dx * dx) + (dy * dy);
        }
    }
}

using System.Runtime.Intrinsics;

namespace ShardStream.Topology;

/// <summary>
/// Latency-aware placement: exchanges at the top of a tree. The first peers to arrive fill the
/// first levels, from anywhere, and every path crosses them; a later joiner that fills one of
/// those places much better takes it (see <see cref="FindTopExchange"/>).
/// </summary>
internal sealed partial class LatencyPlacement
{
    /// <summary>
    /// A node of the top <paramref name="topDepth"/> levels of <paramref name="shard"/> whose place
    /// <paramref name="joiner"/> (just placed, deeper, with capacity) would fill much better: its
    /// estimated RTT to that place's parent plus the mean to that place's children is lower by at
    /// least <see cref="ExchangeMarginMs"/> and <see cref="ExchangeMarginShare"/>. Every path
    /// crosses these few nodes, so their placement by join order (the first peers to arrive) costs
    /// every viewer; an exchange costs one Move per child of the place. <see cref="Planner.None"/> if none.
    /// The places are summarised (parent and its coordinate, centroid of the children) every <see cref="TopRefresh"/>
    /// joins and after every exchange, so that a join costs one estimate per place; the chosen
    /// place is checked exactly before it is returned.
    /// </summary>
    public int FindTopExchange(int joiner, int shard, int topDepth)
    {
        _tops ??= new List<TopPlace>?[_forest.ShardCount];
        _topAge ??= new int[_forest.ShardCount];
        var tops = _tops[shard] ??= [];
        if (++_topAge[shard] >= TopRefresh)
        {
            _topKey ??= NoKeys();
            var key = TopKey(shard, topDepth, 0, topDepth);
            if (key.Depth >= 0 && _topKey[shard] == key)
            {
                _topAge[shard] = 0; // the summary would be the same
            }
            else
            {
                RefreshTop(shard, topDepth, tops);
                _topKey[shard] = key;
            }
        }

        var joinerDepth = _forest.Depth(joiner, shard);
        var cap = _forest.Cap(joiner, shard);
        var me = CoordinateOf(joiner);
        var best = None;
        var bestGain = 0.0;
        foreach (var top in tops)
        {
            // The estimate first, from the summary alone (no lookups in the big arrays): most
            // places are no better, and a join looks at every place of the top levels.
            if (top.Cost <= ExchangeMarginMs)
            {
                continue;
            }

            var px = me.X - top.ParentX;
            var py = me.Y - top.ParentY;
            var dx = me.X - top.X;
            var dy = me.Y - top.Y;
            var mine = Math.Sqrt((px * px) + (py * py)) + me.Height + top.ParentHeight
                + (top.Children == 0 ? 0 : Math.Sqrt((dx * dx) + (dy * dy)) + me.Height + top.Height);
            var gain = top.Cost - mine;
            if (gain <= ExchangeMarginMs || gain <= ExchangeMarginShare * top.Cost || gain <= bestGain)
            {
                continue;
            }

            var place = top.Node;
            if (place == joiner || !_forest.IsAlive(place) || _forest.Parent(place, shard) != top.Parent
                || _forest.Depth(place, shard) >= joinerDepth || _forest.Cap(place, shard) > cap || _forest.ChildCount(place, shard) > cap)
            {
                continue;
            }

            bestGain = gain;
            best = place;
        }

        if (best == None)
        {
            return None;
        }

        // Checked exactly: the mean of the distances is never below the distance to the centroid.
        var theirs = PlaceCost(best, best, shard, joiner);
        var exact = theirs - PlaceCost(joiner, best, shard, joiner);
        if (exact <= ExchangeMarginMs || exact <= ExchangeMarginShare * theirs)
        {
            return None;
        }

        _topAge[shard] = TopRefresh; // the top changes: summarise again at the next join
        return best;
    }

    /// <summary>
    /// A node of the top <paramref name="topDepth"/> levels of <paramref name="shard"/> that is much
    /// farther from the source than <paramref name="joiner"/> (just placed, deeper, with capacity):
    /// the one farthest from it, if the joiner is closer by at least <see cref="NearMarginMs"/> and
    /// <see cref="NearMarginShare"/>. <see cref="Planner.None"/> if none. Like is compared with
    /// like: a joiner that measured its RTT to the source is compared with the places whose RTT is
    /// recorded (<see cref="SetSourceRtt"/>) and takes none of the others; one that did not is
    /// compared by estimates. A measured RTT against an estimate would see a difference that is not
    /// there (on one host: a fraction of a millisecond measured against the coordinates' error).
    /// A joiner in the source's neighbourhood (<see cref="Near"/>) may also take, by the same rule,
    /// the place of a node of level <paramref name="columnDepth"/> that is outside it and hangs
    /// from a chain of nodes in it: the neighbourhood's own subtree grows there as deep as its
    /// peers need (by arrival its share of that level is too small to hold all of its relays of the
    /// level below, whose leaves then hang under relays of other regions), while the other regions
    /// branch off it higher up.
    /// </summary>
    public int FindNearSourceExchange(int joiner, int shard, int topDepth, int columnDepth)
    {
        _nearTop ??= new List<NearPlace>?[_forest.ShardCount];
        _nearAge ??= new int[_forest.ShardCount];
        var tops = _nearTop[shard] ??= [];
        if (++_nearAge[shard] >= TopRefresh || tops.Count == 0)
        {
            _nearKey ??= NoKeys();
            var key = TopKey(shard, Math.Max(topDepth, columnDepth) - 1, topDepth, columnDepth);
            if (key.Depth >= 0 && _nearKey[shard] == key)
            {
                _nearAge[shard] = 0; // the summary would be the same
            }
            else
            {
                RefreshNear(shard, topDepth, columnDepth, tops);
                _nearKey[shard] = key;
            }
        }

        var estimated = CoordinateOf(joiner).EstimateRtt(CoordinateOf(Source));
        var measured = MeasuredSourceRtt(joiner);
        var joinerDepth = _forest.Depth(joiner, shard);
        var cap = _forest.Cap(joiner, shard);
        var joinerNear = Near(joiner);
        var best = None;
        var bestRtt = 0.0;
        foreach (var top in tops)
        {
            if (top.Column && !joinerNear)
            {
                continue; // a place of the source neighbourhood's subtree: for a joiner in it only
            }

            // The places are few (the first levels): every one is compared, on the figures both
            // sides have (a recorded RTT is read now: it may have changed since the summary).
            var theirMeasured = MeasuredSourceRtt(top.Node);
            if (!double.IsNaN(measured) && double.IsNaN(theirMeasured))
            {
                continue; // nothing to compare a measurement with: no exchange (see the remarks above)
            }

            var (theirs, mine) = double.IsNaN(measured) ? (top.Estimated, estimated) : (theirMeasured, measured);
            if (theirs <= bestRtt || theirs - mine <= NearMarginMs || theirs - mine <= NearMarginShare * theirs)
            {
                continue;
            }

            var place = top.Node;
            if (place == joiner || !_forest.IsAlive(place) || _forest.Parent(place, shard) != top.Parent
                || _forest.Depth(place, shard) >= joinerDepth || _forest.Cap(place, shard) > cap || _forest.ChildCount(place, shard) > cap)
            {
                continue;
            }

            best = place;
            bestRtt = theirs;
        }

        if (best != None)
        {
            _nearAge[shard] = TopRefresh; // the top changes: summarise again at the next join
        }

        return best;
    }

    /// <summary>
    /// Records the RTT <paramref name="node"/> measured to the source (ms; NaN, zero or less: none),
    /// which the near-source exchange compares with other measured RTTs.
    /// </summary>
    public void SetSourceRtt(int node, double rttMs)
    {
        if (node >= _sourceRtt.Length)
        {
            var old = _sourceRtt.Length;
            Array.Resize(ref _sourceRtt, Math.Max(node + 1, old * 2));
            Array.Fill(_sourceRtt, float.NaN, old, _sourceRtt.Length - old);
        }

        _sourceRtt[node] = rttMs > 0 ? (float)rttMs : float.NaN;
    }

    /// <summary>The RTT <paramref name="node"/> measured to the source (NaN if none).</summary>
    internal double MeasuredSourceRtt(int node) => node < _sourceRtt.Length ? _sourceRtt[node] : double.NaN;

    /// <summary>Least difference (ms of RTT to the source) for a near-source exchange.</summary>
    public const double NearMarginMs = 10;

    /// <summary>Least difference, as a share of the occupant's RTT to the source, for a near-source exchange.</summary>
    public const double NearMarginShare = 0.1;

    /// <summary>
    /// True when <paramref name="node"/> is in the source's neighbourhood: its point in the plane
    /// (the core part of its coordinate, access links left out) within <see cref="NeighbourhoodMs"/>
    /// of the source's.
    /// </summary>
    private bool Near(int node)
    {
        if (node == Source)
        {
            return true;
        }

        var c = CoordinateOf(node);
        var s = CoordinateOf(Source);
        var dx = c.X - s.X;
        var dy = c.Y - s.Y;
        return (dx * dx) + (dy * dy) <= NeighbourhoodMs * NeighbourhoodMs;
    }

    private readonly record struct NearPlace(int Node, int Parent, double Estimated, bool Column);

    private List<NearPlace>?[]? _nearTop;
    private int[]? _nearAge;
    private float[] _sourceRtt = [];

    private void RefreshNear(int shard, int topDepth, int columnDepth, List<NearPlace> tops)
    {
        _nearAge![shard] = 0;
        tops.Clear();
        _walk.Clear();
        _walk.Push(Source);
        var source = CoordinateOf(Source);
        while (_walk.Count > 0)
        {
            var node = _walk.Pop();
            var depth = _forest.Depth(node, shard);
            // The top levels, and at columnDepth the places outside the source's neighbourhood
            // whose parent is in it (reached through nodes in it only).
            if (node != Source && (depth <= topDepth || (depth == columnDepth && !Near(node))))
            {
                tops.Add(new NearPlace(node, _forest.Parent(node, shard), CoordinateOf(node).EstimateRtt(source), depth > topDepth));
            }

            if (depth < topDepth || (depth < columnDepth && Near(node)))
            {
                for (var c = _forest.FirstChild(node, shard); c != None; c = _forest.NextSibling(c, shard))
                {
                    _walk.Push(c);
                }
            }
        }
    }

    /// <summary>
    /// Deepest level whose children the top summaries and the level sorts read (the planner's
    /// <see cref="Planner.ExchangeDepth"/>, <see cref="Planner.ColumnDepth"/> - 1 and
    /// <see cref="Planner.SortDepth"/> - 1): the forest counts the edges attached and detached
    /// under these levels (<see cref="ShardForest.TopVersion"/>) and this class the coordinates
    /// changed of the nodes down to the level below (<see cref="NoteTopCoordinate"/>). While
    /// neither count moves, a summary or a sort of the top reads the same figures as the last one
    /// and is not done again (the same result, without reading thousands of records and
    /// coordinates at random).
    /// </summary>
    public const int TopWatchDepth = 3;

    // Per shard: coordinates changed so far of nodes that may be in the watched levels.
    private readonly long[] _coordinateVersion;

    /// <summary>A coordinate changed: counted in every shard where the node may be in the watched levels.</summary>
    private void NoteTopCoordinate(int node)
    {
        for (var s = 0; s < _coordinateVersion.Length; s++)
        {
            if (_forest.MayBeInTop(node, s))
            {
                _coordinateVersion[s]++;
            }
        }
    }

    /// <summary>What a summary or sort of <paramref name="shard"/> that reads the children of levels down to <paramref name="deepestParent"/> depends on, with its arguments; depth -1 (never equal) when those levels are not watched.</summary>
    private TopState TopKey(int shard, int deepestParent, int a, int b)
        => new(_forest.TopVersion(shard), _coordinateVersion[shard], deepestParent <= TopWatchDepth ? a : -1, b);

    private TopState[] NoKeys()
    {
        var keys = new TopState[_forest.ShardCount];
        Array.Fill(keys, new TopState(-1, -1, -1, -1));
        return keys;
    }

    private readonly record struct TopState(long Edges, long Coordinates, int Depth, int Other);

    // Per shard: the state the last summary was made in (and the last sort that found nothing to swap).
    private TopState[]? _topKey;
    private TopState[]? _nearKey;
    private TopState[]? _sortKey;

    /// <summary>Joins between two summaries of the top places of a tree.</summary>
    public const int TopRefresh = 64;

    private readonly record struct TopPlace(int Node, int Parent, double Cost, double X, double Y, double Height, int Children, double ParentX, double ParentY, double ParentHeight);

    private List<TopPlace>?[]? _tops;
    private int[]? _topAge;
    private readonly Stack<int> _walk = new();

    private void RefreshTop(int shard, int topDepth, List<TopPlace> tops)
    {
        _topAge![shard] = 0;
        tops.Clear();
        _walk.Clear();
        _walk.Push(Source);
        while (_walk.Count > 0)
        {
            var node = _walk.Pop();
            var down = _forest.Depth(node, shard) < topDepth;
            if (node == Source)
            {
                for (var c = _forest.FirstChild(node, shard); down && c != None; c = _forest.NextSibling(c, shard))
                {
                    _walk.Push(c);
                }

                continue;
            }

            // One pass over the children: their centroid, the mean of the place's RTTs to them
            // (PlaceCost, in the same order), and the walk down.
            var me = CoordinateOf(node);
            double x = 0, y = 0, h = 0, sum = 0;
            var n = 0;
            for (var c = _forest.FirstChild(node, shard); c != None; c = _forest.NextSibling(c, shard))
            {
                var cc = CoordinateOf(c);
                x += cc.X;
                y += cc.Y;
                h += cc.Height;
                sum += me.EstimateRtt(cc);
                n++;
                if (down)
                {
                    _walk.Push(c);
                }
            }

            var parent = _forest.Parent(node, shard);
            var pc = CoordinateOf(parent);
            var cost = (parent == None ? 0 : me.EstimateRtt(pc)) + (n == 0 ? 0 : sum / n);
            tops.Add(new TopPlace(node, parent, cost, n == 0 ? 0 : x / n, n == 0 ? 0 : y / n, n == 0 ? 0 : h / n, n, pc.X, pc.Y, pc.Height));
        }
    }

    /// <summary>Least gain (ms of RTT) for a top exchange.</summary>
    public const double ExchangeMarginMs = 20;

    /// <summary>Least gain, as a share of the place's current cost, for a top exchange.</summary>
    public const double ExchangeMarginShare = 0.2;

    /// <summary>Estimated RTT from <paramref name="candidate"/> to the parent of <paramref name="place"/> plus its mean RTT to the place's children (the joiner excluded).</summary>
    private double PlaceCost(int candidate, int place, int shard, int joiner)
    {
        var me = CoordinateOf(candidate);
        var parent = _forest.Parent(place, shard);
        var cost = parent == None ? 0 : me.EstimateRtt(CoordinateOf(parent));
        double sum = 0;
        var n = 0;
        for (var c = _forest.FirstChild(place, shard); c != None; c = _forest.NextSibling(c, shard))
        {
            if (c != joiner && c != candidate)
            {
                sum += me.EstimateRtt(CoordinateOf(c));
                n++;
            }
        }

        return cost + (n == 0 ? 0 : sum / n);
    }
    /// <summary>Least gain (ms, sum of the two edges' estimated RTTs) for two nodes of one level to swap parents.</summary>
    public const double SwapMarginMs = 10;

    /// <summary>Parents a node of the sorted levels looks at (the nearest by estimate) when it looks for a swap.</summary>
    private const int SwapParents = 2;

    private readonly List<int> _upper = [];
    private readonly List<int> _lower = [];
    private double[] _upperX = [], _upperY = [], _upperHeight = [], _upperRtt = [];

    /// <summary>
    /// <paramref name="from"/>'s <see cref="NetworkCoordinate.EstimateRtt"/> to each of the points
    /// (<paramref name="x"/>, <paramref name="y"/>, <paramref name="height"/>), into
    /// <paramref name="into"/>: four at a time where the machine has the vectors, with the same
    /// IEEE operations in the same order (the same values).
    /// </summary>
    private static void EstimateRtts(NetworkCoordinate from, ReadOnlySpan<double> x, ReadOnlySpan<double> y, ReadOnlySpan<double> height, Span<double> into)
    {
        var i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var fx = Vector256.Create(from.X);
            var fy = Vector256.Create(from.Y);
            var fh = Vector256.Create(from.Height);
            for (; i + 4 <= into.Length; i += 4)
            {
                var dx = fx - Vector256.Create(x.Slice(i, 4));
                var dy = fy - Vector256.Create(y.Slice(i, 4));
                (Vector256.Sqrt((dx * dx) + (dy * dy)) + fh + Vector256.Create(height.Slice(i, 4))).StoreUnsafe(ref into[i]);
            }
        }

        for (; i < into.Length; i++)
        {
            into[i] = from.EstimateRtt(new NetworkCoordinate(x[i], y[i], height[i]));
        }
    }

    /// <summary>
    /// Sorts the levels 2..<paramref name="maxDepth"/> of <paramref name="shard"/> by geography: two
    /// nodes of one level exchange parents when that shortens the sum of their two edges (estimated
    /// RTTs) by more than <see cref="SwapMarginMs"/>; their subtrees come along. The first peers
    /// fill these levels in join order, from anywhere, and every path crosses them: sorted, a node
    /// hangs under a parent near it, and so does its subtree's traffic. Depths, child counts and
    /// capacities do not change (each parent gives one child and takes one), so budgets and the
    /// depth bound hold; each swap costs two Moves. A swap lowers the sum of the level's edges by
    /// the margin, so passes cannot cycle while the coordinates stay put. A node looks only at the
    /// children of the <see cref="SwapParents"/> parents nearest it, and never takes a parent it
    /// must avoid (<paramref name="avoided"/>, child then parent).
    /// </summary>
    public void SortLevels(int shard, int maxDepth, Func<int, int, bool> avoided, Action<int, int> reattach)
    {
        // A sort that found no swap to try, with nothing changed since: it would find none again.
        _sortKey ??= NoKeys();
        var key = TopKey(shard, maxDepth - 1, maxDepth, 0);
        if (key.Depth >= 0 && _sortKey[shard] == key)
        {
            return;
        }

        var tried = false;
        _upper.Clear();
        _upper.Add(Source);
        for (var depth = 1; depth <= maxDepth && _upper.Count > 0; depth++)
        {
            _lower.Clear();
            foreach (var p in _upper)
            {
                for (var c = _forest.FirstChild(p, shard); c != None; c = _forest.NextSibling(c, shard))
                {
                    _lower.Add(c);
                }
            }

            if (depth >= 2 && _upper.Count >= 2)
            {
                SortLevel(shard);
            }

            _upper.Clear();
            _upper.AddRange(_lower);
        }

        _sortKey[shard] = tried ? new TopState(-1, -1, -1, -1) : key;

        void SortLevel(int shard)
        {
            Span<int> near = stackalloc int[SwapParents];
            Span<double> nearGain = stackalloc double[SwapParents];
            // The upper level's coordinates side by side: every node of the level below is
            // compared with every one of them.
            var n = _upper.Count;
            if (_upperX.Length < n)
            {
                var size = Math.Max(n, _upperX.Length * 2);
                (_upperX, _upperY, _upperHeight, _upperRtt) = (new double[size], new double[size], new double[size], new double[size]);
            }

            for (var i = 0; i < n; i++)
            {
                var uc = CoordinateOf(_upper[i]);
                (_upperX[i], _upperY[i], _upperHeight[i]) = (uc.X, uc.Y, uc.Height);
            }

            foreach (var c in _lower)
            {
                var p = _forest.Parent(c, shard);
                var cc = CoordinateOf(c);
                var pc = CoordinateOf(p);
                var now = cc.EstimateRtt(pc);
                var count = 0;
                EstimateRtts(cc, _upperX.AsSpan(0, n), _upperY.AsSpan(0, n), _upperHeight.AsSpan(0, n), _upperRtt.AsSpan(0, n));
                for (var i = 0; i < n; i++)
                {
                    var q = _upper[i];
                    if (q == p)
                    {
                        continue;
                    }

                    var gain = now - _upperRtt[i];
                    if (gain <= 0)
                    {
                        continue;
                    }

                    var at = count < SwapParents ? count++ : SwapParents;
                    while (at > 0 && nearGain[at - 1] < gain)
                    {
                        if (at < SwapParents)
                        {
                            near[at] = near[at - 1];
                            nearGain[at] = nearGain[at - 1];
                        }

                        at--;
                    }

                    if (at < SwapParents)
                    {
                        near[at] = q;
                        nearGain[at] = gain;
                    }
                }

                var bestGain = SwapMarginMs;
                var bestOther = None;
                for (var i = 0; i < count; i++)
                {
                    var q = near[i];
                    var qc = CoordinateOf(q);
                    var toQ = cc.EstimateRtt(qc);
                    for (var o = _forest.FirstChild(q, shard); o != None; o = _forest.NextSibling(o, shard))
                    {
                        var oc = CoordinateOf(o);
                        var gain = now + oc.EstimateRtt(qc) - toQ - oc.EstimateRtt(pc);
                        if (gain > bestGain)
                        {
                            bestGain = gain;
                            bestOther = o;
                        }
                    }
                }

                tried |= bestOther != None;
                if (bestOther != None && !avoided(c, _forest.Parent(bestOther, shard)) && !avoided(bestOther, p))
                {
                    var q = _forest.Parent(bestOther, shard);
                    _forest.Detach(c, shard);
                    _forest.Detach(bestOther, shard);
                    _forest.Attach(c, q, shard);
                    _forest.Attach(bestOther, p, shard);
                    reattach(c, q);
                    reattach(bestOther, p);
                }
            }
        }
    }
}

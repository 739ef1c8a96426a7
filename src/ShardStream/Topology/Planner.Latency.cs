namespace ShardStream.Topology;

/// <summary>
/// Latency-aware placement (<see cref="PlannerOptions.LatencyAware"/>): network coordinates of the
/// nodes, the nodes a joiner pings to find its own coordinate (landmarks) and to confirm its best
/// parents (probes), and joins that use them. Still pure: the caller measures, the planner decides.
/// </summary>
public sealed partial class Planner
{
    /// <summary>Peers kept as landmarks (with the source): every joiner pings some of them, so their coordinates stay sharp.</summary>
    public const int MaxAnchors = 16;

    private readonly LatencyPlacement? _latency;
    private readonly List<int> _anchors = [];
    // Per tree, the probe suggestions of the last ProbeCandidates (reused: no allocation per join).
    private List<(double Cost, int Node)>[] _perShard = [];

    /// <summary>True when the plan places by latency (<see cref="PlannerOptions.LatencyAware"/>).</summary>
    public bool LatencyAware => _latency is not null;

    /// <summary>The id the next successful <see cref="Join(int)"/> will return.</summary>
    public int NextPeerId => _nextId;

    /// <summary>The network coordinate the plan holds for <paramref name="node"/> (<see cref="NetworkCoordinate.Unknown"/> if none).</summary>
    public NetworkCoordinate CoordinateOf(int node)
    {
        Check(node, 0);
        return _latency?.CoordinateOf(node) ?? NetworkCoordinate.Unknown;
    }

    /// <summary>
    /// Updates the coordinate of the source or a live peer (as it reports a new one, e.g. in a
    /// heartbeat). Its zone (the bucket of its free slots) follows when it moved far from it
    /// (<see cref="LatencyPlacement.Rezone"/>). Ignored by a latency-blind plan.
    /// </summary>
    public void SetCoordinate(int node, NetworkCoordinate coordinate)
    {
        Check(node, 0);
        _latency?.SetCoordinate(node, coordinate);
        if (node != Source && _forest.IsAlive(node))
        {
            _latency?.Rezone(node);
        }
    }

    /// <summary>
    /// Records the RTT between a live peer and the source measured since it joined (ms), e.g. the
    /// least RTT of its control link. The near-source exchange compares a joiner's measured RTT to
    /// the source with the ones recorded for the peers at the top (its own, from
    /// <see cref="Join(int, NetworkCoordinate, IReadOnlyDictionary{int, double})"/>, until this
    /// replaces it), never with their estimates. Ignored by a latency-blind plan.
    /// </summary>
    public void SetSourceRtt(int node, double rttMs)
    {
        Check(node, 0);
        if (node != Source && _forest.IsAlive(node))
        {
            _latency?.SetSourceRtt(node, rttMs);
        }
    }

    /// <summary>
    /// The RTT to the source recorded for <paramref name="node"/> (<see cref="SetSourceRtt"/>, or
    /// the one its join carried); NaN if none, or for a latency-blind plan.
    /// </summary>
    internal double RecordedSourceRtt(int node) => _latency?.MeasuredSourceRtt(node) ?? double.NaN;

    /// <summary>
    /// The nodes a joiner should ping first to find its coordinate: the source and up to
    /// <paramref name="max"/> - 1 landmark peers (the earliest live joiners with a budget, up to
    /// <see cref="MaxAnchors"/>, taken in turns so that each is pinged often). A peer with no
    /// budget is no landmark: a coordinator gives none to a peer it could not connect to, and
    /// <see cref="Demote"/> takes it away. Empty for a latency-blind plan.
    /// </summary>
    public IReadOnlyList<int> Landmarks(int max)
    {
        if (_latency is null || max <= 0)
        {
            return [];
        }

        // A landmark must be reachable by joiners: a peer given no budget (the coordinator could
        // not connect to it, or others could not: demoted) is no landmark.
        _anchors.RemoveAll(a => !_forest.IsAlive(a) || Budget(a) == 0);
        var result = new List<int>(max) { Source };
        var start = _anchors.Count == 0 ? 0 : _nextId % _anchors.Count;
        for (var i = 0; i < _anchors.Count && result.Count < max; i++)
        {
            result.Add(_anchors[(start + i) % _anchors.Count]);
        }

        return result;
    }

    /// <summary>
    /// Up to <paramref name="max"/> nodes a joiner at <paramref name="coordinate"/> should ping
    /// before it joins: in every shard tree, the free slots it would most likely take, best
    /// estimate first, in turns over the trees. Empty for a latency-blind plan.
    /// </summary>
    public IReadOnlyList<int> ProbeCandidates(NetworkCoordinate coordinate, int max)
    {
        if (_latency is null || max <= 0 || coordinate.Error >= 1)
        {
            return [];
        }

        var probe = _nextId;
        var saved = _latency.CoordinateOf(probe);
        _latency.SetCoordinate(probe, coordinate);
        _latency.Begin(probe, null);
        if (_perShard.Length != ShardCount)
        {
            _perShard = [.. Enumerable.Range(0, ShardCount).Select(_ => new List<(double Cost, int Node)>())];
        }

        var perShard = _perShard;
        for (var s = 0; s < ShardCount; s++)
        {
            var suggested = perShard[s];
            suggested.Clear();
            var open = _forest.FindOpen(s, requireAttached: false);
            if (open != None)
            {
                // The joiner is not counted yet: the best depth of the peers already in.
                var best = _forest.BestDepth(s, _peerCount);
                var bound = best == int.MaxValue ? _forest.Depth(open, s) : Math.Max(_forest.Depth(open, s), best);
                _latency.Preview(s, bound, open, max, suggested);
            }
        }

        _latency.End();
        _latency.SetCoordinate(probe, saved);
        var result = new List<int>(max);
        for (var rank = 0; result.Count < max && AnyLonger(perShard, rank); rank++)
        {
            foreach (var list in perShard)
            {
                if (rank < list.Count && result.Count < max && !result.Contains(list[rank].Node))
                {
                    result.Add(list[rank].Node);
                }
            }
        }

        return result;

        static bool AnyLonger(List<(double Cost, int Node)>[] lists, int rank)
        {
            foreach (var list in lists)
            {
                if (list.Count > rank)
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <summary>Levels of every tree whose nodes a better-placed joiner may take the place of (see <see cref="LatencyPlacement.FindTopExchange"/>).</summary>
    public const int ExchangeDepth = 3;

    /// <summary>Levels of every tree that a joiner much nearer the source takes from a node farther from it (see <see cref="LatencyPlacement.FindNearSourceExchange"/>).</summary>
    public const int NearSourceDepth = 2;

    /// <summary>
    /// The level where the source's neighbourhood continues its own subtree: a joiner in it takes
    /// the place of a node of this level outside it whose parent is in it (see
    /// <see cref="LatencyPlacement.FindNearSourceExchange"/>).
    /// </summary>
    public const int ColumnDepth = 4;

    /// <summary>Deepest level sorted by geography (<see cref="LatencyPlacement.SortLevels"/>): levels 2 to 4 hold about 1,100 nodes per tree.</summary>
    public const int SortDepth = 4;

    /// <summary>Joins between two sorts (of one tree, in turns) while the overlay is young.</summary>
    public const int SortEvery = 64;

    /// <summary>Joins after which the sorted levels are full (8 trees of 1 + 10 + 100 + 1,000 nodes fill by about 9,000) and sorts are rarer.</summary>
    public const int SortYoungJoins = 16_384;

    /// <summary>Joins between two sorts once the overlay is no longer young.</summary>
    public const int SortEveryLater = 512;

    /// <summary>
    /// Latency-aware joins only: a joiner with capacity in a tree takes the place of a node of the
    /// top <see cref="ExchangeDepth"/> levels that it fills much better (closer to that place's parent
    /// and children); that node takes the joiner's place. At most one exchange per tree per join.
    /// Every few joins, one tree also has its levels 2 to <see cref="SortDepth"/> sorted by geography
    /// (<see cref="LatencyPlacement.SortLevels"/>: nodes of one level swap parents).
    /// </summary>
    private void ExchangeAtTheTop(int id)
    {
        if (_latency is not { Active: true } || _pristine)
        {
            return;
        }

        for (var s = 0; s < ShardCount; s++)
        {
            if (_forest.Cap(id, s) == 0)
            {
                continue;
            }

            // The first levels go to the peers nearest the source (every path crosses them, and a
            // near peer's RDP suffers most from a detour), and so do the places of ColumnDepth
            // under them (the source's neighbourhood keeps a subtree of its own); the next levels
            // to those nearest their neighbours there.
            var place = _latency.FindNearSourceExchange(id, s, NearSourceDepth, ColumnDepth);
            if (place == None)
            {
                place = _latency.FindTopExchange(id, s, ExchangeDepth);
            }
            if (place != None)
            {
                _placement.ExchangePlaces(id, place, s, _moves);
            }
        }

        // One tree in turns has its top levels sorted by geography: every SortEvery joins while
        // those levels fill, every SortEveryLater joins after that.
        var every = id < SortYoungJoins ? SortEvery : SortEveryLater;
        if (id % every == 0)
        {
            var shard = (id / every) % ShardCount;
            _latency.SortLevels(shard, SortDepth, IsAvoided, (peer, parent) => _moves.Add(new Reattachment(peer, shard, parent)));
        }
    }

    /// <summary>
    /// <see cref="Join(int)"/> for a peer at <paramref name="coordinate"/> that measured the RTTs
    /// <paramref name="measuredRttMs"/> (node id to ms; e.g. to its <see cref="ProbeCandidates"/>).
    /// A latency-aware plan places it, in every shard tree, where the policy allows it and the
    /// estimated delay from the source is lowest (see <see cref="PlannerOptions.LatencyAware"/>); a
    /// latency-blind plan ignores both.
    /// </summary>
    public int Join(int budget, NetworkCoordinate coordinate, IReadOnlyDictionary<int, double>? measuredRttMs = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budget);
        if (_latency is null)
        {
            return JoinCore(budget);
        }

        var id = _nextId;
        _latency.Register(id, coordinate);
        _latency.SetSourceRtt(id, measuredRttMs is not null && measuredRttMs.TryGetValue(Source, out var sourceRtt) ? sourceRtt : double.NaN);
        _latency.Begin(id, measuredRttMs);
        try
        {
            JoinCore(budget);
        }
        finally
        {
            _latency.End();
        }

        _anchors.RemoveAll(a => !_forest.IsAlive(a) || Budget(a) == 0);
        if (_anchors.Count < MaxAnchors && coordinate.Error < 1 && budget > 0)
        {
            _anchors.Add(id);
        }

        return id;
    }
}

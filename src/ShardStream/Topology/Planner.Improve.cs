namespace ShardStream.Topology;

/// <summary>
/// Improving a latency-aware plan over time (issue 12, point 4): as coordinates sharpen and new
/// peers bring free slots, a leaf whose path from the source is much longer than an available
/// alternative moves there. Gradual (a cap per call), with hysteresis (a large gain is needed, and a
/// moved peer rests), and never deeper than the depth bound the joins keep.
/// </summary>
public sealed partial class Planner
{
    /// <summary>A leaf moves only when the new estimated delay from the source is lower by at least this many ms...</summary>
    public const double ImproveMinGainMs = 20;

    /// <summary>...and by at least this share of its current delay.</summary>
    public const double ImproveMinGainShare = 0.2;

    /// <summary>(Peer, shard) edges looked at per <see cref="ImproveLatency"/> call: the cost of one call is bounded, whatever the overlay's size.</summary>
    public const int ImproveScan = 256;

    /// <summary>Calls of <see cref="ImproveLatency"/> after a peer moved before it may move again.</summary>
    public const int ImproveRest = 30;

    /// <summary>
    /// With measured RTTs (<see cref="ImproveLatency(int, Func{int, int, MeasuredEdgeRtt?})"/>): samples of
    /// a leaf's link to its parent before that RTT counts (4 a heartbeat interval apart, then one per
    /// 5 intervals: about 14 s at the default 1 s; a start-up's samples are then not all there is).
    /// </summary>
    public const int ImproveMinSamples = 6;

    /// <summary>With measured RTTs: the largest Vivaldi error (relative) of the leaf's and the new parent's coordinates for their estimated RTT to count.</summary>
    public const double ImproveMaxError = 0.5;

    private int _improveCursor = 1;
    private int _improveRound;
    private readonly Dictionary<int, int> _improvedAt = [];

    /// <summary>
    /// Moves at most <paramref name="maxMoves"/> (peer, shard) edges whose estimated delay from the
    /// source is much worse than a free slot elsewhere offers: looks at the next
    /// <see cref="ImproveScan"/> edges (in turns over all peers, so repeated calls sweep the
    /// overlay), and for each edge of a peer that feeds nobody in that shard compares its delay
    /// through its parent with the best free slot near it (the join rule's candidates, at a depth
    /// that keeps it within the bound the joins keep, never a parent it must avoid). It moves when
    /// the gain is at least <see cref="ImproveMinGainMs"/> and <see cref="ImproveMinGainShare"/> of
    /// the current delay, and leaves a moved peer alone for <see cref="ImproveRest"/> calls: a move
    /// back would need the same gain the other way, so estimates that wobble do not make peers
    /// oscillate. A caller that calls this once a second with a fixed cap bounds the overlay's moves
    /// per second. Empty for a latency-blind plan and while the tessellated pattern holds.
    /// </summary>
    /// <param name="maxMoves">At most this many (peer, shard) edges move.</param>
    /// <param name="measuredRtt">
    /// When given (a coordinator, whose peers report what they measured to their parents), a leaf
    /// also moves only when its measured RTT to its parent (<paramref name="measuredRtt"/>(peer,
    /// parent), null when not measured; at least <see cref="ImproveMinSamples"/> samples; the least
    /// sample, which is never above the smoothed RTT) exceeds the estimated RTT to the new parent by
    /// at least <see cref="ImproveMinGainMs"/> and <see cref="ImproveMinGainShare"/> of the measured
    /// RTT, and both coordinates of that estimate have an error of at most <see cref="ImproveMaxError"/>
    /// (when the leaf measured the new parent before, as a former parent, with as many samples,
    /// that measurement replaces the estimate): estimates alone (coordinates fitted to a loaded
    /// machine's start-up RTTs) do not move anyone, and a leaf does not move back to a parent it
    /// measured far.
    /// </param>
    /// <returns>Every (peer, shard, new parent) change, already applied.</returns>
    public IReadOnlyList<Reattachment> ImproveLatency(int maxMoves, Func<int, int, MeasuredEdgeRtt?>? measuredRtt = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxMoves);
        if (_latency is null || _pristine || maxMoves == 0 || _peerCount == 0)
        {
            return [];
        }

        _improveRound++;
        BeginMoves();
        var moved = 0;
        var limit = _nextId;
        for (var looked = 0; looked < ImproveScan && moved < maxMoves;)
        {
            if (_improveCursor >= limit)
            {
                _improveCursor = 1;
            }

            var peer = _improveCursor++;
            if (!_forest.IsAlive(peer))
            {
                looked++;
                continue;
            }

            if (_improvedAt.TryGetValue(peer, out var at) && _improveRound - at < ImproveRest)
            {
                looked += ShardCount;
                continue;
            }

            for (var s = 0; s < ShardCount && moved < maxMoves; s++, looked++)
            {
                if (TryImproveLeaf(peer, s, measuredRtt))
                {
                    moved++;
                    _improvedAt[peer] = _improveRound;
                }
            }
        }

        if (_improvedAt.Count > 4 * ImproveScan)
        {
            var round = _improveRound;
            foreach (var stale in _improvedAt.Where(e => round - e.Value >= ImproveRest || !_forest.IsAlive(e.Key)).Select(e => e.Key).ToList())
            {
                _improvedAt.Remove(stale);
            }
        }

        return Summarize(_moves, []);
    }

    private bool TryImproveLeaf(int peer, int shard, Func<int, int, MeasuredEdgeRtt?>? measuredRtt)
    {
        var parent = _forest.Parent(peer, shard);
        if (parent == None || _forest.ChildCount(peer, shard) > 0 || !IsHomeSlot(parent, shard))
        {
            return false;
        }

        var latency = _latency!;
        latency.Begin(peer, measured: null, exact: true);
        try
        {
            if (!latency.Active)
            {
                return false;
            }

            var current = latency.Cost(parent, shard);
            if (current == double.MaxValue)
            {
                return false;
            }

            // The leaf's depth stays within max(its depth now, the best depth + 1): the bound joins keep.
            var best = _forest.BestDepth(shard, _peerCount);
            var maxParentDepth = Math.Max(_forest.Depth(parent, shard), best == int.MaxValue ? 0 : best);
            // Striped: only into a home tree's free slot (a fostering parent's spare unit goes home by its own rule).
            var target = latency.ChooseOpen(shard, maxParentDepth, None,
                n => n != peer && n != parent && !_avoided.Contains((peer, n)) && _forest.IsAttached(n, shard) && IsHomeSlot(n, shard));
            if (target == None || target == parent)
            {
                return false;
            }

            var better = latency.Cost(target, shard);
            if (better > current - Math.Max(ImproveMinGainMs, ImproveMinGainShare * current))
            {
                return false;
            }

            if (measuredRtt is not null && !MeasuredEdgeIsLong(peer, parent, target, measuredRtt))
            {
                return false;
            }

            _forest.Detach(peer, shard);
            _forest.Attach(peer, target, shard);
            _moves.Add(new Reattachment(peer, shard, target));
            return true;
        }
        finally
        {
            latency.End();
        }
    }

    /// <summary>
    /// True when the RTT <paramref name="peer"/> measured to <paramref name="parent"/> (its least
    /// sample, once there are <see cref="ImproveMinSamples"/>) exceeds the estimated RTT to
    /// <paramref name="target"/> by the hysteresis margin, and both coordinates are sure enough.
    /// </summary>
    private bool MeasuredEdgeIsLong(int peer, int parent, int target, Func<int, int, MeasuredEdgeRtt?> measuredRtt)
    {
        if (measuredRtt(peer, parent) is not { } m || m.Samples < ImproveMinSamples)
        {
            return false;
        }

        // A parent the leaf had before is judged by what it measured to it, not by estimate: a
        // move back would otherwise follow the same wrong estimate that made the first move.
        double toTarget;
        if (measuredRtt(peer, target) is { } t && t.Samples >= ImproveMinSamples)
        {
            toTarget = Math.Min(t.SmoothedMs, t.MinMs);
        }
        else
        {
            var from = _latency!.CoordinateOf(peer);
            var to = _latency.CoordinateOf(target);
            if (from.Error > ImproveMaxError || to.Error > ImproveMaxError)
            {
                return false;
            }

            toTarget = from.EstimateRtt(to);
        }

        var measured = Math.Min(m.SmoothedMs, m.MinMs);
        return measured - toTarget >= Math.Max(ImproveMinGainMs, ImproveMinGainShare * measured);
    }

    /// <summary>True unless striped <paramref name="node"/> would feed <paramref name="shard"/> as a foster parent (not its home tree).</summary>
    private bool IsHomeSlot(int node, int shard) => node == Source || _homes is null || _homes.HomeOf(node) == shard;
}

/// <summary>
/// The RTT a peer measured on its link to a parent (RFC 6298 estimates, ms), as its heartbeats
/// report it: what <see cref="Planner.ImproveLatency(int, Func{int, int, MeasuredEdgeRtt?})"/> checks a move against.
/// </summary>
/// <param name="SmoothedMs">SRTT.</param>
/// <param name="MinMs">The least sample.</param>
/// <param name="Samples">Samples taken.</param>
public readonly record struct MeasuredEdgeRtt(double SmoothedMs, double MinMs, int Samples);

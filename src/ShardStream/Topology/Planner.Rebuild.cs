namespace ShardStream.Topology;

/// <summary>
/// Rebuilding a latency-aware plan by regions over time (docs/topology.md, "The rebuild by
/// regions"): the greedy join rules leave a mean RDP about twice what the same budgets allow, and a
/// leaf's move cannot change the shape of the trees. A rebuild computes whole trees as
/// <see cref="RegionConstruction"/> does, from what the coordinator knows (coordinates, the RTT it
/// measures to every peer, and the RTTs peers report of their parent links), and carries them out
/// as Moves, top down, at most a cap of them per call.
/// </summary>
public sealed partial class Planner
{
    /// <summary>Rounds of the local coordinates' fit to the reported parent-link RTTs, per rebuild.</summary>
    public const int RebuildFitRounds = 20;

    /// <summary>
    /// A new rebuild is planned only when its estimated mean delay from the source (slowest tree,
    /// local coordinates inside a cluster) is lower than the plan's by at least this share with every
    /// measured edge priced by its measurement, and not higher from the coordinates alone
    /// (<see cref="RebuildPlan.WorthCarryingOut"/>): a rebuild
    /// moves most edges, so one that gains little is not worth it (and estimates that wobble do not
    /// make the overlay churn).
    /// </summary>
    public const double RebuildMinGainShare = 0.02;

    /// <summary>Fewest live peers for a rebuild by default (<see cref="PlannerOptions.RebuildMinPeers"/>): smaller overlays gain from one too, and since 2026-12-06 their trees stay within blind + 1 while it is under way in the simulator (100-500 peers, seeds 1-10), but it has not been lowered (docs/topology.md, "The rebuild by regions", "Small overlays").</summary>
    public const int RebuildMinPeers = 1000;

    /// <summary>
    /// The least <see cref="PlannerOptions.RebuildMinPeers"/> a coordinator or the simulator takes
    /// (<c>--latency-rebuild-min-peers</c>): a rebuild by regions of fewer peers has too few per
    /// cluster to fit their local coordinates to.
    /// </summary>
    public const int RebuildLeastPeers = 20;

    /// <summary>
    /// The CLI's default share of the live peers that may be moved a second with the rebuild on
    /// (the coordinator's and <c>simulate</c>'s <c>--latency-moves</c> when not given): 1%, so that
    /// a rebuild, which moves about 12 edges a peer with K = 8, takes about 20 minutes at any size
    /// from <see cref="RebuildMinPeers"/> up (docs/topology.md, "The rebuild by regions", "The
    /// default"); <see cref="MovesCap"/>.
    /// </summary>
    public const double RebuildMovesShare = 0.01;

    /// <summary>
    /// The cap of one call of latency moves (<see cref="CarryOutRebuild"/>, then <see cref="ImproveLatency"/>):
    /// <paramref name="floor"/>, or <paramref name="share"/> of the <paramref name="peers"/> (rounded
    /// up) when that is more and the overlay has at least <paramref name="minPeers"/> peers (the
    /// fewest for a rebuild), or a rebuild is under way (<paramref name="rebuilding"/>): one begun
    /// above the fewest goes on at the share when the live peers fall under them, not at the floor.
    /// A floor of 0 turns moving off; a share of 0 is a fixed cap.
    /// </summary>
    public static int MovesCap(int floor, double share, int peers, int minPeers, bool rebuilding = false) =>
        floor <= 0 || share <= 0 || (peers < minPeers && !rebuilding) ? floor : Math.Max(floor, (int)Math.Ceiling(share * peers - 1e-9));

    /// <summary>
    /// Calls of <see cref="RebuildLatency"/> after a rebuild ended before the next of its series
    /// (<see cref="RebuildSeries"/>) is planned: the peers' new parent links get their samples first
    /// (<see cref="ImproveMinSamples"/>, about 14 s at one heartbeat a second), and planning, which
    /// reads every peer, runs at most once a minute at one call a second.
    /// </summary>
    public const int RebuildPauseCalls = 60;

    /// <summary>
    /// Rebuilds in a series: each one's parent links sharpen the next one's local coordinates, so
    /// they run one after another (at 100k peers, seeds 1-5, mean RDP under 2.0 after 2-4 of them).
    /// A series ends after this many, or at the first planned rebuild not worth carrying out; the
    /// next series starts once joins and leaves since the last one's start reach a tenth of the
    /// peers (a plan that did not change is not rebuilt again and again).
    /// </summary>
    public const int RebuildSeries = 4;

    private RebuildPlan? _rebuild;
    private int _rebuildPause;
    private int _rebuildsInSeries;
    private bool _rebuildSeriesOver;
    private long _rebuildSeriesChurn;
    /// <summary>
    /// Parent links remembered per peer for the local coordinates' fit (the latest ones, their
    /// RTTs as reported): a rebuild's fit uses the links of the plans before it as well, since the
    /// links of one plan alone (about 8 a peer, mostly to a few near relays) leave a cluster's
    /// inside loosely tied (docs/topology.md, "The rebuild by regions").
    /// </summary>
    public const int RebuildLinksKept = 32;

    private readonly RebuildLinks _rebuildLinks = new();
    private RebuildSnapshot? _rebuildSnapshot;
    private int _rebuildsPlanned;

    /// <summary>Rebuilds planned so far (<see cref="RebuildLatency"/>), including those not worth carrying out.</summary>
    public int RebuildsPlanned => _rebuildsPlanned;

    private int _rebuildsDone;

    /// <summary>Rebuilds carried out to their end so far (<see cref="RebuildLatency"/>: every planned edge moved or skipped).</summary>
    public int RebuildsDone => _rebuildsDone;

    /// <summary>True while a planned rebuild still has edges to move.</summary>
    public bool RebuildInProgress => _rebuild is not null;

    /// <summary>True while a snapshot taken for planning (<see cref="TakeRebuildSnapshot"/>) has not come back (<see cref="AdoptRebuild"/>).</summary>
    public bool RebuildBeingPlanned => _rebuildSnapshot is not null;

    /// <summary>
    /// Moves at most <paramref name="maxMoves"/> (peer, shard) edges towards a rebuild of every tree
    /// by regions. With no rebuild under way it plans one: clusters of the coordinate plane, the
    /// source's made of the peers whose RTT to the source (<see cref="SetSourceRtt"/>) says they are
    /// near it (<see cref="RegionConstruction.SourceCluster"/>); local coordinates, kept from one
    /// rebuild to the next, fitted to the RTT each peer reports of its link to each parent
    /// (<paramref name="measuredRtt"/>, with at least <see cref="ImproveMinSamples"/> samples) within
    /// a cluster; then each tree by <see cref="RegionConstruction.Builder.Tree"/> within the
    /// per-tree caps the plan has now. It is kept only if its estimated mean delay is lower than the
    /// plan's by <see cref="RebuildMinGainShare"/>; rebuilds run in series (<see cref="RebuildSeries"/>,
    /// <see cref="RebuildPauseCalls"/> apart). Then <see cref="CarryOutRebuild"/>. Empty for a
    /// latency-blind plan. This is <see cref="TakeRebuildSnapshot"/>, <see cref="RebuildSnapshot.Plan"/>,
    /// <see cref="AdoptRebuild"/> and <see cref="CarryOutRebuild"/> in one call, with nothing between
    /// them; a coordinator makes those calls itself, so as not to plan under its lock.
    /// </summary>
    /// <param name="maxMoves">At most this many (peer, shard) edges move in this call, but for one step the calls before it saved moves for (<see cref="CarryOutRebuild"/>).</param>
    /// <param name="measuredRtt">What a peer reported it measured to a parent (null when nothing).</param>
    /// <returns>Every (peer, shard, new parent) change, already applied.</returns>
    public IReadOnlyList<Reattachment> RebuildLatency(int maxMoves, Func<int, int, MeasuredEdgeRtt?> measuredRtt)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxMoves);
        ArgumentNullException.ThrowIfNull(measuredRtt);
        BeginMoves();
        if (maxMoves == 0)
        {
            return [];
        }

        if (_rebuild is null && TakeRebuildSnapshot(measuredRtt) is { } snapshot)
        {
            AdoptRebuild(snapshot, snapshot.Plan());
        }

        return CarryOutRebuild(maxMoves);
    }

    /// <summary>
    /// When a rebuild is due (no rebuild under way or being planned, the pause after the last one
    /// over, its series not ended, or enough joins and leaves since: see <see cref="RebuildLatency"/>),
    /// copies what planning it needs: the live peers, their coordinates, RTTs to the source, budgets,
    /// homes, and per tree their parents, caps and the RTTs <paramref name="measuredRtt"/> gives of
    /// those parent links. Null when none is due (a call while the pause runs counts it down, as a
    /// call of <see cref="RebuildLatency"/> does). The snapshot is planned on
    /// (<see cref="RebuildSnapshot.Plan"/>) without the plan, and must come back through
    /// <see cref="AdoptRebuild"/> before another is taken: one planning at a time.
    /// </summary>
    /// <param name="measuredRtt">What a peer reported it measured to a parent (null when nothing).</param>
    public RebuildSnapshot? TakeRebuildSnapshot(Func<int, int, MeasuredEdgeRtt?> measuredRtt)
    {
        ArgumentNullException.ThrowIfNull(measuredRtt);
        if (_latency is null || _pristine || _peerCount < Options.RebuildMinPeers || _rebuild is not null || _rebuildSnapshot is not null)
        {
            return null;
        }

        if (_rebuildPause > 0)
        {
            _rebuildPause--;
            return null;
        }

        // Joins and leaves so far: every id ever given joined, the ones not alive left.
        var churn = (2L * (_nextId - 1)) - _peerCount;
        if (_rebuildSeriesOver)
        {
            if (churn - _rebuildSeriesChurn < _peerCount / 10)
            {
                return null;
            }

            (_rebuildSeriesOver, _rebuildsInSeries) = (false, 0);
        }

        if (_rebuildsInSeries == 0)
        {
            _rebuildSeriesChurn = churn;
        }

        var k = ShardCount;
        var snapshot = new RebuildSnapshot(k, _nextId, _peerCount, _latency.CoordinateOf(Source), Options.RebuildMinGainShare, _rebuildLinks);
        for (var s = 0; s < k; s++)
        {
            snapshot.SourceCap[s] = _forest.Cap(Source, s);
            snapshot.DepthBound[s] = Math.Max(AllowedDepth(s), _forest.MaxDepth(s));
        }

        var i = 0;
        for (var id = 1; id < _nextId; id++)
        {
            if (!_forest.IsAlive(id))
            {
                continue;
            }

            snapshot.Peers[i] = id;
            snapshot.Coordinates[i] = _latency.CoordinateOf(id);
            snapshot.SourceRtt[i] = _latency.MeasuredSourceRtt(id);
            snapshot.Budget[i] = _forest.Budget(id);
            snapshot.Home[i] = _homes?.HomeOf(id) ?? 0;
            for (var s = 0; s < k; s++)
            {
                var p = _forest.Parent(id, s);
                snapshot.Parent[s][i] = p;
                snapshot.Cap[s][i] = _forest.Cap(id, s);
                snapshot.ParentRtt[s][i] = p > 0 && measuredRtt(id, p) is { } m && m.Samples >= ImproveMinSamples ? (float)Math.Min(m.SmoothedMs, m.MinMs) : float.NaN;
            }

            i++;
        }

        _rebuildSnapshot = snapshot;
        return snapshot;
    }

    /// <summary>
    /// Takes back the snapshot <see cref="TakeRebuildSnapshot"/> gave, with what
    /// <see cref="RebuildSnapshot.Plan"/> made of it: a plan worth carrying out becomes the rebuild
    /// under way (<see cref="CarryOutRebuild"/>); otherwise, or with none, the series ends. The plan
    /// may have changed since the snapshot: the carrying out skips what no longer fits.
    /// </summary>
    /// <exception cref="InvalidOperationException"><paramref name="snapshot"/> is not the one out.</exception>
    public void AdoptRebuild(RebuildSnapshot snapshot, RebuildPlan? plan)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        if (!ReferenceEquals(snapshot, _rebuildSnapshot))
        {
            throw new InvalidOperationException("not the rebuild snapshot this plan gave out");
        }

        _rebuildSnapshot = null;
        if (plan is not null)
        {
            _rebuildsPlanned++;
        }

        _rebuild = plan is { WorthCarryingOut: true } ? plan : null;
        _rebuildsInSeries++;
        _rebuildSeriesOver = _rebuild is null || _rebuildsInSeries >= RebuildSeries;
    }
}

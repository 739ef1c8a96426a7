using ShardStream.Topology;

namespace ShardStream.Simulation;

/// <summary>What to simulate: an overlay built by <paramref name="Peers"/> joins through the real <see cref="Planner"/>.</summary>
/// <param name="Peers">Number of joins.</param>
/// <param name="ShardCount">K.</param>
/// <param name="Topology">Placement policy.</param>
/// <param name="Upload">Every peer's upload as a multiple of the stream rate; its budget is floor(Upload x K) shard-streams.</param>
/// <param name="SourceUpload">The source's upload as a multiple of the stream rate; null for the default budget K + 1.</param>
/// <param name="Seed">Seed of the planner and of the simulation's random choices.</param>
/// <param name="Churn">Fraction of joins followed by the leave of a random live peer.</param>
/// <param name="FailBranchFraction">After the build, fail at once the subtree(s) holding about this fraction of the peers, and repair.</param>
/// <param name="UploadMix">If set, each peer draws its upload from this mix (seeded) instead of <paramref name="Upload"/>.</param>
/// <param name="Latency">If set, the RTT model the overlay lives in: the report then gives delay figures for the latency-aware and the latency-blind planner.</param>
/// <param name="LatencyAware">Whether the planner places by latency; null for "when a latency model is set".</param>
/// <param name="RdpBreakdown">If set (and the model is <c>world</c>), where each built overlay's mean RDP comes from, and a lower bound of it, are written there (<see cref="RdpAnalysis"/>).</param>
/// <param name="ImproveSeconds">With a latency model: after the aware build is measured, this many simulated seconds of <see cref="Planner.ImproveLatency"/> (one call a second, as the coordinator does), then the aware overlay is measured again.</param>
/// <param name="LatencyMovesPerSecond">The cap of each of those calls (the coordinator's <c>--latency-moves</c>).</param>
/// <param name="LatencyRebuild">During those seconds, the coordinator's rebuild by regions (<see cref="Planner.RebuildLatency"/>) first, under the same cap; the leaf moves take the seconds it leaves unused.</param>
/// <param name="LatencyRebuildMinPeers">The fewest peers for that rebuild to be planned (<see cref="PlannerOptions.RebuildMinPeers"/>, as the coordinator's <c>--latency-rebuild-min-peers</c>).</param>
/// <param name="LatencyMovesShare">With <paramref name="LatencyRebuild"/>: each call may move this share of the peers instead of <paramref name="LatencyMovesPerSecond"/> when that is more and there are at least <paramref name="LatencyRebuildMinPeers"/> (<see cref="Planner.MovesCap"/>, as the coordinator's <see cref="Nodes.CoordinatorOptions.LatencyMovesShare"/>); 0 here, <see cref="Planner.RebuildMovesShare"/> in <c>shardstream simulate</c> unless <c>--latency-moves</c> is given.</param>
public sealed record SimulationOptions(
    int Peers,
    int ShardCount,
    TopologyKind Topology,
    double Upload,
    double? SourceUpload = null,
    int Seed = 0,
    double Churn = 0,
    double FailBranchFraction = 0,
    UploadMix? UploadMix = null,
    LatencyModel? Latency = null,
    bool? LatencyAware = null,
    TextWriter? RdpBreakdown = null,
    int ImproveSeconds = 0,
    int LatencyMovesPerSecond = 4,
    bool LatencyRebuild = false,
    int LatencyRebuildMinPeers = Planner.RebuildMinPeers,
    double LatencyMovesShare = 0)
{
    /// <summary>Shard-streams each peer may send (without an <see cref="UploadMix"/>).</summary>
    public int PeerBudget => Budgets.FromMultiple(Upload, ShardCount);

    /// <summary>Shard-streams the source may send.</summary>
    public int SourceBudget => SourceUpload is { } upload
        ? Budgets.FromMultiple(upload, ShardCount)
        : ShardCount + 1;

    /// <summary>The cap of each call of latency moves in an overlay of <paramref name="peers"/> (<see cref="LatencyMovesShare"/> applies with the rebuild only; <paramref name="rebuilding"/>: a rebuild is under way, see <see cref="Planner.MovesCap"/>).</summary>
    public int MovesCap(int peers, bool rebuilding = false) => LatencyRebuild ? Planner.MovesCap(LatencyMovesPerSecond, LatencyMovesShare, peers, LatencyRebuildMinPeers, rebuilding) : LatencyMovesPerSecond;

    /// <summary>The planner options these simulation options stand for.</summary>
    public PlannerOptions ToPlannerOptions() => new(ShardCount, Topology, SourceBudget, Seed);
}

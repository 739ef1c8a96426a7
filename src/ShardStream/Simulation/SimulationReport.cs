namespace ShardStream.Simulation;

/// <summary>Depth of one shard tree.</summary>
/// <param name="Shard">The shard.</param>
/// <param name="MaxDepth">Hops from the source to the deepest peer.</param>
/// <param name="MeanDepth">Mean hops from the source over all peers.</param>
/// <param name="BestDepth">Least depth the peers' capacities in that tree allow (see <see cref="Topology.Planner.BestDepth"/>).</param>
public sealed record ShardDepthReport(int Shard, int MaxDepth, double MeanDepth, int BestDepth);

/// <summary>The outcome of failing whole branches at once.</summary>
/// <param name="PeersFailed">Peers that failed together.</param>
/// <param name="Branches">Subtrees (of shard <paramref name="Shard"/>) they formed.</param>
/// <param name="Shard">The shard tree the branches were cut from.</param>
/// <param name="Reattachments">Planner decisions = Move control messages, one per (peer, shard) that changed parent.</param>
/// <param name="Evicted">Peers the planner could not keep (no capacity left).</param>
/// <param name="MaxDepthBefore">Deepest shard tree before the failure.</param>
/// <param name="MaxDepthAfter">Deepest shard tree after the repair.</param>
/// <param name="BestDepthAfter">Least max depth the policy allows for the survivors (see <see cref="SimulationReport.PolicyBestDepth"/>); max depth after should be at most this + 1.</param>
/// <param name="RepairTime">Wall time of the planner's repair.</param>
/// <param name="ShardsAfter">Every shard tree after the repair.</param>
public sealed record BranchFailureReport(
    int PeersFailed,
    int Branches,
    int Shard,
    int Reattachments,
    int Evicted,
    int MaxDepthBefore,
    int MaxDepthAfter,
    int BestDepthAfter,
    TimeSpan RepairTime,
    IReadOnlyList<ShardDepthReport> ShardsAfter);

/// <summary>How many joining peers drew a budget.</summary>
/// <param name="Budget">Shard-streams the peer may send.</param>
/// <param name="Peers">Joins with that budget.</param>
public readonly record struct BudgetCount(int Budget, int Peers);

/// <summary>What a simulation measured.</summary>
/// <param name="Options">The simulated options.</param>
/// <param name="PeerCount">Live peers at the end of the build.</param>
/// <param name="Joins">Joins made.</param>
/// <param name="Leaves">Churn leaves made.</param>
/// <param name="ChurnEvicted">Peers the planner dropped during churn for lack of capacity (they would rejoin).</param>
/// <param name="Shards">Depth of every shard tree after the build.</param>
/// <param name="PolicyBestDepth">Least max depth the policy allows for the live peers: the exact tessellation's for the tessellated pattern, else the largest per-shard best depth.</param>
/// <param name="PeerBudget">Shard-streams each peer may send (with an upload mix: the largest budget drawn).</param>
/// <param name="MaxPeerUpload">Most shard-streams any peer sends.</param>
/// <param name="P99PeerUpload">99th percentile of shard-streams sent per peer.</param>
/// <param name="PeersOverBudget">Peers sending more than their budget (must be 0).</param>
/// <param name="SourceBudget">Shard-streams the source may send.</param>
/// <param name="SourceUpload">Shard-streams the source sends.</param>
/// <param name="JoinMoves">Other peers moved by joins (a stronger joiner taking a weaker node's place).</param>
/// <param name="ChurnMoves">Reattachments caused by churn leaves.</param>
/// <param name="FosteredEdges">Striped: edges still forwarding a non-home shard (bootstrap fostering).</param>
/// <param name="JoinsPerSecond">Planner joins per second (joins only, wall time).</param>
/// <param name="BuildTime">Wall time of the whole build (joins and churn).</param>
/// <param name="ManagedBytes">Managed heap after the build (after a full collection): the model's size.</param>
/// <param name="WorkingSetBytes">Process working set after the build.</param>
/// <param name="BranchFailure">The branch failure, if one was asked for.</param>
/// <param name="RefusedJoins">Joins the planner refused at first (no capacity left in some shard tree); such a peer waits, as one that rejoins would, and is carried as soon as capacity appears.</param>
/// <param name="Unplaced">Peers still waiting at the end of the build: joined but never carried.</param>
/// <param name="BudgetMix">Joins per budget (one entry without an upload mix).</param>
/// <param name="LatencyAware">With a latency model: the delay figures of the overlay built by the latency-aware planner.</param>
/// <param name="LatencyBlind">With a latency model: the same for the latency-blind planner (same model, seed, joins and leaves).</param>
/// <param name="LatencyAwareImproved">With a latency model and <see cref="SimulationOptions.ImproveSeconds"/>: the aware overlay's figures after those seconds of <see cref="Topology.Planner.ImproveLatency"/> (its join figures: 0).</param>
/// <param name="ImproveMoves">The (peer, shard) edges those seconds moved.</param>
/// <param name="Rebuilds">With <see cref="SimulationOptions.LatencyRebuild"/>: every rebuild those seconds completed, measured when it completed.</param>
/// <param name="RebuildPlannings">With <see cref="SimulationOptions.LatencyRebuild"/>: every rebuild those seconds planned, with what it cost.</param>
public sealed record SimulationReport(
    SimulationOptions Options,
    int PeerCount,
    int Joins,
    int Leaves,
    int ChurnEvicted,
    IReadOnlyList<ShardDepthReport> Shards,
    int PolicyBestDepth,
    int PeerBudget,
    int MaxPeerUpload,
    int P99PeerUpload,
    int PeersOverBudget,
    int SourceBudget,
    int SourceUpload,
    long JoinMoves,
    long ChurnMoves,
    int FosteredEdges,
    double JoinsPerSecond,
    TimeSpan BuildTime,
    long ManagedBytes,
    long WorkingSetBytes,
    BranchFailureReport? BranchFailure,
    int RefusedJoins,
    int Unplaced,
    IReadOnlyList<BudgetCount> BudgetMix,
    LatencyReport? LatencyAware = null,
    LatencyReport? LatencyBlind = null,
    LatencyReport? LatencyAwareImproved = null,
    long ImproveMoves = 0,
    IReadOnlyList<RebuildStep>? Rebuilds = null,
    IReadOnlyList<RebuildPlanning>? RebuildPlannings = null)
{
    /// <summary>Peers the overlay could not carry: never placed, or evicted by a churn repair.</summary>
    public int Evictions => Unplaced + ChurnEvicted;

    /// <summary>The source's upload as a multiple of the stream rate.</summary>
    public double SourceUploadMultiple => (double)SourceUpload / Options.ShardCount;
}

/// <summary>A rebuild by regions the simulated coordinator completed (<see cref="Topology.Planner.RebuildLatency"/>).</summary>
/// <param name="Second">Simulated seconds of moves after the build when it completed.</param>
/// <param name="EdgesMoved">Edges moved since the build (rebuilds and leaf moves).</param>
/// <param name="MeanRdp">The aware overlay's mean RDP then.</param>
/// <param name="MaxDepth">Its deepest tree then.</param>
/// <param name="WorstMaxDepth">The deepest tree while it was under way: after every call of its moves, and when it completed.</param>
/// <param name="WorstMeanRdp">The highest mean RDP while it was under way: every <see cref="RebuildSampleSeconds"/> simulated seconds of it, and when it completed.</param>
/// <param name="MeanEdgeRttMs">The aware overlay's mean edge RTT then (<see cref="LatencyReport.MeanEdgeRttMs"/>).</param>
/// <param name="MeanSourceDelayMs">Its mean delay from the source then (<see cref="LatencyReport.MeanSourceDelayMs"/>): what the planning's estimates estimate.</param>
/// <param name="P95SourceDelayMs">The 95th percentile of that delay then.</param>
public readonly record struct RebuildStep(int Second, long EdgesMoved, double MeanRdp, int MaxDepth, int WorstMaxDepth, double WorstMeanRdp, double MeanEdgeRttMs, double MeanSourceDelayMs, double P95SourceDelayMs)
{
    /// <summary>
    /// Simulated seconds between two samples of the mean RDP while a rebuild is under way (each
    /// walks every tree, so a rebuild of about 1,300 s at 100k peers costs 21 such walks); the max
    /// depth is read after every call (the forest keeps it).
    /// </summary>
    public const int RebuildSampleSeconds = 60;
}

/// <summary>A rebuild by regions the simulated coordinator planned (<see cref="Topology.Planner.TakeRebuildSnapshot"/>, <see cref="Topology.RebuildSnapshot.Plan"/>).</summary>
/// <param name="Second">Simulated second of moves in which it was planned.</param>
/// <param name="CarriedOut">Whether it was worth carrying out (else its series ended).</param>
/// <param name="Snapshot">Copying what planning reads: the coordinator holds its plan's lock for it.</param>
/// <param name="Planning">The planning on that copy: outside the lock.</param>
/// <param name="FirstMoves">Taking the plan back and carrying out its first moves (at most the cap): under the lock again.</param>
/// <param name="EstimatedBeforeMs">The planning's estimate of the mean delay from the source (slowest tree) of the plan as it was (<see cref="Topology.RebuildPlan.EstimatedBeforeMs"/>).</param>
/// <param name="EstimatedAfterMs">Its estimate of the planned rebuild's (<see cref="Topology.RebuildPlan.EstimatedAfterMs"/>).</param>
/// <param name="MeasuredBeforeMs">The same as <paramref name="EstimatedBeforeMs"/> with the measured RTTs (<see cref="Topology.RebuildPlan.MeasuredBeforeMs"/>).</param>
/// <param name="MeasuredAfterMs">The same as <paramref name="EstimatedAfterMs"/> with the measured RTTs (<see cref="Topology.RebuildPlan.MeasuredAfterMs"/>).</param>
/// <param name="PlannedMaxDepth">The deepest planned tree's depth (<see cref="Topology.RebuildPlan.PlannedDepth"/>).</param>
/// <param name="DeeperThanBound">Whether some planned tree was deeper than its depth bound, which alone declines a plan (<see cref="Topology.RebuildPlan.DeeperThanBound"/>).</param>
public readonly record struct RebuildPlanning(int Second, bool CarriedOut, PhaseTime Snapshot, PhaseTime Planning, PhaseTime FirstMoves, double EstimatedBeforeMs, double EstimatedAfterMs, double MeasuredBeforeMs, double MeasuredAfterMs, int PlannedMaxDepth, bool DeeperThanBound)
{
    /// <summary>The longest the lock is held at once for it: what a join waits at most.</summary>
    public PhaseTime LockHeld => Snapshot.Wall > FirstMoves.Wall ? Snapshot : FirstMoves;
}

/// <summary>Wall time of a phase, and the CPU time of the thread that ran it (wall time on a shared machine includes waiting for a core).</summary>
public readonly record struct PhaseTime(TimeSpan Wall, TimeSpan Cpu);

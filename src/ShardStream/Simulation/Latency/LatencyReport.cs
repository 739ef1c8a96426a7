namespace ShardStream.Simulation;

/// <summary>
/// Delay figures of one built overlay under a latency model (true model RTTs, not estimates).
/// </summary>
/// <param name="LatencyAware">Whether the planner placed by latency.</param>
/// <param name="MaxDepth">Deepest peer over all shard trees.</param>
/// <param name="MeanEdgeRttMs">Mean RTT between a peer and its parent, over every (peer, shard) edge.</param>
/// <param name="P95EdgeRttMs">95th percentile of the same.</param>
/// <param name="MeanSourceDelayMs">
/// Mean over peers of the source-to-peer delay: the sum of one-way delays (RTT / 2) along the tree
/// path, in the slowest of the peer's shard trees (a peer plays a byte once every shard brought it).
/// </param>
/// <param name="P95SourceDelayMs">95th percentile of the same.</param>
/// <param name="MeanRdp">Mean relative delay penalty: source-to-peer delay over the direct one-way delay from the source.</param>
/// <param name="PingsPerJoin">Pings a joining peer sent, on average (0 for the latency-blind planner).</param>
/// <param name="MaxPingsPerJoin">Most pings any joining peer sent.</param>
/// <param name="CoordinateMedianError">Median relative error of the coordinates' RTT estimates over random pairs of live nodes (NaN without coordinates).</param>
/// <param name="JoinsPerSecond">Planner joins per second in this build (the planner's own calls only, wall time).</param>
/// <param name="JoinsPerCpuSecond">The same per second of CPU time, estimated: the planner's wall time scaled by the share of the build's wall time its thread was on a core (NaN where the thread's CPU clock cannot be read). On a shared machine it tells what the planner costs whatever else runs.</param>
public sealed record LatencyReport(
    bool LatencyAware,
    int MaxDepth,
    double MeanEdgeRttMs,
    double P95EdgeRttMs,
    double MeanSourceDelayMs,
    double P95SourceDelayMs,
    double MeanRdp,
    double PingsPerJoin,
    int MaxPingsPerJoin,
    double CoordinateMedianError,
    double JoinsPerSecond,
    double JoinsPerCpuSecond);

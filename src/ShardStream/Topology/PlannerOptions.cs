namespace ShardStream.Topology;

/// <summary>How peers are arranged in the shard trees.</summary>
public enum TopologyKind
{
    /// <summary>K = 1: every node sends the whole stream to up to two children.</summary>
    Binary,

    /// <summary>K = 2: the seed's 1/2/1.5 tessellation; every node sends three half-streams.</summary>
    Tessellated,

    /// <summary>Any K: every peer forwards only its home shard (SplitStream-style stripe trees).</summary>
    Striped,
}

/// <summary>
/// Inputs of the planner. Budgets are counted in shard-streams (units of 1/K of the stream rate).
/// </summary>
/// <param name="ShardCount">K, the number of shards (1..16).</param>
/// <param name="Topology">The placement policy.</param>
/// <param name="SourceBudget">Shard-streams the coordinator may send at once.</param>
/// <param name="Seed">Seed of the planner's only source of randomness.</param>
/// <param name="LatencyAware">
/// Among the placements the policy allows, prefer the parent that gives the joiner (or an orphan)
/// the lowest estimated delay from the source, from network coordinates (see
/// <see cref="Planner.Join(int, NetworkCoordinate, IReadOnlyDictionary{int, double})"/>). Off by
/// default: nodes do not measure RTTs yet.
/// </param>
public sealed record PlannerOptions(int ShardCount, TopologyKind Topology, int SourceBudget, int Seed = 0, bool LatencyAware = false)
{
    /// <summary>The seed's budget: every node serves K + 1 shard-streams.</summary>
    public static PlannerOptions Default(int shardCount, TopologyKind topology) =>
        new(shardCount, topology, shardCount + 1);

    /// <summary>
    /// Fewest live peers for <see cref="Planner.RebuildLatency"/> to plan a rebuild
    /// (<see cref="Planner.RebuildMinPeers"/>); tests lower it to run a whole rebuild with real
    /// nodes, which cannot be a thousand in one test process.
    /// </summary>
    internal int RebuildMinPeers { get; init; } = Planner.RebuildMinPeers;

    /// <summary>
    /// Least estimated gain, with the measured RTTs, for a planned rebuild to be carried out (<see cref="Planner.RebuildMinGainShare"/>
    /// by default); a test sets -1 to carry out every plan whatever its estimate.
    /// </summary>
    internal double RebuildMinGainShare { get; init; } = Planner.RebuildMinGainShare;
}

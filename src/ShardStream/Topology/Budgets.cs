namespace ShardStream.Topology;

/// <summary>Conversions between upload multiples and shard-stream budgets, for the nodes and the simulator alike.</summary>
public static class Budgets
{
    /// <summary>
    /// Shard-streams a node may send with <paramref name="multiple"/> times the stream rate:
    /// floor(x·K), so that a node never sends more than the upload it was given.
    /// </summary>
    public static int FromMultiple(double multiple, int shardCount) => (int)Math.Floor(multiple * shardCount + 1e-9);
}

namespace ShardStream.Topology;

/// <summary>
/// The pure, deterministic model of the shard trees. No I/O, no clock; randomness only from
/// <see cref="PlannerOptions.Seed"/>. The coordinator and the simulator call the same code.
/// Node 0 is the source (the coordinator); peers get ids 1, 2, 3... in join order, never reused.
/// </summary>
public sealed partial class Planner
{
    /// <summary>The id of the source node (the coordinator).</summary>
    public const int Source = 0;

    /// <summary>Returned by <see cref="ParentOf"/> for the source or a shard the node has no parent in.</summary>
    public const int None = -1;
}

/// <summary>A decision of the planner: <paramref name="Peer"/> now receives <paramref name="Shard"/> from <paramref name="NewParent"/>.</summary>
public readonly record struct Reattachment(int Peer, int Shard, int NewParent);

/// <summary>Thrown when no node has a free shard-stream for a joining peer.</summary>
public sealed class PlacementException(string message) : Exception(message);

namespace ShardStream.Nodes;

/// <summary>
/// The stages of a join at the coordinator, each recorded in <see cref="ShardStreamMetrics.JoinStage"/>
/// with its <c>stage</c> tag (docs/metrics.md): what a join storm's latency is made of, read
/// with <c>--http</c> (/metrics) or <c>dotnet-counters</c>. Timestamps are
/// <see cref="TimeProvider.GetTimestamp"/> values of the node's clock.
/// </summary>
internal static class JoinStages
{
    /// <summary>Accepted to its hello read: the wait for a thread and for the joiner's first frame.</summary>
    public static readonly KeyValuePair<string, object?> Hello = Tag("hello");

    /// <summary>Hello read to a landmark round's answer written (a latency-aware join's first one or two rounds).</summary>
    public static readonly KeyValuePair<string, object?> Landmarks = Tag("landmarks");

    /// <summary>Landmarks written to the joiner's next Join read on the same connection (version 10): the joiner's measuring, as the coordinator waits for it.</summary>
    public static readonly KeyValuePair<string, object?> Measuring = Tag("measuring");

    /// <summary>The dial-back probe to the joiner's address.</summary>
    public static readonly KeyValuePair<string, object?> Probe = Tag("probe");

    /// <summary>Waiting for the coordinator's lock before placement.</summary>
    public static readonly KeyValuePair<string, object?> Lock = Tag("lock");

    /// <summary>Under the lock: the plan, the signatures, the Moves, the welcome queued.</summary>
    public static readonly KeyValuePair<string, object?> Placement = Tag("placement");

    /// <summary>Accepted (or, on a connection kept after Landmarks, the placing Join read) to welcome queued: the coordinator's share of a placed join's latency.</summary>
    public static readonly KeyValuePair<string, object?> Welcome = Tag("welcome");

    private static KeyValuePair<string, object?> Tag(string stage) => new("stage", stage);

    /// <summary>Records the time from <paramref name="from"/> to <paramref name="to"/> as <paramref name="stage"/> (nothing when either is unknown).</summary>
    public static void Record(TimeProvider time, KeyValuePair<string, object?> stage, long from, long to)
    {
        if (from == 0 || to == 0 || !ShardStreamMetrics.JoinStage.Enabled) return;
        ShardStreamMetrics.JoinStage.Record(time.GetElapsedTime(from, to).TotalSeconds, stage);
    }
}

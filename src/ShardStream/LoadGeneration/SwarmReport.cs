using System.Globalization;
using System.Text;

namespace ShardStream.LoadGeneration;

/// <summary>One second of a swarm run, for a progress line.</summary>
/// <param name="Elapsed">Since the swarm started.</param>
/// <param name="Phase">ramp, hold or leave.</param>
/// <param name="Connected">Peers whose control link is open now.</param>
/// <param name="Joins">Welcomes received in this second.</param>
/// <param name="Leaves">Leaves sent in this second.</param>
/// <param name="Failures">Joins that failed in this second.</param>
/// <param name="JoinLatency">Percentiles of this second's joins (null when there were none).</param>
/// <param name="LeastHeartbeat">The shortest heartbeat interval of a connected peer now (zero with none connected).</param>
/// <param name="MostHeartbeat">The longest (the coordinator asked for it, docs/protocol.md section 10).</param>
/// <param name="AtMostHeartbeat">How many connected peers heartbeat at <paramref name="MostHeartbeat"/>.</param>
public readonly record struct SwarmSecond(TimeSpan Elapsed, string Phase, int Connected, int Joins, int Leaves, int Failures, LatencySummary? JoinLatency, TimeSpan LeastHeartbeat = default, TimeSpan MostHeartbeat = default, int AtMostHeartbeat = 0);

/// <summary>Percentiles of join latencies (connect to Welcome), in milliseconds.</summary>
public readonly record struct LatencySummary(int Count, double P50, double P90, double P99, double Max)
{
    /// <summary>Null for no samples.</summary>
    public static LatencySummary? Of(List<double> samples)
    {
        if (samples.Count == 0) return null;
        var sorted = samples.ToArray();
        Array.Sort(sorted);
        double At(double q) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
        return new LatencySummary(sorted.Length, At(0.50), At(0.90), At(0.99), sorted[^1]);
    }

    /// <inheritdoc />
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"n={Count} p50={P50:0.0} ms p90={P90:0.0} ms p99={P99:0.0} ms max={Max:0.0} ms");
}

/// <summary>What a swarm run did.</summary>
public sealed class SwarmReport
{
    /// <summary>Joins started.</summary>
    public int JoinsStarted { get; init; }

    /// <summary>Joins answered with a Welcome.</summary>
    public int Joined { get; init; }

    /// <summary>Joins that failed, by reason (the first words of it), most frequent first.</summary>
    public IReadOnlyList<(string Reason, int Count)> Failures { get; init; } = [];

    /// <summary>Leaves sent (churn and the end).</summary>
    public int Left { get; init; }

    /// <summary>Control links the coordinator ended on its own (evictions, timeouts), by reason.</summary>
    public IReadOnlyList<(string Reason, int Count)> Dropped { get; init; } = [];

    /// <summary>Moves received (each answered with Attached).</summary>
    public long Moves { get; init; }

    /// <summary>The most peers connected at once.</summary>
    public int PeakConnected { get; init; }

    /// <summary>Peers connected when the hold ended (before the final leaves).</summary>
    public int ConnectedAtHoldEnd { get; init; }

    /// <summary>Join latencies during the ramp.</summary>
    public LatencySummary? RampLatency { get; init; }

    /// <summary>Join latencies of the churn joins during the hold.</summary>
    public LatencySummary? HoldLatency { get; init; }

    /// <summary>Join latencies during the ramp from a peer's first attempt, with its waits and new attempts after "busy" answers.</summary>
    public LatencySummary? RampLatencyWithRetries { get; init; }

    /// <summary>As <see cref="RampLatencyWithRetries"/> for the churn joins of the hold.</summary>
    public LatencySummary? HoldLatencyWithRetries { get; init; }

    /// <summary>Joins the coordinator answered "busy" (admission control); each tried again after a backoff.</summary>
    public long BusyAnswers { get; init; }

    /// <summary>
    /// Joins the coordinator took the connection of and then reset or closed before it answered
    /// (its hello deadline passed before it read the hello: a starved joiner, or a starved
    /// coordinator); each tried again after a backoff, as a real peer does.
    /// </summary>
    public long InterruptedJoins { get; init; }

    /// <summary>
    /// Connections kept after Landmarks that the coordinator closed before the peer's next Join was
    /// answered (it waits a few seconds for it); each such Join went on a new connection.
    /// </summary>
    public long KeptConnectionsClosed { get; init; }

    /// <summary>How long the ramp took (its join rate is <see cref="JoinsStarted"/> over it).</summary>
    public TimeSpan RampTime { get; init; }

    /// <summary>True when the ramp was held back by <see cref="SwarmOptions.MaxJoinsInFlight"/>: the offered rate was not reached.</summary>
    public bool RampThrottled { get; init; }

    /// <summary>A few lines for a user.</summary>
    public string Render()
    {
        var s = new StringBuilder();
        s.AppendLine(CultureInfo.InvariantCulture, $"joins: {Joined} of {JoinsStarted} started; ramp {RampTime.TotalSeconds:0.0} s ({(RampTime > TimeSpan.Zero ? JoinsStarted / RampTime.TotalSeconds : 0):0} joins/s started){(RampThrottled ? ", held back by the in-flight limit" : "")}");
        s.AppendLine(CultureInfo.InvariantCulture, $"join latency, ramp: {RampLatency?.ToString() ?? "none"}");
        s.AppendLine(CultureInfo.InvariantCulture, $"join latency, hold (churn): {HoldLatency?.ToString() ?? "none"}");
        s.AppendLine(CultureInfo.InvariantCulture, $"busy answers (tried again): {BusyAnswers}; from the first attempt, ramp: {RampLatencyWithRetries?.ToString() ?? "none"}; hold: {HoldLatencyWithRetries?.ToString() ?? "none"}");
        if (InterruptedJoins > 0) s.AppendLine(CultureInfo.InvariantCulture, $"joins the coordinator closed before answering (tried again): {InterruptedJoins}");
        if (KeptConnectionsClosed > 0) s.AppendLine(CultureInfo.InvariantCulture, $"kept connections closed before the next Join (joined again on a new one): {KeptConnectionsClosed}");
        s.AppendLine(CultureInfo.InvariantCulture, $"connected: peak {PeakConnected}, at the end of the hold {ConnectedAtHoldEnd}; leaves sent {Left}; moves received {Moves}");
        foreach (var (reason, count) in Failures) s.AppendLine(CultureInfo.InvariantCulture, $"failed joins: {count} x {reason}");
        foreach (var (reason, count) in Dropped) s.AppendLine(CultureInfo.InvariantCulture, $"dropped by the coordinator: {count} x {reason}");
        return s.ToString();
    }
}

namespace ShardStream.Nodes;

/// <summary>Spans of time in a <see cref="TimeProvider"/>'s timestamp units, for arithmetic on its timestamps.</summary>
internal static class TimestampSpans
{
    /// <summary><paramref name="span"/> in timestamp units of <paramref name="time"/> (what <see cref="TimeProvider.GetTimestamp"/> counts).</summary>
    public static long TimestampTicks(this TimeProvider time, TimeSpan span) => (long)(span.TotalSeconds * time.TimestampFrequency);
}

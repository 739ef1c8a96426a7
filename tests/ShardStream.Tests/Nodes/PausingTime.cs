namespace ShardStream.Tests.Nodes;

/// <summary>
/// The system's clock for a node whose tick loop does not run for <paramref name="pause"/> out of
/// every <paramref name="every"/>, as a process a loaded host leaves unscheduled now and then: the
/// ticks of periodic timers (the tick loop's) that fall in those pauses are missed, and the node
/// sees its next tick that much late (event 8001). Everything else runs on time.
/// </summary>
internal sealed class PausingTime(TimeSpan every, TimeSpan pause) : TimeProvider
{
    private readonly long _start = TimeProvider.System.GetTimestamp();

    /// <summary>Whether the node's tick loop is paused now.</summary>
    public bool Paused => TimeProvider.System.GetElapsedTime(_start).Ticks % every.Ticks < pause.Ticks;

    public override long GetTimestamp() => TimeProvider.System.GetTimestamp();

    public override long TimestampFrequency => TimeProvider.System.TimestampFrequency;

    public override DateTimeOffset GetUtcNow() => TimeProvider.System.GetUtcNow();

    public override TimeZoneInfo LocalTimeZone => TimeProvider.System.LocalTimeZone;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        period == Timeout.InfiniteTimeSpan
            ? TimeProvider.System.CreateTimer(callback, state, dueTime, period)
            : TimeProvider.System.CreateTimer(s =>
            {
                if (!Paused) callback(s);
            }, state, dueTime, period);
}

using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>
/// Admission control (docs/performance.md, "The coordinator at scale"; off unless set): the coordinator works on at
/// most <see cref="CoordinatorOptions.MaxJoinsInProgress"/> joins at once (each a dial-back probe,
/// two signatures and a placement); up to <see cref="CoordinatorOptions.MaxJoinsWaiting"/> more
/// wait for a turn, each at most <see cref="CoordinatorOptions.MaxJoinWait"/>; any other is told
/// at once that the coordinator is busy (Goodbye code Busy), and tries again after a backoff. A
/// storm of joins then costs each admitted one a bounded wait, instead of every join the time of
/// all of them (and probes that time out under the load they cause).
/// </summary>
internal sealed class JoinSlots(CoordinatorOptions options, ILogger log, CancellationToken stopping)
{
    private SemaphoreSlim? _slots;
    private int _waiting;
    private long _refusedBusy;

    /// <summary>Joins told that the coordinator was busy, so far.</summary>
    public long RefusedBusy => Interlocked.Read(ref _refusedBusy);

    /// <summary>
    /// Takes a turn for a join: a slot to release once the joiner is welcomed (or refused), or
    /// null when the joiner is to be told the coordinator is busy (with the reason given).
    /// </summary>
    public async Task<(IDisposable? Turn, string? Busy)> EnterAsync(Link link)
    {
        if (options.MaxJoinsInProgress is not { } most) return (new JoinSlot(null), null);
        var slots = LazyInitializer.EnsureInitialized(ref _slots, () => new SemaphoreSlim(most, most));
        if (slots.Wait(0)) return (new JoinSlot(slots), null);
        if (Interlocked.Increment(ref _waiting) <= options.MaxJoinsWaiting)
        {
            try
            {
                if (await slots.WaitAsync(options.MaxJoinWait, stopping).ConfigureAwait(false)) return (new JoinSlot(slots), null);
            }
            catch (OperationCanceledException)
            {
                return (null, null);
            }
            finally
            {
                Interlocked.Decrement(ref _waiting);
            }
        }
        else
        {
            Interlocked.Decrement(ref _waiting);
        }
        long refused = Interlocked.Increment(ref _refusedBusy);
        AdmissionLog.Busy(log, link.Name, refused);
        return (null, $"busy: {most} joins in progress and {options.MaxJoinsWaiting} waiting; try again in a moment");
    }

    /// <summary>A turn to join; released once (the welcome was sent, or the join ended).</summary>
    private sealed class JoinSlot(SemaphoreSlim? slots) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0) slots?.Release();
        }
    }
}

/// <summary>Admission control's log line, in the coordinator's range (1691; until 2026-12-06 1300, the id of the HTTP host's HttpListening).</summary>
internal static partial class AdmissionLog
{
    [LoggerMessage(1691, LogLevel.Debug, "{Link}: told the coordinator is busy ({Refused} joins so far)", EventName = "JoinBusy")]
    public static partial void Busy(ILogger log, string link, long refused);
}

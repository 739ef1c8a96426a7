using Microsoft.Extensions.Logging;
using ShardStream.Wire;

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
public sealed partial class Coordinator
{
    private SemaphoreSlim? _joinSlots;
    private int _joinsWaiting;
    private long _joinsRefusedBusy;

    /// <summary>Joins told that the coordinator was busy, so far.</summary>
    public long JoinsRefusedBusy => Interlocked.Read(ref _joinsRefusedBusy);

    /// <summary>
    /// Takes a turn for a join: a slot to release once the joiner is welcomed (or refused), or
    /// null when the joiner was told the coordinator is busy.
    /// </summary>
    private async Task<JoinSlot?> EnterJoinAsync(Link link)
    {
        if (_options.MaxJoinsInProgress is not { } most) return new JoinSlot(null);
        var slots = LazyInitializer.EnsureInitialized(ref _joinSlots, () => new SemaphoreSlim(most, most));
        if (slots.Wait(0)) return new JoinSlot(slots);
        if (Interlocked.Increment(ref _joinsWaiting) <= _options.MaxJoinsWaiting)
        {
            try
            {
                if (await slots.WaitAsync(_options.MaxJoinWait, Stopping).ConfigureAwait(false)) return new JoinSlot(slots);
            }
            catch (OperationCanceledException)
            {
                return null;
            }
            finally
            {
                Interlocked.Decrement(ref _joinsWaiting);
            }
        }
        else
        {
            Interlocked.Decrement(ref _joinsWaiting);
        }
        long refused = Interlocked.Increment(ref _joinsRefusedBusy);
        string reason = $"busy: {most} joins in progress and {_options.MaxJoinsWaiting} waiting; try again in a moment";
        AdmissionLog.Busy(Log, link.Name, refused);
        await RefuseAsync(link, GoodbyeCode.Busy, reason, warn: false).ConfigureAwait(false);
        return null;
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

/// <summary>Admission control's log lines (event ids 1300..1309).</summary>
internal static partial class AdmissionLog
{
    [LoggerMessage(1300, LogLevel.Debug, "{Link}: told the coordinator is busy ({Refused} joins so far)", EventName = "JoinBusy")]
    public static partial void Busy(ILogger log, string link, long refused);
}

using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>
/// Counts events that a flood could repeat (connections dropped before their hello, HTTP
/// connections refused) and says the count at most once per <paramref name="interval"/>: a flood
/// must not flood the log. An event within the interval of the last line is said when the interval
/// is up, with the count then, so a flood that came in one burst is not said as its first event
/// alone. <paramref name="say"/> gets the count so far and the last event's detail.
/// </summary>
internal sealed class ThrottledCount(TimeSpan interval, TimeProvider time, Action<long, string> say, ILogger log, string what, CancellationToken stopping = default)
{
    private long _count;
    private long _lastLine;
    private int _lineDue;
    private string _last = "";

    /// <summary>Events counted so far.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>Counts one event (<paramref name="detail"/>: what the line says of the last one); says the count at once, or when the interval is up.</summary>
    public void Note(string detail)
    {
        Interlocked.Increment(ref _count);
        Volatile.Write(ref _last, detail);
        if (Interlocked.CompareExchange(ref _lineDue, 1, 0) != 0) return; // a line is due: it will count this one
        long last = Interlocked.Read(ref _lastLine);
        var wait = last == 0 ? TimeSpan.Zero : interval - time.GetElapsedTime(last);
        if (wait <= TimeSpan.Zero)
        {
            Say();
            return;
        }
        Background.Run(async () =>
        {
            try
            {
                await Task.Delay(wait, time, stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            Say();
        }, log, what);
    }

    private void Say()
    {
        Interlocked.Exchange(ref _lastLine, time.GetTimestamp());
        // Cleared before the count is read: an event after this line's count schedules the next line.
        Volatile.Write(ref _lineDue, 0);
        say(Count, Volatile.Read(ref _last));
    }
}

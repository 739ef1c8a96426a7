using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>
/// Log lines about input and load an attacker controls, and about failures that would otherwise
/// vanish: operators filter on the event ids (9100..9199; the slow-child policy has 900..917, the failure detector 8001..8005; docs/logging.md lists them all).
/// </summary>
internal static partial class HardeningLog
{
    [LoggerMessage(9100, LogLevel.Error, "background task '{What}' failed", EventName = "BackgroundTaskFailed")]
    public static partial void BackgroundTaskFailed(ILogger log, string what, Exception exception);

    [LoggerMessage(9101, LogLevel.Error, "plan error: peer {Peer} was moved to parent {Parent} for shard {Shard}, which has no session; that move is not sent", EventName = "MoveToUnknownParent")]
    public static partial void MoveToUnknownParent(ILogger log, int peer, int shard, int parent);

    [LoggerMessage(9102, LogLevel.Warning, "accept failed: {Reason}; accepting again in {BackoffMs} ms", EventName = "AcceptFailed")]
    public static partial void AcceptFailed(ILogger log, string reason, double backoffMs);

    [LoggerMessage(9111, LogLevel.Warning, "not accepting for now: {Open} descriptors in use ({Connections} TCP connections), within {Reserve} of this process's open-file limit ({Limit}; ulimit -n raises it); new connections wait in the accept queue until some close", EventName = "AcceptPaused")]
    public static partial void AcceptPaused(ILogger log, int open, int connections, int limit, int reserve);

    [LoggerMessage(9103, LogLevel.Debug, "{Link}: closed without a hello: {Reason}", EventName = "NoHello")]
    public static partial void NoHello(ILogger log, string link, string reason);

    [LoggerMessage(9105, LogLevel.Debug, "{Link}: bytes of its hello waited unread at the hello deadline ({Seconds:0.#} s): this node was too busy to read them, so it waits once more as long", EventName = "HelloUnreadAtDeadline")]
    public static partial void HelloUnreadAtDeadline(ILogger log, string link, double seconds);

    [LoggerMessage(9106, LogLevel.Warning, "{Count} connection(s) refused so far for a first frame that is no hello this node takes; the last: {Last}", EventName = "BadHellosRefused")]
    public static partial void BadHellosRefused(ILogger log, long count, string last);

    [LoggerMessage(9104, LogLevel.Warning, "{Count} connection(s) dropped so far before their hello to make room for newer ones ({Reason}): a flood of silent connections?", EventName = "WaitersDropped")]
    public static partial void WaitersDropped(ILogger log, long count, string reason);
}

/// <summary>Fire-and-forget tasks that are still observed: a failure is logged, never lost.</summary>
internal static class Background
{
    /// <summary>
    /// Observes <paramref name="task"/>: when it faults, its exception is logged as
    /// <see cref="HardeningLog.BackgroundTaskFailed"/> with <paramref name="what"/>. Cancellation is
    /// not a failure.
    /// </summary>
    public static void Observe(this Task task, ILogger log, string what)
    {
        if (task.IsCompletedSuccessfully) return;
        task.ContinueWith(static (t, state) =>
        {
            var (log, what) = ((ILogger, string))state!;
            HardeningLog.BackgroundTaskFailed(log, what, t.Exception!.InnerExceptions.Count == 1 ? t.Exception.InnerException! : t.Exception);
        }, (log, what), CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Runs <paramref name="work"/> on the thread pool and observes it (see <see cref="Observe"/>).</summary>
    public static void Run(Func<Task> work, ILogger log, string what) => Task.Run(work).Observe(log, what);
}

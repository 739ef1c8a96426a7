using Microsoft.Extensions.Logging;

namespace ShardStream.Rtmp;

/// <summary>RTMP log lines (event ids 1100..1199). The stream key never appears in them.</summary>
internal static partial class RtmpLog
{
    [LoggerMessage(1100, LogLevel.Information, "rtmp: listening on {Address} ({What})", EventName = "RtmpListening")]
    public static partial void Listening(ILogger log, string address, string what);

    /// <summary>A debug line: the warning is <see cref="BadInputClosed"/>, counted.</summary>
    [LoggerMessage(1101, LogLevel.Debug, "rtmp {Remote}: closed: {Reason}", EventName = "RtmpClosedBadInput")]
    public static partial void ClosedBadInput(ILogger log, string remote, string reason);

    [LoggerMessage(1102, LogLevel.Information, "rtmp {Remote}: closed: {Reason}", EventName = "RtmpClosed")]
    public static partial void Closed(ILogger log, string remote, string reason);

    [LoggerMessage(1103, LogLevel.Information, "rtmp {Remote}: publishing started (app '{App}')", EventName = "RtmpPublishStarted")]
    public static partial void PublishStarted(ILogger log, string remote, string app);

    [LoggerMessage(1104, LogLevel.Information, "rtmp {Remote}: publishing ended ({Why}) after {Tags} tags", EventName = "RtmpPublishEnded")]
    public static partial void PublishEnded(ILogger log, string remote, string why, long tags);

    [LoggerMessage(1105, LogLevel.Warning, "rtmp {Remote}: publish refused: {Reason}", EventName = "RtmpPublishRefused")]
    public static partial void PublishRefused(ILogger log, string remote, string reason);

    [LoggerMessage(1106, LogLevel.Information, "rtmp {Remote}: playing started", EventName = "RtmpPlayStarted")]
    public static partial void PlayStarted(ILogger log, string remote);

    [LoggerMessage(1107, LogLevel.Warning, "rtmp {Remote}: play refused: {Reason}", EventName = "RtmpPlayRefused")]
    public static partial void PlayRefused(ILogger log, string remote, string reason);

    [LoggerMessage(1108, LogLevel.Warning, "rtmp: {Count} connection(s) refused so far, the last {Last}", EventName = "RtmpConnectionRefused")]
    public static partial void ConnectionsRefused(ILogger log, long count, string last);

    [LoggerMessage(1109, LogLevel.Debug, "rtmp {Remote}: ignored {What}", EventName = "RtmpIgnored")]
    public static partial void Ignored(ILogger log, string remote, string what);

    [LoggerMessage(1110, LogLevel.Warning, "rtmp: accept failed: {Reason}; accepting again in {BackoffMs} ms", EventName = "RtmpAcceptFailed")]
    public static partial void AcceptFailed(ILogger log, string reason, double backoffMs);

    [LoggerMessage(1111, LogLevel.Debug, "rtmp {Remote}: command {Name} (transaction {Transaction})", EventName = "RtmpCommand")]
    public static partial void Command(ILogger log, string remote, string name, double transaction);

    [LoggerMessage(1112, LogLevel.Error, "rtmp {Remote}: session failed", EventName = "RtmpSessionFailed")]
    public static partial void SessionFailed(ILogger log, string remote, Exception exception);

    [LoggerMessage(1113, LogLevel.Warning, "rtmp: {Count} connection(s) closed so far for bad input (not RTMP, or RTMP this node does not take), the last from {Last}", EventName = "RtmpBadInput")]
    public static partial void BadInputClosed(ILogger log, long count, string last);
}

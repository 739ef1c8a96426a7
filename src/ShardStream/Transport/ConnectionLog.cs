using Microsoft.Extensions.Logging;

namespace ShardStream.Transport;

/// <summary>
/// Log lines of a framed connection: how it ended and why (event ids 1500..1599; see docs/logging.md).
/// </summary>
internal static partial class ConnectionLog
{
    [LoggerMessage(1500, LogLevel.Warning, "{Link}: closing: {Reason}", EventName = "Closing")]
    public static partial void Closing(ILogger log, string link, string reason);

    [LoggerMessage(1501, LogLevel.Debug, "{Link}: closing: {Reason}", EventName = "ClosingNormally")]
    public static partial void ClosingNormally(ILogger log, string link, string reason);

    [LoggerMessage(1502, LogLevel.Information, "{Link}: {Reason}", EventName = "SendFailed")]
    public static partial void SendFailed(ILogger log, string link, string reason);

    [LoggerMessage(1503, LogLevel.Warning, "{Link}: {Reason}", EventName = "GoodbyeReceived")]
    public static partial void GoodbyeReceived(ILogger log, string link, string reason);

    [LoggerMessage(1504, LogLevel.Warning, "{Link}: {Reason}", EventName = "Violation")]
    public static partial void Violation(ILogger log, string link, string reason);

    [LoggerMessage(1505, LogLevel.Debug, "{Link}: read loop ended: {Reason}", EventName = "ReadLoopEnded")]
    public static partial void ReadLoopEnded(ILogger log, string link, string reason);

    /// <summary>The same line and id as <c>HardeningLog.BackgroundTaskFailed</c> (9100): a handler's bug ended the read loop.</summary>
    [LoggerMessage(9100, LogLevel.Error, "background task '{What}' failed", EventName = "BackgroundTaskFailed")]
    public static partial void ReadLoopFailed(ILogger log, string what, Exception exception);
}

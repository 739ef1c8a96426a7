using Microsoft.Extensions.Logging;

namespace ShardStream.Cli;

/// <summary>Log lines of the command-line host itself: event ids 1750..1799 (see docs/logging.md).</summary>
internal static partial class CliLog
{
    [LoggerMessage(1750, LogLevel.Information, "created a new stream key in {File} (mode 0600)", EventName = "KeyCreated")]
    public static partial void KeyCreated(ILogger log, string? file);

    [LoggerMessage(1758, LogLevel.Warning, "the stream key file {File} is readable by others (mode {Mode}): whoever reads it can sign as this stream: chmod 600 {Path}", EventName = "KeyFileReadable")]
    public static partial void KeyFileReadable(ILogger log, string? file, string mode, string? path);

    [LoggerMessage(1751, LogLevel.Information, "overlay at the end of the stream:", EventName = "FinalOverlay")]
    public static partial void FinalOverlay(ILogger log);

    [LoggerMessage(1752, LogLevel.Information, "  {Line}", EventName = "FinalOverlayLine")]
    public static partial void FinalOverlayLine(ILogger log, string line);

    [LoggerMessage(1753, LogLevel.Warning, "no --rtmp-key: any stream key is accepted from a publisher", EventName = "NoRtmpKey")]
    public static partial void NoRtmpKey(ILogger log);

    [LoggerMessage(1754, LogLevel.Information, "the stream: {Bytes} bytes in {Chunks} chunks", EventName = "StreamTotals")]
    public static partial void StreamTotals(ILogger log, long bytes, long chunks);

    [LoggerMessage(1755, LogLevel.Warning, "{Signal}: ending the stream at {Bytes} bytes read from {Source}; the End goes out and peers finish (up to 15 s); Ctrl-C or SIGTERM again stops the wait (peers still behind are told the coordinator stops, up to 3 s)", EventName = "EndingOnSignal")]
    public static partial void EndingOnSignal(ILogger log, long bytes, string source, string signal);

    [LoggerMessage(1757, LogLevel.Warning, "{Signal}: the stream has ended already, at {Bytes} bytes (the end of {Source}); its End is out and the coordinator waits for its peers to finish (up to 15 s from now); Ctrl-C or SIGTERM again stops the wait (peers still behind are told the coordinator stops, up to 3 s)", EventName = "EndedBeforeSignal")]
    public static partial void AlreadyEndedOnSignal(ILogger log, long bytes, string source, string signal);

    [LoggerMessage(1756, LogLevel.Warning, "{Signal} again: quitting without waiting for peers to finish", EventName = "QuittingOnSignal")]
    public static partial void QuittingOnSignal(ILogger log, string signal);
}

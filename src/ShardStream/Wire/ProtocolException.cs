namespace ShardStream.Wire;

/// <summary>
/// The remote side broke the protocol (malformed, oversized or unexpected frame, unknown version).
/// The connection that carried it is ended with this message as the reason.
/// </summary>
public class ProtocolException(string message) : Exception(message)
{
    /// <summary>
    /// The first line of what the other side sent, when a first frame was refused and its bytes
    /// were text (another protocol's answer or request); null otherwise.
    /// </summary>
    public string? Text { get; init; }
}

/// <summary>Which other service answered in place of a ShardStream node, as far as its first line tells.</summary>
public enum ForeignService
{
    /// <summary>Its first bytes are not text, or text of no service recognised here.</summary>
    Unknown,

    /// <summary>An HTTP server: its first line starts <c>HTTP/1</c> (a status line).</summary>
    Http,

    /// <summary>A node's RTMP server: its line for a client that is not RTMP starts <c>RTMP server:</c>.</summary>
    Rtmp,
}

/// <summary>
/// The address a peer joins through or attaches to answered with no ShardStream frame: another
/// service listens there. The message says so, with the service when its first line tells
/// (<see cref="Service"/>) and that line; it names no option of a front end, which can add which
/// of a node's addresses to give instead (the CLI: its <c>-l</c>, not its <c>--http</c> or
/// <c>--rtmp</c>).
/// </summary>
public sealed class NotShardStreamException(string address, ForeignService service, string detail)
    : ProtocolException($"{address} does not speak the ShardStream protocol{Said(service)}; {detail}")
{
    /// <summary>The address that answered.</summary>
    public string Address { get; } = address;

    /// <summary>The service that answered, when its first line tells.</summary>
    public ForeignService Service { get; } = service;

    /// <summary>What was read: the refused first frame and, when it was text, its first line.</summary>
    public string Detail { get; } = detail;

    /// <summary>How a node's RTMP server begins its line to a client that is not RTMP (it says it with this).</summary>
    public const string RtmpServerPrefix = "RTMP server:";

    /// <summary>The service whose first line is <paramref name="text"/> (null: no text).</summary>
    public static ForeignService ServiceOf(string? text) =>
        text is null ? ForeignService.Unknown
        : text.StartsWith("HTTP/1", StringComparison.Ordinal) ? ForeignService.Http
        : text.StartsWith(RtmpServerPrefix, StringComparison.Ordinal) ? ForeignService.Rtmp
        : ForeignService.Unknown;

    /// <summary><paramref name="service"/> in words ("an HTTP server"); empty for an unknown one.</summary>
    public static string Named(ForeignService service) => service switch
    {
        ForeignService.Http => "an HTTP server",
        ForeignService.Rtmp => "an RTMP server",
        _ => "",
    };

    private static string Said(ForeignService service) => service == ForeignService.Unknown ? "" : $": {Named(service)} answered";
}

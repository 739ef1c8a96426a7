using System.Globalization;
using System.Text.RegularExpressions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Reads the figures of a stopped slow viewer's reason, "your download is below the stream rate:
/// X vs Y Mbit/s" ("X kbit/s vs Y Mbit/s" under 0.1 Mbit/s, or "you took nothing [in N s] while
/// Y Mbit/s were queued for you"), as a parent says it; or as the coordinator says it, "your
/// download is below the stream rate, Y Mbit/s: ...", to which the viewer adds what it measured
/// itself, "; this peer received X Mbit/s at best (...)" (none before it has a window: read as 0). Shared by the in-process tests and the real CLI's in network
/// namespaces (linked into the integration tests), so both read the message the same way.
/// </summary>
internal static partial class BelowRateMessage
{
    [GeneratedRegex(@"your download is below the stream rate(?:: (?:(?<down>[0-9.]+)(?<kbit> kbit/s)? vs|you took nothing(?: in [0-9.]+ s)? while) (?<stream>[0-9.]+) Mbit/s|, (?<stream>[0-9.]+) Mbit/s(?:: [^;]*; this peer received (?<down>[0-9.]+)(?:(?<kbit> kbit/s)| Mbit/s) at best)?)")]
    public static partial Regex Pattern();

    /// <summary>The download a <see cref="Pattern"/> match quotes, in Mbit/s (0 for "nothing").</summary>
    public static double DownloadOf(Match m) => !m.Groups["down"].Success ? 0
        : double.Parse(m.Groups["down"].Value, CultureInfo.InvariantCulture) / (m.Groups["kbit"].Success ? 1000 : 1);

    /// <summary>The stream rate a <see cref="Pattern"/> match quotes, in Mbit/s.</summary>
    public static double StreamOf(Match m) => double.Parse(m.Groups["stream"].Value, CultureInfo.InvariantCulture);
}

using System.Globalization;
using ShardStream.Cli.Http;
using ShardStream.Nodes;

namespace ShardStream.Cli;

/// <summary>The text of a viewer's status line (docs/dashboard.md says what each field means).</summary>
internal static class PeerStatusText
{
    public static Func<string> For(Peer peer)
    {
        var rate = new RateMeter(() => peer.Status().BytesReceived);
        return () => Format(peer.Status(), rate.Rate);
    }

    public static string Format(PeerStatus s, double rate)
    {
        if (s.ShardCount == 0) return "joining…";
        var text = new System.Text.StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"peer {s.Id} │ {Mbit(rate)} │ {Size(s.BytesWritten)} out");
        string seconds = rate > 0 ? string.Create(CultureInfo.InvariantCulture, $" ({s.BehindNewest / rate:0.0} s)") : "";
        text.Append(CultureInfo.InvariantCulture, $" │ behind {Size(s.BehindNewest)}{seconds}");
        text.Append(" │ parents ").Append(string.Join(' ', s.Parents.Select((p, i) => $"{i}:{(p < 0 ? "-" : p == 0 ? "src" : p.ToString(CultureInfo.InvariantCulture))}")));
        text.Append(CultureInfo.InvariantCulture, $" │ children {s.Children.SelectMany(c => c).Distinct().Count()}");
        text.Append(CultureInfo.InvariantCulture, $" │ window {100.0 * s.WindowBytes / Math.Max(1, s.WindowLimit):0}%");
        if (s.StalledShards > 0) text.Append(CultureInfo.InvariantCulture, $" │ {s.StalledShards} shard(s) stalled");
        if (s.LostBytes > 0) text.Append(CultureInfo.InvariantCulture, $" │ LOST {Size(s.LostBytes)}");
        if (s.Complete) text.Append(" │ complete");
        return text.ToString();
    }

    public static string Mbit(double bytesPerSecond) => string.Create(CultureInfo.InvariantCulture, $"{bytesPerSecond * 8 / 1e6:0.00} Mbit/s");

    public static string Size(long bytes) => bytes switch
    {
        < 1024 => string.Create(CultureInfo.InvariantCulture, $"{bytes} B"),
        < 1024 * 1024 => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1024.0:0.0} KiB"),
        < 1024L * 1024 * 1024 => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1048576.0:0.0} MiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1073741824.0:0.00} GiB"),
    };
}

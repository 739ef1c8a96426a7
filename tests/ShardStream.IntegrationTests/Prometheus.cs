using System.Globalization;
using System.Text.RegularExpressions;

namespace ShardStream.IntegrationTests;

/// <summary>Reads the Prometheus text format (what a scraper sees) and the node's bound HTTP address.</summary>
internal static partial class Prometheus
{
    private static readonly HttpClient Client = new() { Timeout = TimeSpan.FromSeconds(30) };

    public static async Task<string> GetAsync(string url) => await Client.GetStringAsync(url);

    /// <summary>The sum of every sample of <paramref name="name"/> whose labels include all of <paramref name="labels"/> (e.g. <c>shard="0"</c>); null when there is none.</summary>
    public static double? Sum(string text, string name, params string[] labels)
    {
        double? sum = null;
        foreach (var line in text.Split('\n'))
        {
            var m = SampleRegex().Match(line);
            if (!m.Success || m.Groups["name"].Value != name) continue;
            string l = m.Groups["labels"].Value;
            if (!labels.All(l.Contains)) continue;
            sum = (sum ?? 0) + double.Parse(m.Groups["value"].Value, CultureInfo.InvariantCulture);
        }
        return sum;
    }

    /// <summary>Waits for the "http listening on URL" log line of a node and returns the URL.</summary>
    public static async Task<string> WaitForHttpAsync(CliProcess node, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            foreach (var line in node.StderrLines)
                if (HttpRegex().Match(line) is { Success: true } m) return m.Groups[1].Value;
            if (node.HasExited) break;
            await Task.Delay(50);
        }
        throw new TimeoutException($"no 'http listening on' line within {timeout}; stderr:\n{node.Stderr}");
    }

    /// <summary>Polls until <paramref name="condition"/> holds; the message says what was last seen.</summary>
    public static async Task WaitUntilAsync(Func<Task<(bool Done, string Seen)>> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        string seen = "";
        while (DateTime.UtcNow < deadline)
        {
            bool done;
            (done, seen) = await condition();
            if (done) return;
            await Task.Delay(200);
        }
        throw new TimeoutException($"{what}: not within {timeout}; last seen: {seen}");
    }

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})? (?<value>\S+)")]
    private static partial Regex SampleRegex();

    [GeneratedRegex(@"http listening on (http://\S+)")]
    private static partial Regex HttpRegex();
}

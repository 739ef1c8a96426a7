using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using ShardStream.Tests.Adversary;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A joiner takes its wait for the coordinator's Landmarks answer as its RTT to the coordinator,
/// and fits its coordinate (its direction from the coordinator too) to it and to the landmark peers
/// it probed. A late answer (a stalled coordinator, or a stalled joiner) set that direction wrong
/// for good in a peer that measures only the coordinator afterwards: its pings move it only along
/// the line from the anchor (LyingRttTests, once in a loaded CI run). It fits again once its
/// control link's least RTT is well under that wait.
/// </summary>
public sealed partial class LateLandmarksTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_joiner_whose_landmarks_answer_came_late_still_ends_up_where_its_rtts_put_it()
    {
        var log = new LogCapture();
        // The line of LyingRttTests: the coordinator in the middle, p1 100 ms to one side, p2 100 ms to the other.
        var (overlay, p1) = await LyingRttTests.StartLineAsync(log);
        await using var running = overlay;

        // p2's path to the coordinator carries nothing for 300 ms as it joins: its Hello reaches the
        // coordinator that late, as if either process had stalled, and the Landmarks answer comes
        // 400 ms after the Hello went out, later than p1's answer to its probe (200 ms).
        overlay.Network.Freeze("p2", "coord");
        var joining = overlay.AddPeerAsync(upload: 2, configure: LyingRttTests.LinePeer);
        await Task.Delay(300);
        overlay.Network.Thaw("p2", "coord");
        var p2 = await joining;

        var measured = log.Lines.Select(l => Measured().Match(l.Message)).Single(m => m.Success);
        double waited = double.Parse(measured.Groups[1].Value, CultureInfo.InvariantCulture);
        output.WriteLine($"p2 waited {waited} ms for the landmarks; fitted at {measured.Groups[2].Value}; p1 at {p1.Coordinate}");
        Assert.True(waited >= 300, $"p2 waited {waited} ms for the landmarks: the freeze did not delay the answer");

        // Before: its fit started on p1's point (the nearer by what it measured), stayed on the
        // line through the coordinator and p1, and its pings brought it next to p1 for good.
        await LyingRttTests.UntilRightAsync(p2, p1, TimeSpan.FromSeconds(30));
        // The first refit (a later one, if the least RTT came down further, replaces that fit).
        string refit = log.Lines.First(l => l.Message.StartsWith("network coordinate fitted again", StringComparison.Ordinal)).Message;
        output.WriteLine($"{refit}; now {p2.Coordinate}, {p2.Coordinate.EstimateRtt(p1.Coordinate):0} ms from p1 by estimate");
        Assert.True(log.Has(LogLevel.Information, $"network coordinate fitted again to the nodes measured at the join: the fit it replaces took {waited.ToString("0.#", CultureInfo.InvariantCulture)} ms to the coordinator"), refit);
    }

    /// <summary>A joiner's line after it measured two nodes (p2: the coordinator and p1): its wait for the landmarks, and its fitted coordinate.</summary>
    [GeneratedRegex(@"^measured 2 of 2 node\(s\) the coordinator named \(2 in all; coordinator ([0-9.]+) ms\): network coordinate (.*)$")]
    private static partial Regex Measured();
}

using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using ShardStream.Tests.Nodes;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// Issue 9's slow viewer, with the real CLI on ten hosts (network namespaces behind a router,
/// <see cref="NetnsHosts"/>): a live 16 Mbit/s source, one viewer whose download is capped at
/// 1 Mbit/s by the kernel (tc tbf on the router's link to it) joined first, then eight viewers on
/// fast links. The eight write every byte at the live rate; the slow one is demoted and then stops
/// with the reason. Times are the nodes' own (their log lines' timestamps). How soon it is demoted
/// (issue 9's 5 s) is a figure this test prints, kept in docs/performance.md, not asserted: a
/// coordinator that the machine did not run for 4.3 s (event 8001, ci283 at load 70-100) demoted it
/// 7.2 s after the first byte, 4.5 s after it found it slow. Needs root, iproute2 and tc.
/// </summary>
[Collection(NetnsCollection.Name)]
public sealed partial class SlowViewerNetnsTests(ITestOutputHelper output)
{
    private const int Rate = 2 * 1024 * 1024;      // 16.8 Mbit/s
    private const int Seconds = 28;
    private const int Piece = 64 * 1024;
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(180);

    [Fact]
    public async Task A_viewer_on_a_1_Mbit_link_is_demoted_and_stopped_while_eight_others_keep_a_16_Mbit_live_stream()
    {
        if (RequiresTool.Missing(output, NetnsHosts.Unavailable())) return;
        if (RequiresTool.Missing(output, RequiresTool.FindOnPath("tc") is null ? "'tc' not on PATH" : null)) return;
        var (prefix, network) = NetnsHosts.Own("ss-slow-", 82);
        await using var net = NetnsHosts.Create(10, output, prefix, network);
        // Every node writes its stream and its logs to files of its own, not to pipes this process
        // reads: a test host held up on a loaded machine then holds back no node, and the times
        // checked are the nodes' own (their log lines' timestamps), not when this process read
        // something.
        string dir = Directory.CreateTempSubdirectory("ss-slow-").FullName;
        try
        {
            await RunAsync(net, dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private async Task RunAsync(NetnsHosts net, string dir)
    {
        var origin = net.Hosts[0];
        var slowHost = net.Hosts[1];
        // The slow viewer's download: what the router sends it, 1 Mbit/s.
        net.Ip("netns", "exec", net.Router, "tc", "qdisc", "add", "dev", slowHost.RouterInterface, "root", "tbf", "rate", "1mbit", "burst", "16kb", "latency", "200ms");

        var coordinator = net.StartToFiles(origin, dir, "coordinator", "coordinator", "-l", "0.0.0.0:1234", "--min-peers", "9", "-v");
        await coordinator.WaitForLogAsync("coordinator listening on", Generous);
        string join = $"{origin.Address}:1234";
        var slow = net.StartToFiles(slowHost, dir, "slow", "peer", "-c", join, "-l", "0.0.0.0:1235", "-v");
        await slow.WaitForLogAsync("joined as peer", Generous);
        var fast = net.Hosts.Skip(2).Select(h => (Host: h, Cli: net.StartToFiles(h, dir, $"h{h.Index}", "peer", "-c", join, "-l", "0.0.0.0:1235"))).ToList();
        foreach (var (_, cli) in fast) await cli.WaitForLogAsync("joined as peer", Generous);
        await coordinator.WaitForLogAsync(@"\[1653\] streaming", Generous);

        // A live source: 2 MiB/s by the wall clock, whatever the overlay does.
        var source = new byte[Rate * Seconds];
        new Random(16).NextBytes(source);
        // The stream's start is when the coordinator's stdin has taken the first piece: a clock read
        // before that write counted a test host held up there as the overlay's time (with a 4 s
        // delay before the first write, the demotion "6.6 s after the stream started").
        long start = 0;
        var startClock = default(DateTime);
        for (int i = 0; i < source.Length / Piece; i++)
        {
            var due = TimeSpan.FromSeconds((double)i * Piece / Rate);
            var now = Stopwatch.GetElapsedTime(start);
            if (due > now) await Task.Delay(due - now);
            try
            {
                // A coordinator that stops reading its stdin must fail the test, not hang it.
                await coordinator.StandardInput.WriteAsync(source.AsMemory(i * Piece, Piece)).AsTask().WaitAsync(Generous);
                await coordinator.StandardInput.FlushAsync().WaitAsync(Generous);
                if (i == 0) (start, startClock) = (Stopwatch.GetTimestamp(), DateTime.Now);
            }
            catch (TimeoutException)
            {
                output.WriteLine($"--- coordinator:\n{coordinator.Stderr}\n--- slow viewer:\n{slow.Stderr}");
                throw new TimeoutException($"the coordinator did not read its stdin for {Generous.TotalSeconds:0} s after {i * Piece} bytes");
            }
        }
        coordinator.StandardInput.Close();
        double sourceSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds;

        string expected = Convert.ToHexStringLower(SHA256.HashData(source));
        var results = new List<(NetnsHost Host, int Exit, string Sha, double DoneAfterSource, double MbitPerS, string? Last)>();
        int coordinatorExit = await coordinator.WaitForExitAsync(Generous);
        // The source's end: when the coordinator read the end of its stdin, by its own log line.
        double sourceEnded = Logged(coordinator, "source ended after", startClock);
        foreach (var (host, cli) in fast)
        {
            int exit = await cli.WaitForExitAsync(Generous);
            string sha;
            await using (var written = File.OpenRead(cli.StdoutPath)) sha = Convert.ToHexStringLower(await SHA256.HashDataAsync(written));
            // "stream complete": logged by the viewer once its output has the last byte.
            double complete = Logged(cli, "stream complete", startClock);
            results.Add((host, exit, sha, complete - sourceEnded, source.Length * 8 / complete / 1e6, exit == 0 ? null : cli.StderrLines.LastOrDefault()));
        }
        int slowExit = await slow.WaitForExitAsync(Generous);

        double demotedAfter = Logged(coordinator, "demoted to a leaf", startClock);
        output.WriteLine($"source: {source.Length} bytes written in {sourceSeconds:0.0} s ({source.Length * 8 / sourceSeconds / 1e6:0.0} Mbit/s); the coordinator logged its end {sourceEnded:0.00} s after the first byte");
        foreach (var r in results)
            output.WriteLine($"h{r.Host.Index} {r.Host.Address}: exit {r.Exit}, sha256 {(r.Sha == expected ? "= source" : "DIFFERS")}, stream complete {r.DoneAfterSource:+0.00;-0.00;+0.00} s after the source ended, {r.MbitPerS:0.0} Mbit/s from the first byte written to the coordinator{(r.Last is null ? "" : $"; last line: {r.Last}")}");
        output.WriteLine($"slow viewer h{slowHost.Index}: exit {slowExit}, {new FileInfo(slow.StdoutPath).Length} bytes; last line: {slow.StderrLines.LastOrDefault()}");
        output.WriteLine($"coordinator: {coordinator.StderrLines.FirstOrDefault(l => l.Contains("demoted to a leaf", StringComparison.Ordinal)) ?? "no demotion logged"} ({demotedAfter:0.0} s after the first source byte); exit {coordinatorExit}");
        output.WriteLine($"coordinator: {coordinator.StderrLines.FirstOrDefault(l => l.Contains("stopping it", StringComparison.Ordinal)) ?? "no stop logged"} ({Logged(coordinator, "stopping it", startClock):0.0} s after the first source byte)");
        var error = slow.StderrLines.LastOrDefault(l => l.StartsWith("shardstream: error:", StringComparison.Ordinal)) ?? "";
        var figures = BelowRateMessage.Pattern().Match(error);
        bool slowToldWhy = figures.Success && BelowRateMessage.DownloadOf(figures) is >= 0.1 and <= 2.0
            && BelowRateMessage.StreamOf(figures) is >= 12 and <= 20;
        if (results.Any(r => r.Exit != 0 || r.Sha != expected || !(r.DoneAfterSource < 10)) || slowExit != 1 || !slowToldWhy || double.IsNaN(demotedAfter))
        {
            output.WriteLine($"--- coordinator:\n{coordinator.Stderr}");
            output.WriteLine($"--- slow viewer:\n{slow.Stderr}");
        }

        Assert.False(double.IsNaN(sourceEnded), "the coordinator did not log the end of the source");
        foreach (var r in results)
        {
            Assert.True(r.Exit == 0 && r.Sha == expected, $"fast viewer on h{r.Host.Index} exited with {r.Exit}, sha256 {(r.Sha == expected ? "equal to" : "different from")} the source's");
            // At the live rate: the whole stream written soon after the source ended (generous for
            // a loaded machine; on main the eight finished ~100 s late or not at all).
            Assert.False(double.IsNaN(r.DoneAfterSource), $"fast viewer on h{r.Host.Index} did not log 'stream complete'");
            Assert.True(r.DoneAfterSource < 10, $"fast viewer on h{r.Host.Index} wrote its last byte {r.DoneAfterSource:0.0} s after the source ended");
        }
        Assert.False(double.IsNaN(demotedAfter), "the coordinator never demoted the slow viewer");
        Assert.Equal(1, slowExit);
        Assert.True(figures.Success, $"the slow viewer's error line: {error}");
        Assert.InRange(BelowRateMessage.DownloadOf(figures), 0.1, 2.0);   // tbf 1 Mbit/s
        Assert.InRange(BelowRateMessage.StreamOf(figures), 12, 20);     // 16.8 Mbit/s
        Assert.Equal(0, coordinatorExit);
    }

    /// <summary>
    /// Seconds from <paramref name="since"/> to <paramref name="node"/>'s first log line that
    /// contains <paramref name="text"/>, by that line's own timestamp; NaN when there is none.
    /// </summary>
    private static double Logged(FileOutProcess node, string text, DateTime since) =>
        node.StderrLines.FirstOrDefault(l => l.Contains(text, StringComparison.Ordinal)) is { } line ? LoggedAfter(line, since) ?? double.NaN : double.NaN;

    /// <summary>
    /// Seconds from <paramref name="since"/> (this machine's local clock) to the time a CLI log line
    /// starts with ("HH:mm:ss.fff", the same clock), or null when the line has no such time.
    /// </summary>
    private static double? LoggedAfter(string line, DateTime since)
    {
        if (line.Length < 12 || !TimeSpan.TryParseExact(line[..12], @"hh\:mm\:ss\.fff", CultureInfo.InvariantCulture, out var timeOfDay)) return null;
        var logged = since.Date + timeOfDay;
        if (logged < since - TimeSpan.FromHours(12)) logged += TimeSpan.FromDays(1);
        return (logged - since).TotalSeconds;
    }
}

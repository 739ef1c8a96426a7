using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// A host cut off the network for 15 s in the middle of a live stream, with the real CLI on seven
/// hosts (network namespaces behind a router, <see cref="NetnsHosts"/>): the coordinator
/// (<c>-l [::]:1234 -s 3</c>, striped) and six viewers, a 2 Mbit/s source. The cut is the
/// host's own <c>eth0</c> going down, so that host hears nothing and reaches nobody. Every viewer
/// is healthy: none may be stopped as too slow, and each writes the source's exact bytes and
/// exits 0. Needs root and iproute2.
/// </summary>
[Collection(NetnsCollection.Name)]
public sealed class PartitionNetnsTests(ITestOutputHelper output)
{
    private const int Rate = 250_000;              // 2 Mbit/s
    private const int Seconds = 40;
    private const int Piece = 25_000;              // 0.1 s of stream
    private static readonly TimeSpan CutAt = TimeSpan.FromSeconds(8);
    private static readonly TimeSpan CutFor = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(180);
    private const int Viewers = 6;

    /// <summary>
    /// The coordinator's host cut off. Found in an acceptance run: 3 s into the cut the coordinator
    /// found the three peers it serves directly slow (their queues there grew: nothing went out),
    /// at 5 s it logged that most of its links were silent at once (event 8002: more likely itself
    /// stalled), yet at 8 s it demoted one of them and at 11 s stopped it (event 906) with "your
    /// download is below the stream rate", and that viewer exited 1 saying it had received 2.0
    /// Mbit/s at best: the whole stream's rate. The rule that lets a leaf be when many are behind
    /// at once needs 3 other peers found slow; there were 2. <c>--upload 1</c> makes that so here
    /// (one slot per stripe: three peers served by the coordinator; with the default 4/3 it served
    /// four, and the other three found slow let each be). Before the fix (with the stall rule that
    /// keeps the links open, event 8002 "6 of 6"): peer 1 demoted 2.4 s into the cut, stopped 5 s
    /// later, and the viewer on h2 exited 1 after 2,000,000 bytes with "this peer received 2.0
    /// Mbit/s at best". Now nobody is found slow.
    /// </summary>
    [Fact]
    public Task No_viewer_is_stopped_as_too_slow_while_the_coordinators_host_is_cut_off() => RunAsync(cutRelay: false);

    /// <summary>
    /// A relay's host cut off (the first viewer, a stripe's home peer under the coordinator): its
    /// children and its parent go on, and it comes back. Nobody is stopped as too slow, the relay
    /// included, and everyone writes the source's exact bytes.
    /// </summary>
    [Fact]
    public Task No_viewer_is_stopped_as_too_slow_while_a_relays_host_is_cut_off() => RunAsync(cutRelay: true);

    private async Task RunAsync(bool cutRelay)
    {
        if (RequiresTool.Missing(output, NetnsHosts.Unavailable())) return;
        var (prefix, network) = NetnsHosts.Own("ss-cut-", 243);
        await using var net = NetnsHosts.Create(Viewers + 1, output, prefix, network);
        string dir = Directory.CreateTempSubdirectory("ss-cut-").FullName;
        try
        {
            await RunAsync(net, dir, cutRelay);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private async Task RunAsync(NetnsHosts net, string dir, bool cutRelay)
    {
        var origin = net.Hosts[0];
        var coordinator = net.StartToFiles(origin, dir, "coordinator", "coordinator", "-l", "[::]:1234", "-s", "3", "--upload", "1",
            "--min-peers", Viewers.ToString(CultureInfo.InvariantCulture), "-v");
        await coordinator.WaitForLogAsync("coordinator listening on", Generous);
        string join = $"{origin.Address}:1234";
        var viewers = new List<(NetnsHost Host, FileOutProcess Cli)>();
        // One at a time, so that the first viewer is a home peer under the coordinator (it relays).
        foreach (var host in net.Hosts.Skip(1))
        {
            var cli = net.StartToFiles(host, dir, $"h{host.Index}", "peer", "-c", join, "-l", "0.0.0.0:1235", "-v");
            await cli.WaitForLogAsync("joined as peer", Generous);
            viewers.Add((host, cli));
        }
        await coordinator.WaitForLogAsync(@"\[1653\] streaming", Generous);
        var cut = cutRelay ? net.Hosts[1] : origin;

        // A live source, 2 Mbit/s by the wall clock; the cut host's link goes down CutAt into it
        // and comes back CutFor later, whatever the overlay does meanwhile.
        var source = new byte[Rate * Seconds];
        new Random(243).NextBytes(source);
        long start = 0;
        bool down = false, restored = false;
        for (int i = 0; i < source.Length / Piece; i++)
        {
            var due = TimeSpan.FromSeconds((double)i * Piece / Rate);
            var now = Stopwatch.GetElapsedTime(start);
            if (i > 0 && due > now) await Task.Delay(due - now);
            if (!down && due >= CutAt)
            {
                net.Disconnect(cut);
                down = true;
            }
            if (!restored && due >= CutAt + CutFor)
            {
                net.Reconnect(cut);
                restored = true;
            }
            try
            {
                await coordinator.StandardInput.WriteAsync(source.AsMemory(i * Piece, Piece)).AsTask().WaitAsync(Generous);
                await coordinator.StandardInput.FlushAsync().WaitAsync(Generous);
                if (i == 0) start = Stopwatch.GetTimestamp();
            }
            catch (TimeoutException)
            {
                output.WriteLine($"--- coordinator:\n{coordinator.Stderr}");
                throw new TimeoutException($"the coordinator did not read its stdin for {Generous.TotalSeconds:0} s after {i * Piece} bytes");
            }
        }
        coordinator.StandardInput.Close();

        string expected = Convert.ToHexStringLower(SHA256.HashData(source));
        var results = new List<(NetnsHost Host, int Exit, string Sha, long Bytes, string[] TooSlow, FileOutProcess Cli)>();
        foreach (var (host, cli) in viewers)
        {
            int exit = await cli.WaitForExitAsync(Generous);
            string sha;
            await using (var written = File.OpenRead(cli.StdoutPath)) sha = Convert.ToHexStringLower(await SHA256.HashDataAsync(written));
            var tooSlow = cli.StderrLines.Where(l => l.Contains("below the stream rate", StringComparison.Ordinal) || l.Contains("too slow", StringComparison.Ordinal)).ToArray();
            results.Add((host, exit, sha, cli.StdoutLength, tooSlow, cli));
        }
        int coordinatorExit = await coordinator.WaitForExitAsync(Generous);
        var verdicts = coordinator.StderrLines.Where(l => l.Contains("[900]", StringComparison.Ordinal) || l.Contains("[902]", StringComparison.Ordinal)
            || l.Contains("[906]", StringComparison.Ordinal) || l.Contains("[8002]", StringComparison.Ordinal)).ToList();
        output.WriteLine($"cut: h{cut.Index} ({(cutRelay ? "the first viewer" : "the coordinator")}), {CutAt.TotalSeconds:0} s into the stream for {CutFor.TotalSeconds:0} s");
        foreach (var line in verdicts) output.WriteLine($"coordinator: {line}");
        foreach (var r in results)
            output.WriteLine($"h{r.Host.Index} {r.Host.Address}: exit {r.Exit}, {r.Bytes} bytes, sha256 {(r.Sha == expected ? "= source" : "DIFFERS")}{(r.TooSlow.Length == 0 ? "" : $"; {r.TooSlow[^1]}")}");
        if (results.Any(r => r.Exit != 0 || r.Sha != expected || r.TooSlow.Length > 0) || coordinatorExit != 0 || Environment.GetEnvironmentVariable("SHARDSTREAM_TEST_LOG") == "1")
        {
            output.WriteLine($"--- coordinator (exit {coordinatorExit}):\n{coordinator.Stderr}");
            foreach (var r in results.Where(r => r.Exit != 0 || r.Sha != expected || r.TooSlow.Length > 0 || (cutRelay && r.Host == cut)))
                output.WriteLine($"--- h{r.Host.Index}:\n{r.Cli.Stderr}");
        }

        foreach (var r in results)
        {
            Assert.True(r.TooSlow.Length == 0, $"viewer on h{r.Host.Index} was stopped as too slow: {string.Join(" | ", r.TooSlow)}");
            Assert.True(r.Exit == 0, $"viewer on h{r.Host.Index} exited with {r.Exit}; its last log line: {r.Cli.StderrLines.LastOrDefault()}");
            Assert.True(r.Sha == expected, $"viewer on h{r.Host.Index} wrote {r.Bytes} bytes, not the source's {source.Length}");
        }
        Assert.DoesNotContain(coordinator.StderrLines, l => l.Contains("[906]", StringComparison.Ordinal));
        Assert.Equal(0, coordinatorExit);
    }
}

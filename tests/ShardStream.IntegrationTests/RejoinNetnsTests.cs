using System.Diagnostics;
using System.Security.Cryptography;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// A coordinator restarted mid-stream, with the real CLI on four hosts (network namespaces, see
/// <see cref="NetnsHosts"/>): the viewers on the other hosts join the new coordinator by
/// themselves and write its stream after the old one. Needs root and iproute2.
/// </summary>
[Collection(BesideCliCollection.Name)]
public sealed class RejoinNetnsTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(180);

    /// <summary>
    /// The coordinator on h1 (<c>--key FILE</c>, so a restart keeps the stream's address), three
    /// viewers on h2..h4 started as the README says, with <c>--stream ADDRESS</c>. After the first
    /// part of the source, the coordinator is killed (SIGKILL) and started again with the same key
    /// file; the viewers rejoin it within their rejoin time, log that a new run started (which
    /// offset of the old run they stopped at, which offset of the new run they go on from), and
    /// end with exit 0 when the new run ends. Each viewer's output is the old run's bytes followed
    /// by the new run's: what a viewer saw live, with the cut logged.
    /// </summary>
    [Fact]
    public async Task Viewers_on_other_hosts_rejoin_a_coordinator_restarted_mid_stream_and_write_both_runs()
    {
        if (RequiresTool.Missing(output, NetnsHosts.Unavailable())) return;
        var (prefix, network) = NetnsHosts.Own("ss-rejoin-", 81);
        await using var net = NetnsHosts.Create(4, output, prefix, network);
        var keyDir = Directory.CreateTempSubdirectory("ss-rejoin-key-");
        try
        {
            string key = Path.Combine(keyDir.FullName, "stream.key");
            var first = RandomBytes(2 * 1024 * 1024, 41);
            var second = RandomBytes(2 * 1024 * 1024, 42);
            var origin = net.Hosts[0];
            string join = $"{origin.Address}:1234";
            var clock = Stopwatch.StartNew();

            var coordinator = net.Start(origin, "coordinator", "-l", "0.0.0.0:1234", "-s", "2", "--key", key, "--min-peers", "3");
            await coordinator.WaitForListenAddressAsync(Generous);
            await WaitForLineAsync(coordinator, "stream address ");
            string stream = StreamAddressOf(coordinator);
            var viewers = net.Hosts.Skip(1).Select(h => (Host: h, Cli: net.Start(h, "peer", "-c", join, "-l", "0.0.0.0:1235", "--stream", stream))).ToList();
            foreach (var (_, cli) in viewers) await WaitForLineAsync(cli, "joined as peer");

            // The first run: every viewer writes all of it, then the coordinator's process dies.
            await coordinator.StandardInput.WriteAsync(first);
            await coordinator.StandardInput.FlushAsync();
            foreach (var (_, cli) in viewers) await WaitUntilAsync(() => cli.StdoutBytes >= first.Length, $"{cli.Pid} has the first run");
            coordinator.Kill();
            await coordinator.WaitForExitAsync(Generous);
            foreach (var (_, cli) in viewers) await WaitForLineAsync(cli, "lost the coordinator");

            // The same command again: the same key file, so the same stream address.
            var restarted = net.Start(origin, "coordinator", "-l", "0.0.0.0:1234", "-s", "2", "--key", key, "--min-peers", "3");
            await restarted.WaitForListenAddressAsync(Generous);
            await WaitForLineAsync(restarted, "stream address ");
            Assert.Equal(stream, StreamAddressOf(restarted));
            foreach (var (_, cli) in viewers) await WaitForLineAsync(cli, "joined again into the new run");
            await restarted.StandardInput.WriteAsync(second);
            restarted.StandardInput.Close();

            byte[] both = [.. first, .. second];
            string expected = Convert.ToHexStringLower(SHA256.HashData(both));
            var results = new List<(NetnsHost Host, int Exit, string Sha, CliProcess Cli)>();
            foreach (var (host, cli) in viewers)
            {
                var (exit, sha) = await cli.WaitForExitAsync(Generous);
                results.Add((host, exit, sha, cli));
            }
            var (restartedExit, _) = await restarted.WaitForExitAsync(Generous);
            foreach (var r in results)
                output.WriteLine($"h{r.Host.Index} {r.Host.Address}: exit {r.Exit}, {r.Cli.StdoutBytes} bytes, sha256 {(r.Sha == expected ? "= first run + second run" : "DIFFERS")}");
            output.WriteLine($"{clock.Elapsed.TotalSeconds:0.0} s with setup");
            if (results.Any(r => r.Exit != 0 || r.Sha != expected) || restartedExit != 0)
            {
                output.WriteLine($"--- first coordinator:\n{coordinator.Stderr}\n--- restarted coordinator (exit {restartedExit}):\n{restarted.Stderr}");
                foreach (var r in results) output.WriteLine($"--- h{r.Host.Index}:\n{r.Cli.Stderr}");
            }
            foreach (var r in results)
            {
                Assert.True(r.Exit == 0, $"viewer on h{r.Host.Index} exited with {r.Exit}; its last log line: {r.Cli.StderrLines.LastOrDefault()}");
                Assert.True(r.Sha == expected, $"viewer on h{r.Host.Index} wrote {r.Cli.StdoutBytes} bytes, not the first run's {first.Length} followed by the second run's {second.Length}");
                // The cut is said, with where each run was cut.
                Assert.Contains(r.Cli.StderrLines, l => l.Contains("does not continue the stream this peer was watching", StringComparison.Ordinal)
                    && l.Contains($"written up to its offset {first.Length} ", StringComparison.Ordinal) && l.Contains("written from its offset 0;", StringComparison.Ordinal));
            }
            Assert.Equal(0, restartedExit);
        }
        finally
        {
            keyDir.Delete(recursive: true);
        }
    }

    private static string StreamAddressOf(CliProcess coordinator)
    {
        const string marker = "stream address ";
        var line = coordinator.StderrLines.First(l => l.Contains(marker, StringComparison.Ordinal));
        return line[(line.IndexOf(marker, StringComparison.Ordinal) + marker.Length)..].Split(' ', ';', ',')[0];
    }

    private static async Task WaitForLineAsync(CliProcess cli, string text)
    {
        var deadline = DateTime.UtcNow + Generous;
        while (!cli.StderrLines.Any(l => l.Contains(text, StringComparison.Ordinal)))
        {
            if (cli.HasExited) throw new InvalidOperationException($"exited before logging '{text}':\n{cli.Stderr}");
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"no '{text}' within {Generous}:\n{cli.Stderr}");
            await Task.Delay(50);
        }
    }

    private static Task WaitUntilAsync(Func<bool> condition, string what) => Poll.UntilAsync(condition, Generous, what);

    private static byte[] RandomBytes(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}

using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The real CLI on several hosts (network namespaces behind a router, <see cref="NetnsHosts"/>),
/// typed as the README tells a user to. Needs root and iproute2; see <see cref="RequiresTool"/>.
/// </summary>
[Collection(NetnsCollection.Name)]
public sealed class MultiHostTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Generous = TimeSpan.FromSeconds(180);

    /// <summary>
    /// The README's cross-machine section: the coordinator on one host listening on 0.0.0.0:1234,
    /// and on each of five other hosts a viewer started as
    /// <c>shardstream peer -c COORDINATOR:1234 -l 0.0.0.0:1235</c>. Every viewer writes the source's
    /// exact bytes. (Before advertised addresses, a viewer placed under another viewer was sent to
    /// "0.0.0.0:1235", connected to itself, and never got its stream.)
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public async Task The_readme_cross_machine_recipe_delivers_the_exact_stream_on_six_hosts(int shards)
    {
        if (RequiresTool.Missing(output, NetnsHosts.Unavailable())) return;
        await using var net = NetnsHosts.Create(6, output);
        var clock = Stopwatch.StartNew();
        var source = RandomBytes(3 * 1024 * 1024, shards);

        var origin = net.Hosts[0];
        var coordinator = net.Start(origin, "coordinator", "-l", "0.0.0.0:1234", "-s", shards.ToString(CultureInfo.InvariantCulture));
        await coordinator.WaitForListenAddressAsync(Generous);
        var viewers = net.Hosts.Skip(1).Select(h => (Host: h, Cli: net.Start(h, "peer", "-c", $"{origin.Address}:1234", "-l", "0.0.0.0:1235"))).ToList();
        await StreamAsync(coordinator, viewers.Select(v => v.Cli).ToList(), source);

        await AssertEveryViewerWroteTheSourceAsync(coordinator, viewers, source);
        output.WriteLine($"K={shards}: 5 viewers on 5 hosts, {source.Length} bytes each, {clock.Elapsed.TotalSeconds:0.0} s with setup");
    }

    /// <summary>Waits until every viewer has joined (so that all start at offset 0), then feeds the source to the coordinator's stdin.</summary>
    private static async Task StreamAsync(CliProcess coordinator, List<CliProcess> viewers, byte[] source)
    {
        foreach (var viewer in viewers) await WaitForLineAsync(viewer, "joined as peer");
        await coordinator.StandardInput.WriteAsync(source);
        coordinator.StandardInput.Close();
    }

    private async Task AssertEveryViewerWroteTheSourceAsync(CliProcess coordinator, List<(NetnsHost Host, CliProcess Cli)> viewers, byte[] source)
    {
        string expected = Convert.ToHexStringLower(SHA256.HashData(source));
        var results = new List<(NetnsHost Host, int Exit, string Sha, CliProcess Cli)>();
        foreach (var (host, cli) in viewers)
        {
            var (exit, sha) = await cli.WaitForExitAsync(Generous);
            results.Add((host, exit, sha, cli));
        }
        var (coordinatorExit, _) = await coordinator.WaitForExitAsync(Generous);
        foreach (var r in results)
            output.WriteLine($"h{r.Host.Index} {r.Host.Address}: exit {r.Exit}, {r.Cli.StdoutBytes} bytes, sha256 {(r.Sha == expected ? "= source" : "DIFFERS")}");
        var bad = results.Where(r => r.Exit != 0 || r.Sha != expected).ToList();
        if (bad.Count > 0 || coordinatorExit != 0)
        {
            output.WriteLine($"--- coordinator (exit {coordinatorExit}):\n{coordinator.Stderr}");
            foreach (var r in bad) output.WriteLine($"--- h{r.Host.Index} {r.Host.Address}:\n{r.Cli.Stderr}");
        }
        foreach (var r in bad)
            Assert.Fail($"viewer on h{r.Host.Index} ({r.Host.Address}) exited with {r.Exit} after {r.Cli.StdoutBytes} of {source.Length} bytes, sha256 {(r.Sha == expected ? "equal to" : "different from")} the source's; its last log line: {r.Cli.StderrLines.LastOrDefault()}");
        Assert.Equal(0, coordinatorExit);
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

    private static byte[] RandomBytes(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}

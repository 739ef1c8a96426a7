using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The real CLI on several hosts (network namespaces behind a router, <see cref="NetnsHosts"/>),
/// typed as the README tells a user to. Needs root and iproute2; see <see cref="RequiresTool"/>.
/// </summary>
[Collection(BesideCliCollection.Name)]
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

    /// <summary>
    /// Two viewers others cannot connect to, on 6 hosts (K=1: the binary tree, where the first
    /// viewers get children at once). h2 is behind a firewall that lets only the coordinator in:
    /// it reaches everyone, the coordinator sees it at an address only the coordinator can reach,
    /// so the dial-back probe succeeds. With latency-aware placement (the CLI's default) the next
    /// joiners are asked to measure h2, cannot connect to it within the measuring round (1 s) and
    /// say so; children placed under it cannot attach and are re-placed; two such peers make h2 a
    /// leaf. (Before the round's limit and the reports, every joiner waited ~10 s for h2 and h2 was
    /// not made a leaf within 3 min: seen failing in this test.) h3 was started without <c>-l</c>, so
    /// it listens on 127.0.0.1 only: the probe fails, it is placed as a leaf and told how to fix
    /// it. Every viewer, those two included, writes the source's exact bytes.
    /// </summary>
    [Fact]
    public async Task Viewers_others_cannot_connect_to_are_made_leaves_and_everyone_gets_the_exact_stream()
    {
        if (RequiresTool.Missing(output, NetnsHosts.Unavailable())) return;
        await using var net = NetnsHosts.Create(6, output);
        var source = RandomBytes(3 * 1024 * 1024, 11);
        var origin = net.Hosts[0];
        string firewalled = net.ReachableOnlyFrom(net.Hosts[1], origin);

        var coordinator = net.Start(origin, "coordinator", "-l", "0.0.0.0:1234");
        await coordinator.WaitForListenAddressAsync(Generous);
        string join = $"{origin.Address}:1234";
        var viewers = new List<(NetnsHost Host, CliProcess Cli)>
        {
            (net.Hosts[1], net.Start(net.Hosts[1], "peer", "-c", join, "-l", "0.0.0.0:1235")),
        };
        // In this order: the firewalled viewer first, so that the next joiners are placed under it.
        await WaitForLineAsync(viewers[0].Cli, "joined as peer");
        viewers.Add((net.Hosts[2], net.Start(net.Hosts[2], "peer", "-c", join)));
        await WaitForLineAsync(viewers[1].Cli, "joined as peer");
        foreach (var host in net.Hosts.Skip(3))
        {
            viewers.Add((host, net.Start(host, "peer", "-c", join, "-l", "0.0.0.0:1235")));
            await WaitForLineAsync(viewers[^1].Cli, "joined as peer");
        }
        // A live stream: the first half now, then nothing until the coordinator has made h2 a
        // leaf (its children each fail to attach twice, 5 s a time), then the rest.
        await coordinator.StandardInput.WriteAsync(source.AsMemory(0, source.Length / 2));
        await coordinator.StandardInput.FlushAsync();
        await WaitForLineAsync(coordinator, "it is made a leaf");
        await coordinator.StandardInput.WriteAsync(source.AsMemory(source.Length / 2));
        coordinator.StandardInput.Close();

        await AssertEveryViewerWroteTheSourceAsync(coordinator, viewers, source);
        string firewalledId = IdOf(viewers[0].Cli), loopbackId = IdOf(viewers[1].Cli);
        Assert.Contains(coordinator.StderrLines, l => l.Contains($"cannot connect to peer {firewalledId} ({firewalled}:1235): it is made a leaf", StringComparison.Ordinal));
        Assert.Contains(viewers[0].Cli.StderrLines, l => l.Contains("this peer relays nothing", StringComparison.Ordinal)
                                                         && l.Contains("forward TCP port 1235 on your router or firewall", StringComparison.Ordinal));
        Assert.Contains(coordinator.StderrLines, l => l.Contains($"peer {loopbackId} (127.0.0.1:", StringComparison.Ordinal) && l.Contains("does not accept connections", StringComparison.Ordinal));
        Assert.Contains(viewers[1].Cli.StderrLines, l => l.Contains("this peer relays nothing: the coordinator could not connect to it at 127.0.0.1:", StringComparison.Ordinal)
                                                         && l.Contains("run it with -l 0.0.0.0:PORT", StringComparison.Ordinal));
    }

    /// <summary>
    /// "More peers join through any node", also through a viewer on the coordinator's own machine
    /// that reached it as <c>127.0.0.1:1234</c>: a viewer on another host that starts with
    /// <c>-c</c> that viewer is sent on to the coordinator at the address it reached the viewer at
    /// (Before, it was sent to 127.0.0.1:1234, its own machine, and exited 1: "cannot connect to
    /// 127.0.0.1:1234: Connection refused".)
    /// </summary>
    [Fact]
    public async Task A_viewer_that_reached_its_coordinator_on_loopback_redirects_other_hosts_to_a_reachable_address()
    {
        if (RequiresTool.Missing(output, NetnsHosts.Unavailable())) return;
        await using var net = NetnsHosts.Create(2, output);
        var source = RandomBytes(1024 * 1024, 12);
        var origin = net.Hosts[0];
        var coordinator = net.Start(origin, "coordinator", "-l", "0.0.0.0:1234");
        await coordinator.WaitForListenAddressAsync(Generous);
        var viewers = new List<(NetnsHost Host, CliProcess Cli)> { (origin, net.Start(origin, "peer", "-c", "127.0.0.1:1234", "-l", "0.0.0.0:1235")) };
        await WaitForLineAsync(viewers[0].Cli, "joined as peer");
        viewers.Add((net.Hosts[1], net.Start(net.Hosts[1], "peer", "-c", $"{origin.Address}:1235", "-l", "0.0.0.0:1235")));
        await StreamAsync(coordinator, viewers.Select(v => v.Cli).ToList(), source);

        await AssertEveryViewerWroteTheSourceAsync(coordinator, viewers, source);
        Assert.Contains(viewers[1].Cli.StderrLines, l => l.Contains($"{origin.Address}:1235 redirects the join to {origin.Address}:1234", StringComparison.Ordinal));
    }

    /// <summary>
    /// A viewer on the coordinator's machine that joined it as <c>127.0.0.1:1234</c> with
    /// <c>-l 0.0.0.0:1235</c> is listed by the coordinator at <c>127.0.0.1:1235</c>, the address its
    /// connection came from. With the coordinator's upload taken by that viewer (<c>--upload 1</c>, one
    /// child), viewers on other hosts are placed under it and must reach it at the address they
    /// reached its machine at, not at their own loopback. (Before, each got "127.0.0.1:1235" as its
    /// parent, connected to its own listener, was refused there ("the admission ticket is for node
    /// 1, this is node 2") and moved back and forth until the coordinator took that edge out.)
    /// </summary>
    [Fact]
    public async Task Viewers_on_other_hosts_reach_a_parent_the_coordinator_knows_by_loopback()
    {
        if (RequiresTool.Missing(output, NetnsHosts.Unavailable())) return;
        await using var net = NetnsHosts.Create(3, output);
        var source = RandomBytes(1024 * 1024, 13);
        var origin = net.Hosts[0];
        var coordinator = net.Start(origin, "coordinator", "-l", "0.0.0.0:1234", "--upload", "1");
        await coordinator.WaitForListenAddressAsync(Generous);
        var viewers = new List<(NetnsHost Host, CliProcess Cli)> { (origin, net.Start(origin, "peer", "-c", "127.0.0.1:1234", "-l", "0.0.0.0:1235")) };
        await WaitForLineAsync(viewers[0].Cli, "joined as peer");
        foreach (var host in net.Hosts.Skip(1))
        {
            viewers.Add((host, net.Start(host, "peer", "-c", $"{origin.Address}:1234", "-l", "0.0.0.0:1235")));
            await WaitForLineAsync(viewers[^1].Cli, "joined as peer");
        }
        await StreamAsync(coordinator, viewers.Select(v => v.Cli).ToList(), source);

        await AssertEveryViewerWroteTheSourceAsync(coordinator, viewers, source);
        // The first viewer from another host is placed under the one on the coordinator's machine (the
        // coordinator has room for one child) and reaches it there; nobody tries its own loopback.
        Assert.Contains(viewers[1].Cli.StderrLines, l => l.Contains($"joined as peer 2 at offset 0; 1 shard(s): shard 0 from peer 1 {origin.Address}:1235", StringComparison.Ordinal));
        foreach (var (host, cli) in viewers.Skip(1))
            Assert.DoesNotContain(cli.StderrLines, l => l.Contains("127.0.0.1:1235", StringComparison.Ordinal));
        Assert.DoesNotContain(coordinator.StderrLines, l => l.Contains("cannot connect to parent", StringComparison.Ordinal));
    }

    /// <summary>
    /// The same, with that viewer behind a NAT that forwards its port: it advertises the public
    /// address (<c>--advertise PUBLIC:1235</c>), and a viewer of another host that reached it at the
    /// private address the forward delivers to is sent on to the coordinator at the advertised host,
    /// which other machines reach, with the coordinator's port. Emulated with routes alone (no NAT
    /// here): h1 also has PUBLIC (its <see cref="NetnsHost.HiddenAddress"/>, routed to it by the
    /// router); h2 joins through h1's own address, as the forward delivers it, and a rule on h2
    /// makes that address's port 1234 unreachable from there, as a private address is from outside.
    /// (Before, h2 was sent to h1's own address, port 1234, and exited 1: "cannot connect".)
    /// </summary>
    [Fact]
    public async Task A_viewer_behind_a_nat_redirects_other_hosts_to_its_advertised_host()
    {
        if (RequiresTool.Missing(output, NetnsHosts.Unavailable())) return;
        await using var net = NetnsHosts.Create(2, output);
        var source = RandomBytes(1024 * 1024, 13);
        var (origin, outside) = (net.Hosts[0], net.Hosts[1]);
        string advertised = origin.HiddenAddress;
        net.Ip("-n", origin.Namespace, "addr", "add", $"{advertised}/32", "dev", "eth0");
        net.Ip("-n", net.Router, "route", "add", $"{advertised}/32", "via", origin.Address, "dev", origin.RouterInterface);
        net.Ip("-n", outside.Namespace, "rule", "add", "to", $"{origin.Address}/32", "ipproto", "tcp", "dport", "1234", "unreachable");
        var coordinator = net.Start(origin, "coordinator", "-l", "0.0.0.0:1234");
        await coordinator.WaitForListenAddressAsync(Generous);
        var viewers = new List<(NetnsHost Host, CliProcess Cli)> { (origin, net.Start(origin, "peer", "-c", "127.0.0.1:1234", "-l", "0.0.0.0:1235", "--advertise", $"{advertised}:1235")) };
        await WaitForLineAsync(viewers[0].Cli, "joined as peer");
        viewers.Add((outside, net.Start(outside, "peer", "-c", $"{origin.Address}:1235")));
        await StreamAsync(coordinator, viewers.Select(v => v.Cli).ToList(), source);

        await AssertEveryViewerWroteTheSourceAsync(coordinator, viewers, source);
        Assert.Contains(viewers[1].Cli.StderrLines, l => l.Contains($"{origin.Address}:1235 redirects the join to {advertised}:1234", StringComparison.Ordinal));
    }

    private static string IdOf(CliProcess viewer)
    {
        var line = viewer.StderrLines.First(l => l.Contains("joined as peer ", StringComparison.Ordinal));
        return line[(line.IndexOf("joined as peer ", StringComparison.Ordinal) + "joined as peer ".Length)..].Split(' ')[0];
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

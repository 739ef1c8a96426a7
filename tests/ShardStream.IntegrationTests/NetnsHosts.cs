using System.Globalization;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>One host of a <see cref="NetnsHosts"/> network: a namespace with one address.</summary>
/// <param name="Index">1-based; the host's subnet is 10.N.Index.0/24 (N = 81 unless the network was made with another).</param>
/// <param name="Namespace">The network namespace (<c>ip netns exec</c> name).</param>
/// <param name="Address">The host's address, 10.N.Index.2.</param>
/// <param name="Network">N, the second octet of every address of the network.</param>
internal sealed record NetnsHost(int Index, string Namespace, string Address, int Network = 81)
{
    /// <summary>The router's address on this host's link, the host's gateway: 10.N.Index.1.</summary>
    public string Gateway => $"10.{Network}.{Index}.1";

    /// <summary>The router's end of this host's link.</summary>
    public string RouterInterface => $"vh{Index}";

    /// <summary>A second address of the host that no route leads to unless a test adds one: 10.N.(100+Index).2.</summary>
    public string HiddenAddress => $"10.{Network}.{100 + Index}.2";
}

/// <summary>
/// N hosts, each a network namespace with its own address (10.81.i.2/24 on <c>eth0</c>), joined
/// through a router namespace that forwards between their subnets (10.81.i.1 on <c>vh{i}</c>): as
/// many machines on a routed network, each with its own IP. Nothing is configured in the root
/// namespace and no namespace has a route out, so no test traffic leaves the machine.
/// The real CLI runs on the hosts through <c>ip netns exec</c>.
/// Names are <c>ss-net-PID-HEX-r</c> and <c>…-h1</c>, <c>…-h2</c>, …: parallel runs never clash,
/// and namespaces left by a killed run (owner pid gone, no process inside) are removed by the next.
/// Needs root and iproute2 (<see cref="Unavailable"/> says why not).
/// </summary>
internal sealed class NetnsHosts : IAsyncDisposable
{
    public const string Prefix = "ss-net-";
    private readonly int _network;
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(30);
    private readonly ITestOutputHelper _output;
    private readonly List<string> _namespaces = [];
    private readonly List<IAsyncDisposable> _processes = [];

    private readonly string _name;

    private NetnsHosts(ITestOutputHelper output, string name, int network)
    {
        _output = output;
        _name = name;
        _network = network;
        Router = name + "-r";
    }

    /// <summary>The router namespace.</summary>
    public string Router { get; }

    public IReadOnlyList<NetnsHost> Hosts { get; private set; } = [];

    /// <summary>The CLI to run: <c>SHARDSTREAM_NETNS_CLI</c> when set (to try another build), else the one next to the tests.</summary>
    public static string CliDll => Environment.GetEnvironmentVariable("SHARDSTREAM_NETNS_CLI") is { Length: > 0 } dll ? dll : CliProcess.CliDll;

    /// <summary>
    /// Null when this machine can build namespaces; else why not. Found out once a process: the
    /// probe's namespace is named after the process, and two test classes that asked at the same
    /// moment made the same one, the second told "File exists" (a red CI run, ci302).
    /// </summary>
    public static string? Unavailable() => s_unavailable.Value;

    private static readonly Lazy<string?> s_unavailable = new(ProbeNamespaces);

    private static string? ProbeNamespaces()
    {
        if (RequiresTool.NotRoot() is { } notRoot) return notRoot;
        foreach (var tool in new[] { "ip", "sysctl" })
            if (RequiresTool.FindOnPath(tool) is null) return $"'{tool}' not on PATH";
        string probe = $"{Prefix}{Environment.ProcessId}-check";
        var add = RequiresTool.Run("ip", ["netns", "add", probe], CommandTimeout);
        RequiresTool.Run("ip", ["netns", "del", probe], CommandTimeout);
        return add.ExitCode == 0 ? null : $"cannot create a network namespace: {add.Stderr.Trim()}";
    }

    /// <summary>
    /// Builds <paramref name="count"/> hosts (at most 99) and the router, named <see cref="Prefix"/>
    /// in 10.81.0.0/16, or as <c>SHARDSTREAM_NETNS_PREFIX</c> and <c>SHARDSTREAM_NETNS_NETWORK</c>
    /// say (so that two people testing on one machine can keep their namespaces apart).
    /// </summary>
    public static NetnsHosts Create(int count, ITestOutputHelper output)
    {
        var (prefix, network) = Own(Prefix, 81);
        return Create(count, output, prefix, network);
    }

    /// <summary>
    /// <paramref name="prefix"/> and <paramref name="network"/>, unless <c>SHARDSTREAM_NETNS_PREFIX</c>
    /// and <c>SHARDSTREAM_NETNS_NETWORK</c> say otherwise (each on its own).
    /// </summary>
    public static (string Prefix, int Network) Own(string prefix, int network) =>
        (Environment.GetEnvironmentVariable("SHARDSTREAM_NETNS_PREFIX") is { Length: > 0 } ownPrefix ? ownPrefix : prefix,
         int.TryParse(Environment.GetEnvironmentVariable("SHARDSTREAM_NETNS_NETWORK"), NumberStyles.None, CultureInfo.InvariantCulture, out int ownNetwork) ? ownNetwork : network);

    /// <summary>
    /// Builds <paramref name="count"/> hosts (at most 99) and the router, with namespace names
    /// starting <paramref name="prefix"/> and addresses in 10.<paramref name="network"/>.0.0/16,
    /// for a test that must not share names or addresses with the others.
    /// </summary>
    public static NetnsHosts Create(int count, ITestOutputHelper output, string prefix, int network)
    {
        if (count is < 1 or > 99) throw new ArgumentOutOfRangeException(nameof(count));
        if (network is < 1 or > 254) throw new ArgumentOutOfRangeException(nameof(network));
        RemoveStale(output, prefix);
        var hosts = new NetnsHosts(output, $"{prefix}{Environment.ProcessId}-{Random.Shared.Next(0x10000):x4}", network);
        try
        {
            hosts.Build(count);
        }
        catch
        {
            hosts.DeleteNamespaces();
            throw;
        }
        return hosts;
    }

    private void Build(int count)
    {
        AddNamespace(Router);
        Ip("netns", "exec", Router, "sysctl", "-qw", "net.ipv4.ip_forward=1");
        // Routes may be asymmetric (ReachableOnlyFrom): no reverse-path filtering.
        Ip("netns", "exec", Router, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0");
        var hosts = new List<NetnsHost>();
        for (int i = 1; i <= count; i++)
        {
            var host = new NetnsHost(i, $"{_name}-h{i}", $"10.{_network}.{i}.2", _network);
            AddNamespace(host.Namespace);
            Ip("-n", Router, "link", "add", host.RouterInterface, "type", "veth", "peer", "name", "eth0", "netns", host.Namespace);
            Ip("-n", Router, "addr", "add", $"{host.Gateway}/24", "dev", host.RouterInterface);
            Ip("-n", Router, "link", "set", host.RouterInterface, "up");
            Ip("-n", host.Namespace, "addr", "add", $"{host.Address}/24", "dev", "eth0");
            Ip("-n", host.Namespace, "link", "set", "eth0", "up");
            Ip("-n", host.Namespace, "route", "add", $"10.{_network}.0.0/16", "via", host.Gateway);
            hosts.Add(host);
        }
        Hosts = hosts;
        _output.WriteLine($"netns: {count} hosts {_name}-h1..h{count} at 10.{_network}.1.2..10.{_network}.{count}.2, router {Router}");
    }

    /// <summary>
    /// Makes <paramref name="host"/> reachable only from <paramref name="from"/>, the way a
    /// firewall that lets one address in would, with routes alone: the host gets its
    /// <see cref="NetnsHost.HiddenAddress"/> and uses it as the source address towards
    /// <paramref name="from"/> (so <paramref name="from"/> sees it there); the router forwards to
    /// that address only packets that come from <paramref name="from"/> (a rule and a table of its
    /// own) and silently drops every other packet for it (a blackhole route), as a NAT drops
    /// unsolicited connections. The host still reaches everyone from its own address.
    /// </summary>
    public string ReachableOnlyFrom(NetnsHost host, NetnsHost from)
    {
        string hidden = host.HiddenAddress;
        string table = (100 + host.Index).ToString(CultureInfo.InvariantCulture);
        Ip("-n", host.Namespace, "addr", "add", $"{hidden}/32", "dev", "eth0");
        Ip("-n", host.Namespace, "route", "add", $"{from.Address}/32", "via", host.Gateway, "src", hidden);
        Ip("-n", Router, "route", "add", "blackhole", $"{hidden}/32");
        Ip("-n", Router, "route", "add", $"{hidden}/32", "via", host.Address, "dev", host.RouterInterface, "table", table);
        Ip("-n", Router, "rule", "add", "from", $"{from.Address}/32", "lookup", table);
        _output.WriteLine($"netns: h{host.Index} is reached at {hidden} from h{from.Index} only; everyone else's packets to it are dropped");
        return hidden;
    }

    /// <summary>
    /// Cuts <paramref name="host"/> off the network, as a cable pulled: its <c>eth0</c> down, inside
    /// its namespace. The kernel drops the routes through that link with it (the host's route to
    /// the others too), so <see cref="Reconnect"/> puts it back.
    /// </summary>
    public void Disconnect(NetnsHost host)
    {
        Ip("-n", host.Namespace, "link", "set", "eth0", "down");
        _output.WriteLine($"netns: h{host.Index} cut off (eth0 down)");
    }

    /// <summary>Undoes <see cref="Disconnect"/>: <c>eth0</c> up again and the host's route to the others back.</summary>
    public void Reconnect(NetnsHost host)
    {
        Ip("-n", host.Namespace, "link", "set", "eth0", "up");
        Ip("-n", host.Namespace, "route", "replace", $"10.{_network}.0.0/16", "via", host.Gateway);
        _output.WriteLine($"netns: h{host.Index} connected again (eth0 up, its route back)");
    }

    /// <summary>Runs <c>ip ARGS</c>; throws with its stderr when it fails.</summary>
    public void Ip(params string[] args)
    {
        var run = RequiresTool.Run("ip", args, CommandTimeout);
        if (run.ExitCode != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)} failed ({run.ExitCode}): {run.Stderr.Trim()}");
    }

    private void AddNamespace(string name)
    {
        Ip("netns", "add", name);
        _namespaces.Add(name);
        Ip("-n", name, "link", "set", "lo", "up");
    }

    /// <summary>Starts the CLI on <paramref name="host"/>; it is killed at the latest when this network is disposed.</summary>
    public CliProcess Start(NetnsHost host, params string[] args)
    {
        var process = CliProcess.StartIn(host.Namespace, CliDll, args);
        lock (_processes) _processes.Add(process);
        _output.WriteLine($"h{host.Index} ({host.Address}) $ shardstream {string.Join(' ', args)}");
        return process;
    }

    /// <summary>
    /// Starts the CLI on <paramref name="host"/> with its stdout and stderr written to files in
    /// <paramref name="dir"/> named after <paramref name="name"/> (<see cref="FileOutProcess"/>); it
    /// is killed at the latest when this network is disposed.
    /// </summary>
    public FileOutProcess StartToFiles(NetnsHost host, string dir, string name, params string[] args)
    {
        var process = FileOutProcess.StartIn(host.Namespace, CliDll, dir, name, args);
        lock (_processes) _processes.Add(process);
        _output.WriteLine($"h{host.Index} ({host.Address}) $ shardstream {string.Join(' ', args)} > {name}.out 2> {name}.err");
        return process;
    }

    public async ValueTask DisposeAsync()
    {
        List<IAsyncDisposable> processes;
        lock (_processes) processes = [.. _processes];
        foreach (var p in processes) await p.DisposeAsync();
        DeleteNamespaces();
    }

    private void DeleteNamespaces()
    {
        foreach (var ns in Enumerable.Reverse(_namespaces))
        {
            KillInside(ns);
            RequiresTool.Run("ip", ["netns", "del", ns], CommandTimeout);
        }
        _namespaces.Clear();
    }

    /// <summary>Kills, by pid, whatever still runs in a namespace of ours.</summary>
    private static void KillInside(string ns)
    {
        var pids = RequiresTool.Run("ip", ["netns", "pids", ns], CommandTimeout);
        foreach (var line in pids.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            if (int.TryParse(line, NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                RequiresTool.Run("kill", ["-9", pid.ToString(CultureInfo.InvariantCulture)], CommandTimeout);
    }

    /// <summary>Deletes namespaces of ours whose creating process is gone and that hold no process.</summary>
    private static void RemoveStale(ITestOutputHelper output, string prefix)
    {
        var list = RequiresTool.Run("ip", ["netns", "list"], CommandTimeout);
        foreach (var line in list.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string name = line.Split(' ')[0];
            if (!name.StartsWith(prefix, StringComparison.Ordinal)) continue;
            var parts = name[prefix.Length..].Split('-');
            if (parts.Length < 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int owner) || Directory.Exists($"/proc/{owner}")) continue;
            if (RequiresTool.Run("ip", ["netns", "pids", name], CommandTimeout).Stdout.Trim().Length > 0) continue;
            RequiresTool.Run("ip", ["netns", "del", name], CommandTimeout);
            output.WriteLine($"netns: removed {name}, left behind by a run that was killed");
        }
    }
}

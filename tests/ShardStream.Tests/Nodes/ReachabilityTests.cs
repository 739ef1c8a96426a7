using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Peers that others cannot connect to: the coordinator's dial-back probe makes such a joiner a
/// leaf and tells it so; a parent its children cannot reach loses them to other parents and then
/// becomes a leaf. The stream stays intact for everyone, the unreachable peers included.
/// </summary>
public sealed class ReachabilityTests
{
    private static readonly TimeSpan Deadline = Overlay.Deadline;

    [Theory]
    [InlineData(1, false)]
    [InlineData(2, false)]
    [InlineData(4, false)]
    // Latency-aware: the dial-back starts at the joiner's landmark round, and its placing Join takes the result.
    [InlineData(2, true)]
    public async Task A_joiner_nobody_can_connect_to_is_placed_as_a_leaf_and_told_why(int shards, bool latencyAware)
    {
        var network = new VirtualNetwork();
        var coordinatorLogs = new LogCapture();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ShardCount = shards, MinPeers = 6, ListenAddress = "coord:1", LatencyAware = latencyAware }, network.Host("coord"), coordinatorLogs.Factory);
        await coordinator.StartAsync(CancellationToken.None);
        var peers = new List<(Peer Peer, MemoryStream Output)>();
        var hiddenLogs = new LogCapture();
        try
        {
            // The second joiner says it listens where nothing listens (a private address behind a NAT, say).
            for (int i = 1; i <= 6; i++)
            {
                bool hidden = i == 2;
                var options = new PeerOptions { JoinAddress = "coord:1", ListenAddress = $"p{i}:1", AdvertiseAddress = hidden ? "192.168.1.20:1235" : null };
                var peer = new Peer(options, network.Host($"p{i}"), hidden ? hiddenLogs.Factory : Overlay.Loggers);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);
                peers.Add((peer, new MemoryStream()));
            }
            int hiddenId = peers[1].Peer.Id;

            var snapshot = coordinator.Snapshot();
            Assert.Equal(0, snapshot.Nodes.Single(n => n.Id == hiddenId).Budget);
            Assert.DoesNotContain(snapshot.Nodes, n => n.Parents.Contains(hiddenId));
            await Overlay.WaitUntilAsync(() => coordinatorLogs.Has(LogLevel.Warning, $"peer {hiddenId} (192.168.1.20:1235) does not accept connections"), "the coordinator logs the failed probe");
            await Overlay.WaitUntilAsync(() => hiddenLogs.Has(LogLevel.Warning, "this peer relays nothing: the coordinator could not connect to it at 192.168.1.20:1235"), "the hidden peer is told");
            Assert.Contains(hiddenLogs.Lines, l => l.Message.Contains("--advertise HOST:PORT", StringComparison.Ordinal));

            await StreamAndCheckAsync(coordinator, peers, Overlay.RandomBytes(2_000_000, shards));
        }
        finally
        {
            foreach (var (peer, _) in peers) await peer.DisposeAsync();
        }
    }

    /// <summary>
    /// A joiner whose address accepts the probe's connection but whose process is too busy to
    /// answer the probe's hello in time (a fresh-clone CI run at load 90 saw honest loopback peers
    /// miss the 2.5 s, become leaves, and later joiners then refused for want of room) is reachable:
    /// it keeps its upload budget.
    /// </summary>
    [Fact]
    public async Task A_joiner_that_accepts_the_probe_but_answers_late_keeps_its_budget()
    {
        await using var overlay = await Overlay.StartAsync(shards: 2, heartbeatTimeout: TimeSpan.FromSeconds(1));
        // "busy:1" accepts connections and never answers: a process that the machine does not run in time.
        await using var busy = await overlay.Network.Host("busy").ListenAsync("busy:1", CancellationToken.None);
        var accepted = new List<ShardStream.Transport.IConnection>();
        var accepting = Task.Run(async () =>
        {
            while (await busy.AcceptAsync(CancellationToken.None) is { } c) accepted.Add(c);
        });

        var connection = await overlay.Network.Host("busy").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
        new ShardStream.Wire.Hello(ShardStream.Wire.Protocol.MinVersion, ShardStream.Wire.Protocol.Version, ShardStream.Wire.HelloRole.Join, 5, 200, [], "busy:1",
            new byte[ShardStream.Wire.Protocol.NonceLength]).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.Any(n => n.Address == "busy:1"), "the busy joiner is placed");

        Assert.NotEmpty(accepted); // the probe connected
        Assert.Equal(4, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Address == "busy:1").Budget); // 2x of K = 2, not a leaf's 0
        connection.Abort();
    }

    /// <summary>
    /// The coordinator can connect to p1, the other viewers cannot (a firewall that lets only the
    /// coordinator in). Binary tree: p1 is placed under the coordinator and given children, who
    /// cannot attach, twice; each is re-placed under another parent, and p1 becomes a leaf.
    /// </summary>
    [Fact]
    public async Task A_parent_its_children_cannot_reach_loses_them_to_other_parents_and_becomes_a_leaf()
    {
        var network = new VirtualNetwork();
        var coordinatorLogs = new LogCapture();
        await using var coordinator = new Coordinator(new CoordinatorOptions { MinPeers = 6, ListenAddress = "coord:1" }, network.Host("coord"), coordinatorLogs.Factory);
        await coordinator.StartAsync(CancellationToken.None);
        for (int i = 2; i <= 6; i++) network.Block($"p{i}", "p1");
        var peers = new List<(Peer Peer, MemoryStream Output)>();
        var p1Logs = new LogCapture();
        try
        {
            for (int i = 1; i <= 6; i++)
            {
                var peer = new Peer(new PeerOptions { JoinAddress = "coord:1", ListenAddress = $"p{i}:1" }, network.Host($"p{i}"), i == 1 ? p1Logs.Factory : Overlay.Loggers);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);
                peers.Add((peer, new MemoryStream()));
            }
            int p1 = peers[0].Peer.Id;
            var runs = peers.Select(p => Task.Run(() => p.Peer.RunAsync(p.Output, CancellationToken.None))).ToList();

            // Every viewer ends up with a parent in its shard that it can reach: p1 is nobody's parent and relays nothing.
            await Overlay.WaitUntilAsync(() => peers.All(p => p.Peer.ParentIds().All(id => id >= 0)) && coordinator.Snapshot().Nodes.Single(n => n.Id == p1).Budget == 0,
                "every peer has a parent and p1 is a leaf");
            Assert.DoesNotContain(coordinator.Snapshot().Nodes, n => n.Parents.Contains(p1));
            await Overlay.WaitUntilAsync(() => coordinatorLogs.Has(LogLevel.Warning, $"cannot connect to peer {p1}"), "the coordinator logs the demotion");
            await Overlay.WaitUntilAsync(() => p1Logs.Has(LogLevel.Warning, "this peer relays nothing"), "p1 is told");

            var data = Overlay.RandomBytes(2_000_000, 9);
            await coordinator.RunAsync(new MemoryStream(data), CancellationToken.None).WaitAsync(Deadline);
            await Task.WhenAll(runs).WaitAsync(Deadline);
            foreach (var (peer, output) in peers)
                Assert.True(data.AsSpan().SequenceEqual(output.ToArray()), $"peer {peer.Id} wrote {output.Length} bytes that differ from the {data.Length}-byte source");
        }
        finally
        {
            foreach (var (peer, _) in peers) await peer.DisposeAsync();
        }
    }

    /// <summary>
    /// The same firewall, with latency-aware placement (the CLI's default): p1 is reached by the
    /// coordinator only, and the other viewers' connects to it are dropped silently. Each joiner is
    /// asked to measure p1 (a landmark), gives up after the round's time
    /// (<see cref="PeerOptions.MeasureTimeout"/>, not the 5 s connect timeout) and reports it; two
    /// such reports make p1 a leaf, and it is no landmark any more. Every viewer writes the source.
    /// Before the round's time and the reports, each joiner waited the whole connect timeout for p1
    /// and p1 was never made a leaf (MultiHostTests, fresh-clone CI of 4159823).
    /// </summary>
    [Fact]
    public async Task With_latency_aware_placement_joiners_that_cannot_reach_a_landmark_report_it_and_it_becomes_a_leaf()
    {
        var network = new VirtualNetwork();
        var coordinatorLogs = new LogCapture();
        await using var coordinator = new Coordinator(new CoordinatorOptions { MinPeers = 6, ListenAddress = "coord:1", LatencyAware = true }, network.Host("coord"), coordinatorLogs.Factory);
        await coordinator.StartAsync(CancellationToken.None);
        for (int i = 2; i <= 6; i++) network.Block($"p{i}", "p1", silently: true);
        var peers = new List<(Peer Peer, MemoryStream Output)>();
        var p1Logs = new LogCapture();
        var p3Logs = new LogCapture();
        try
        {
            for (int i = 1; i <= 6; i++)
            {
                var logs = i switch { 1 => p1Logs.Factory, 3 => p3Logs.Factory, _ => Overlay.Loggers };
                var peer = new Peer(new PeerOptions { JoinAddress = "coord:1", ListenAddress = $"p{i}:1" }, network.Host($"p{i}"), logs);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);
                peers.Add((peer, new MemoryStream()));
            }
            int p1 = peers[0].Peer.Id;
            var runs = peers.Select(p => Task.Run(() => p.Peer.RunAsync(p.Output, CancellationToken.None))).ToList();

            Assert.True(p3Logs.Has(LogLevel.Debug, "landmark p1:1 not measured: cannot connect: no answer within 1 s"),
                "p3 gives up on p1 after the round's 1 s: " + string.Join(" | ", p3Logs.Lines.Select(l => l.Message)));
            await Overlay.WaitUntilAsync(() => coordinatorLogs.Has(LogLevel.Information, $"could not connect to peer {p1} (p1:1), one of the nodes it was asked to measure"), "the coordinator logs a joiner's report");
            await Overlay.WaitUntilAsync(() => peers.All(p => p.Peer.ParentIds().All(id => id >= 0)) && coordinator.Snapshot().Nodes.Single(n => n.Id == p1).Budget == 0,
                "every peer has a parent and p1 is a leaf");
            Assert.DoesNotContain(coordinator.Snapshot().Nodes, n => n.Parents.Contains(p1));
            await Overlay.WaitUntilAsync(() => coordinatorLogs.Has(LogLevel.Warning, $"cannot connect to peer {p1} (p1:1): it is made a leaf"), "the coordinator logs the demotion");
            await Overlay.WaitUntilAsync(() => p1Logs.Has(LogLevel.Warning, "this peer relays nothing"), "p1 is told");

            var data = Overlay.RandomBytes(2_000_000, 10);
            await coordinator.RunAsync(new MemoryStream(data), CancellationToken.None).WaitAsync(Deadline);
            await Task.WhenAll(runs).WaitAsync(Deadline);
            foreach (var (peer, output) in peers)
                Assert.True(data.AsSpan().SequenceEqual(output.ToArray()), $"peer {peer.Id} wrote {output.Length} bytes that differ from the {data.Length}-byte source");
        }
        finally
        {
            foreach (var (peer, _) in peers) await peer.DisposeAsync();
        }
    }

    private static async Task StreamAndCheckAsync(Coordinator coordinator, List<(Peer Peer, MemoryStream Output)> peers, byte[] data)
    {
        var runs = peers.Select(p => Task.Run(() => p.Peer.RunAsync(p.Output, CancellationToken.None))).ToList();
        await coordinator.RunAsync(new MemoryStream(data), CancellationToken.None).WaitAsync(Deadline);
        await Task.WhenAll(runs).WaitAsync(Deadline);
        foreach (var (peer, output) in peers)
            Assert.True(data.AsSpan().SequenceEqual(output.ToArray()), $"peer {peer.Id} wrote {output.Length} bytes that differ from the {data.Length}-byte source");
    }
}

using System.IO.Pipelines;
using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Advertised addresses: nodes that listen on 0.0.0.0 or [::] (every address of their machine)
/// are reached at the address their connection came from; <c>--advertise</c> overrides it; IPv6
/// addresses work end to end.
/// </summary>
public sealed class AddressTests
{
    private static readonly TimeSpan Deadline = Overlay.Deadline;

    /// <summary>
    /// The README's cross-machine recipe in miniature: every node on its own host, listening on
    /// 0.0.0.0. Before advertised addresses, a peer placed under another peer was sent to
    /// "0.0.0.0:1", which is no address on the network, and never got its stream.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public async Task Peers_listening_on_every_address_are_reached_where_their_connection_came_from(int shards)
    {
        var network = new VirtualNetwork();
        var options = new CoordinatorOptions { ShardCount = shards, MinPeers = 6, ListenAddress = "0.0.0.0:1234" };
        await using var coordinator = new Coordinator(options, network.Host("coord"), Overlay.Loggers);
        await coordinator.StartAsync(CancellationToken.None);
        var peers = new List<(Peer Peer, MemoryStream Output)>();
        try
        {
            for (int i = 1; i <= 6; i++)
            {
                var peer = new Peer(new PeerOptions { JoinAddress = "coord:1234", ListenAddress = "0.0.0.0:1235" }, network.Host($"p{i}"), Overlay.Loggers);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);
                peers.Add((peer, new MemoryStream()));
            }

            var snapshot = coordinator.Snapshot();
            foreach (var node in snapshot.Nodes.Skip(1))
                Assert.Equal($"p{node.Id}:1235", node.Address);
            Assert.Contains(snapshot.Nodes.Skip(1), n => n.Parents.Any(p => p > 0));

            await StreamAndCheckAsync(coordinator, peers, Overlay.RandomBytes(3_000_000, shards));
        }
        finally
        {
            foreach (var (peer, _) in peers) await peer.DisposeAsync();
        }
    }

    [Fact]
    public async Task An_advertised_address_is_what_the_coordinator_gives_to_other_peers()
    {
        var network = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1" }, network.Host("coord"), Overlay.Loggers);
        await coordinator.StartAsync(CancellationToken.None);
        await using var forwarded = new Peer(new PeerOptions { JoinAddress = "coord:1", ListenAddress = "0.0.0.0:5", AdvertiseAddress = "stream.example.org:7000" }, network.Host("p1"), Overlay.Loggers);
        await using var named = new Peer(new PeerOptions { JoinAddress = "coord:1", ListenAddress = "p2:5" }, network.Host("p2"), Overlay.Loggers);
        await forwarded.StartAsync(CancellationToken.None).WaitAsync(Deadline);
        await named.StartAsync(CancellationToken.None).WaitAsync(Deadline);

        var addresses = coordinator.Snapshot().Nodes.Skip(1).ToDictionary(n => n.Id, n => n.Address);

        Assert.Equal("stream.example.org:7000", addresses[forwarded.Id]);
        Assert.Equal("p2:5", addresses[named.Id]);
    }

    /// <summary>
    /// A coordinator listening on 0.0.0.0 listed itself in its overlay (/api/overlay, the
    /// dashboard, the overlay printed at the end) as "0.0.0.0:PORT", no address to connect to,
    /// while its peers on 0.0.0.0 were listed where they are reached. It is now listed at the
    /// address its peers reached it on, with its port.
    /// </summary>
    [Fact]
    public async Task A_coordinator_listening_on_every_address_is_listed_where_its_peers_reached_it()
    {
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "0.0.0.0:0" }, loggerFactory: Overlay.Loggers);
        await coordinator.StartAsync(CancellationToken.None);
        int port = Endpoint.Parse(coordinator.ListenAddress).Port;
        await using var peer = new Peer(new PeerOptions { JoinAddress = $"127.0.0.1:{port}", ListenAddress = "127.0.0.1:0" }, loggerFactory: Overlay.Loggers);
        await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);

        Assert.Equal($"127.0.0.1:{port}", coordinator.Snapshot().Nodes[0].Address);
    }

    [Theory]
    [InlineData("p1:0")]
    [InlineData("p1")]
    [InlineData("::1:7000")]
    public void An_advertised_address_without_a_usable_port_is_refused_with_a_reason(string advertise)
    {
        var e = Assert.ThrowsAny<Exception>(() => new Peer(new PeerOptions { JoinAddress = "coord:1", AdvertiseAddress = advertise }, new VirtualNetwork().Host("p1")));

        Assert.True(e is ArgumentException or FormatException, e.ToString());
        Assert.Contains(advertise, e.Message);
    }

    /// <summary>
    /// A coordinator on 0.0.0.0 that becomes a peer's parent again after a repair: the Move names
    /// its listen address, 0.0.0.0:1234, and the peer must go where it joined instead.
    /// </summary>
    [Fact]
    public async Task A_peer_moved_back_to_a_coordinator_on_every_address_reaches_it_where_it_joined()
    {
        var network = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { MinPeers = 3, ListenAddress = "0.0.0.0:1234" }, network.Host("coord"), Overlay.Loggers);
        await coordinator.StartAsync(CancellationToken.None);
        var peers = new List<(Peer Peer, MemoryStream Output)>();
        try
        {
            for (int i = 1; i <= 3; i++)
            {
                var peer = new Peer(new PeerOptions { JoinAddress = "coord:1234", ListenAddress = "0.0.0.0:1235" }, network.Host($"p{i}"), Overlay.Loggers);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);
                peers.Add((peer, new MemoryStream()));
            }
            // Binary tree: two peers under the coordinator, the third under one of them.
            var child = peers.Single(p => p.Peer.ParentIds()[0] != 0).Peer;
            var parent = peers.Single(p => p.Peer.Id == child.ParentIds()[0]);
            var source = new Pipe(new PipeOptions(pauseWriterThreshold: 0));
            var run = Task.Run(() => coordinator.RunAsync(source.Reader.AsStream(), CancellationToken.None));
            var outputs = peers.Where(p => p != parent).Select(p => (p.Peer, p.Output, Run: Task.Run(() => p.Peer.RunAsync(p.Output, CancellationToken.None)))).ToList();
            var data = Overlay.RandomBytes(2_000_000, 7);
            await source.Writer.WriteAsync(data.AsMemory(0, 1_000_000));
            // The coordinator streams only once all three peers are attached (MinPeers): a parent
            // that left before then would leave it waiting for a third peer for ever.
            await Overlay.WaitUntilAsync(() => outputs.All(o => o.Output.Length > 0), "the stream reaches both running peers");

            // The parent leaves: its place under the coordinator is free, so the child moves there.
            await parent.Peer.LeaveAsync(TimeSpan.FromSeconds(30));
            await Overlay.WaitUntilAsync(() => child.ParentIds()[0] == 0, "the child is served by the coordinator");
            await source.Writer.WriteAsync(data.AsMemory(1_000_000));
            await source.Writer.CompleteAsync();
            await run.WaitAsync(Deadline);

            foreach (var (peer, output, peerRun) in outputs)
            {
                await peerRun.WaitAsync(Deadline);
                Assert.True(data.AsSpan().SequenceEqual(output.ToArray()), $"peer {peer.Id} wrote {output.Length} bytes that differ from the {data.Length}-byte source");
            }
        }
        finally
        {
            foreach (var (peer, _) in peers) await peer.DisposeAsync();
        }
    }

    /// <summary>Real TCP over IPv6 loopback: a coordinator on [::1], peers on [::] advertised at [::1]:PORT.</summary>
    [Fact]
    public async Task IPv6_addresses_work_for_listening_advertising_and_connecting()
    {
        await using var coordinator = new Coordinator(new CoordinatorOptions { MinPeers = 4, ListenAddress = "[::1]:0" }, loggerFactory: Overlay.Loggers);
        await coordinator.StartAsync(CancellationToken.None);
        Assert.Matches(@"^\[::1\]:\d+$", coordinator.ListenAddress);
        var peers = new List<(Peer Peer, MemoryStream Output)>();
        try
        {
            for (int i = 0; i < 4; i++)
            {
                var peer = new Peer(new PeerOptions { JoinAddress = coordinator.ListenAddress, ListenAddress = "[::]:0" }, loggerFactory: Overlay.Loggers);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);
                peers.Add((peer, new MemoryStream()));
            }
            foreach (var node in coordinator.Snapshot().Nodes.Skip(1))
                Assert.Matches(@"^\[::1\]:\d+$", node.Address);

            await StreamAndCheckAsync(coordinator, peers, Overlay.RandomBytes(2_000_000, 6));
        }
        finally
        {
            foreach (var (peer, _) in peers) await peer.DisposeAsync();
        }
    }

    /// <summary>
    /// Real TCP over IPv4 loopback with every listener on [::]: the coordinator is reached at
    /// 127.0.0.1, and peers under peers connect to 127.0.0.1:PORT, where their parents' [::]
    /// listeners must accept IPv4 as a listener on 0.0.0.0 does.
    /// </summary>
    [Fact]
    public async Task Listeners_on_every_IPv6_address_are_reached_over_IPv4()
    {
        await using var coordinator = new Coordinator(new CoordinatorOptions { MinPeers = 4, ListenAddress = "[::]:0" }, loggerFactory: Overlay.Loggers);
        await coordinator.StartAsync(CancellationToken.None);
        var (_, port) = Endpoint.Parse(coordinator.ListenAddress);
        var peers = new List<(Peer Peer, MemoryStream Output)>();
        try
        {
            for (int i = 0; i < 4; i++)
            {
                var peer = new Peer(new PeerOptions { JoinAddress = $"127.0.0.1:{port}", ListenAddress = "[::]:0" }, loggerFactory: Overlay.Loggers);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);
                peers.Add((peer, new MemoryStream()));
            }
            var snapshot = coordinator.Snapshot();
            foreach (var node in snapshot.Nodes.Skip(1))
                Assert.Matches(@"^127\.0\.0\.1:\d+$", node.Address);
            Assert.Contains(snapshot.Nodes.Skip(1), n => n.Parents.Any(p => p > 0));

            await StreamAndCheckAsync(coordinator, peers, Overlay.RandomBytes(2_000_000, 8));
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

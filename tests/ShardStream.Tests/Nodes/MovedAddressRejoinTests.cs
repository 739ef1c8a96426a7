using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A relay whose ParentLost report goes unanswered joins again in its place with its control
/// link still open (event 1418). It listens on 0.0.0.0, so the coordinator lists it where its
/// connection came from; on a host with two addresses, its new connection may come from the
/// other one. It is still the same peer (its join token): its child must not be moved, nor its
/// old session stay listed beside a new one.
/// </summary>
public sealed class MovedAddressRejoinTests
{
    private static int Parent(Overlay overlay, int id) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents[0] ?? -1;

    /// <summary>A host with a second address: once <see cref="Switched"/>, its connections to the coordinator leave from that one.</summary>
    private sealed class TwoAddresses(ITransport first, ITransport second, string coordinator) : ITransport
    {
        public volatile bool Switched;

        public ValueTask<IConnectionListener> ListenAsync(string address, CancellationToken cancellationToken) => first.ListenAsync(address, cancellationToken);

        public ValueTask<IConnection> ConnectAsync(string address, CancellationToken cancellationToken) =>
            (Switched && address == coordinator ? second : first).ConnectAsync(address, cancellationToken);
    }

    [Fact]
    public async Task A_relay_that_joins_again_from_another_address_of_its_host_keeps_its_place_and_its_child()
    {
        var logs = new LogCapture();
        // The coordinator feeds a top relay, which feeds the relay and another relay; the relay
        // feeds the child, and the other relay has a slot free (room for a joiner).
        await using var overlay = await Overlay.StartAsync(1, minPeers: 4, configure: o => o with { Upload = 1 }, heartbeatTimeout: TimeSpan.FromSeconds(2), loggers: logs.Factory);
        var top = await overlay.AddPeerAsync(upload: 2);
        TwoAddresses? host = null;
        var relay = await overlay.AddPeerAsync(upload: 1, configure: o => o with { ListenAddress = "0.0.0.0:1" },
            network: t => host = new TwoAddresses(t, overlay.Network.Host("p2-second"), overlay.Coordinator.ListenAddress));
        await overlay.AddPeerAsync(upload: 1);
        var child = await overlay.AddPeerAsync(upload: 0);
        int relayId = relay.Id;
        Assert.Equal(top.Id, Parent(overlay, relayId));
        Assert.Equal(relayId, Parent(overlay, child.Id));
        string relayAddress = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == relayId).Address;
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 77_000));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 100_000), "every peer has the first part");

        // The relay loses its parent, its report is dropped unread, and its next connection to
        // the coordinator comes from its host's other address.
        int dropped = 0;
        overlay.Coordinator.ParentLostRead = (reporter, _) => reporter != relayId || Interlocked.Exchange(ref dropped, 1) != 0;
        host!.Switched = true;
        overlay.Network.Cut(overlay.PeerById(top.Id).Host, overlay.PeerById(relayId).Host);
        await Overlay.WaitUntilAsync(() => Volatile.Read(ref dropped) == 1, "the relay reported its parent lost, and the coordinator dropped the report");
        await Overlay.WaitUntilAsync(() => relay.Rejoins == 1, "the relay joined again for its unanswered report");

        // What a user checks: the relay is listed once, with its id and address, its child still
        // under it; no second entry (a new peer) beside a ghost of the old one.
        var nodes = overlay.Coordinator.Snapshot().Nodes.Where(n => n.Id != 0).ToList();
        Assert.True(nodes.Count == 4, $"listed: {string.Join("; ", nodes.Select(n => $"{n.Id} {n.Address}"))}");
        Assert.Equal(relayId, relay.Id);
        Assert.Equal(relayAddress, nodes.Single(n => n.Id == relayId).Address);
        Assert.Equal(relayId, Parent(overlay, child.Id));

        var rest = Overlay.RandomBytes(200_000, 77_001);
        await overlay.WriteAsync(rest);
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 300_000),
            $"every viewer writes the rest (the relay's parents {string.Join(",", relay.ParentIds())}, the child's {string.Join(",", child.ParentIds())})");
        Assert.Equal(relayId, Parent(overlay, child.Id));
        Assert.Equal(0, child.Rejoins);
        Assert.DoesNotContain(logs.Lines, l => l.Message.Contains($"peer {relayId}: control link broken on its side", StringComparison.Ordinal));
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

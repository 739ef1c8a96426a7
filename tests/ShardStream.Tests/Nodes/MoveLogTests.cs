using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>What a peer's "moving shard(s)" line (event 1705) tells its user.</summary>
public sealed class MoveLogTests
{
    /// <summary>
    /// A peer moved under the coordinator said "to peer 0 (0.0.0.0:1234)": the coordinator is no
    /// peer, and the address was the coordinator's listen address from the Move, not the one the
    /// peer connects to (the address it joined at, Peer.AttachAsync). Seen across network namespaces
    /// with a coordinator on -l 0.0.0.0:1234.
    /// </summary>
    [Fact]
    public async Task A_move_under_the_coordinator_names_the_coordinator_and_the_address_the_peer_connects_to()
    {
        var logs = new LogCapture();
        // K = 1, coordinator budget 2: peers 1 and 2 under it, peer 3 under one of them.
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, loggers: logs.Factory);
        for (int i = 0; i < 3; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, 1));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 200_000), "every peer has the first part");

        var child = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id != 0 && n.Parents[0] != 0);
        var relay = overlay.PeerById(child.Parents[0]).Peer;
        // The relay leaves: its slot under the coordinator goes to its orphan.
        await relay.LeaveAsync(TimeSpan.FromSeconds(30)).WaitAsync(Overlay.Deadline);
        await Overlay.WaitUntilAsync(() => overlay.PeerById(child.Id).Peer.ParentIds()[0] == 0, "the orphan is under the coordinator");
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, 2));
        await overlay.EndAsync();

        var moves = logs.Lines.Where(l => l.Message.StartsWith("moving shard(s)", StringComparison.Ordinal)).Select(l => l.Message).ToList();
        Assert.Contains(moves, m => m.EndsWith($" to coordinator ({overlay.Coordinator.ListenAddress})", StringComparison.Ordinal));
        Assert.DoesNotContain(moves, m => m.Contains(" to peer 0 ", StringComparison.Ordinal));
        foreach (var p in overlay.Peers.Where(p => p.Peer != relay)) await overlay.AssertIdenticalAsync(p);
    }
}

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A link that breaks just before the source's end: the viewer behind it still writes every byte,
/// also when the coordinator's process exits as soon as its run is over (as the CLI's does: the
/// coordinator is killed here right after its run returns).
/// </summary>
public sealed class LateBreakTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_viewer_whose_control_link_broke_just_before_the_end_gets_the_tail_before_the_coordinator_exits(int shards)
    {
        // The coordinator has room for everyone: it serves the viewer every shard on its control link.
        await using var overlay = await Overlay.StartAsync(shards, minPeers: 4, configure: o => o with { Upload = 8 });
        var viewer = await overlay.AddPeerAsync(upload: 0, configure: o => o with { RejoinFor = TimeSpan.FromSeconds(15) });
        for (int i = 0; i < 3; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, 1));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 200_000), "every peer has the first part");
        Assert.All(viewer.ParentIds(), parent => Assert.Equal(0, parent));
        var host = overlay.PeerById(viewer.Id).Host;

        // Its control link breaks, and its joins again fail until the source has ended and every other peer is done.
        overlay.Network.Block(host, "coord");
        overlay.Network.Cut(host, "coord");
        await overlay.WriteAsync(Overlay.RandomBytes(300_000, 2));
        var ending = overlay.EndAsync();
        await Overlay.WaitUntilAsync(() => ending.IsCompleted || overlay.Peers.Where(p => p.Peer != viewer).All(p => p.Run.IsCompleted), "the others are done");
        overlay.Network.Unblock(host, "coord");
        await ending;
        // The coordinator's process exits once its run is over.
        overlay.Network.Kill("coord");

        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_viewer_whose_parent_link_broke_just_before_the_end_gets_the_tail_before_the_coordinator_exits(int shards)
    {
        await using var overlay = await Overlay.StartAsync(shards, minPeers: 5);
        for (int i = 0; i < 5; i++) await overlay.AddPeerAsync(configure: o => o with { RejoinFor = TimeSpan.FromSeconds(15) });
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, 3));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 200_000), "every peer has the first part");
        var child = overlay.Coordinator.Snapshot().Nodes.First(n => n.Id != 0 && n.Parents.Any(p => p != 0));
        int parentId = child.Parents.First(p => p != 0);
        string childHost = overlay.PeerById(child.Id).Host, parentHost = overlay.PeerById(parentId).Host;

        // Its link to a parent breaks, and it cannot connect to that parent again.
        overlay.Network.Block(childHost, parentHost);
        overlay.Network.Cut(childHost, parentHost);
        await overlay.WriteAsync(Overlay.RandomBytes(300_000, 4));
        await overlay.EndAsync();
        overlay.Network.Kill("coord");

        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }

    [Fact]
    public async Task A_stall_that_begins_after_a_shards_last_chunk_ends_with_the_stream()
    {
        await using var overlay = await Overlay.StartAsync(2, minPeers: 6);
        for (int i = 0; i < 6; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, 5));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 200_000), "every peer has the first part");
        // A peer with shard 0 from a peer, and shard 1 from someone else.
        var node = overlay.Coordinator.Snapshot().Nodes.First(n => n.Id != 0 && n.Parents[0] != 0 && n.Parents[1] != n.Parents[0]);
        var (peer, _, run, host) = overlay.PeerById(node.Id);
        string shard0Parent = overlay.PeerById(node.Parents[0]).Host;

        // Its shard 1 is held back from the tail on: the stream cannot complete while shard 0 has everything.
        long heldFrom = peer.NextSeqOf(1);
        var release = new ManualResetEventSlim();
        peer.ChunkDue = (_, seq) =>
        {
            if (seq % 2 == 1 && seq >= heldFrom) release.Wait(Overlay.Deadline);
        };
        await overlay.WriteAsync(Overlay.RandomBytes(300_000, 6));
        var ending = overlay.EndAsync();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.SourceEnded && peer.NextSeqOf(0) >= overlay.Coordinator.ChunksCut, "the peer has shard 0's last chunk");

        // Then it loses its shard-0 parent: a stall of shard 0, which has no chunk left to come.
        overlay.Network.Block(host, shard0Parent);
        overlay.Network.Cut(host, shard0Parent);
        await Overlay.WaitUntilAsync(() => peer.Status().StalledShards == 1 || peer.ParentIds()[0] is var p && p != node.Parents[0] && p != -1, "the peer has reported shard 0's parent lost");
        release.Set();
        await ending;

        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
        Assert.True(peer.Status().Complete);
        Assert.Equal(0, peer.Status().StalledShards);
    }
}

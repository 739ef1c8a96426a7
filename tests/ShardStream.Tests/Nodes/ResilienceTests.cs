using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>Parents die, freeze or leave; viewers lose nothing.</summary>
public sealed class ResilienceTests
{
    private static async Task StreamAsync(Overlay overlay, int parts, int partSize, int seed)
    {
        for (int i = 0; i < parts; i++) await overlay.WriteAsync(Overlay.RandomBytes(partSize, seed * 1000 + i));
    }

    private static OverlayNode InteriorPeer(Overlay overlay) =>
        overlay.Coordinator.Snapshot().Nodes.Where(n => n.Id != 0 && n.Used > 0).OrderBy(n => n.Depths.Max()).First();

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Orphans_of_a_killed_parent_resume_with_no_byte_lost(int shards)
    {
        await using var overlay = await Overlay.StartAsync(shards, minPeers: 9);
        for (int i = 0; i < 9; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await StreamAsync(overlay, 10, 100_000, 1);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == 1_000_000, "streaming is under way");

        var victim = overlay.PeerById(InteriorPeer(overlay).Id);
        overlay.Network.Kill(victim.Host);
        await StreamAsync(overlay, 20, 100_000, 2);
        await overlay.EndAsync();

        foreach (var p in overlay.Peers.Where(p => p.Peer != victim.Peer)) await overlay.AssertIdenticalAsync(p);
    }

    [Fact]
    public async Task A_frozen_parent_is_found_by_the_heartbeat_timeout_and_replaced()
    {
        await using var overlay = await Overlay.StartAsync(shards: 2, minPeers: 7, heartbeatTimeout: TimeSpan.FromSeconds(10));
        for (int i = 0; i < 7; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await StreamAsync(overlay, 5, 100_000, 3);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == 500_000, "streaming is under way");

        var frozenId = InteriorPeer(overlay).Id;
        var frozen = overlay.PeerById(frozenId);
        overlay.Network.Freeze(frozen.Host);
        await StreamAsync(overlay, 5, 100_000, 4);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != frozenId), "the coordinator has dropped the frozen peer");
        await StreamAsync(overlay, 5, 100_000, 5);
        await overlay.EndAsync();

        foreach (var p in overlay.Peers.Where(p => p.Peer != frozen.Peer)) await overlay.AssertIdenticalAsync(p);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_peer_that_leaves_on_purpose_hands_over_its_children_first(int shards)
    {
        await using var overlay = await Overlay.StartAsync(shards, minPeers: 8);
        for (int i = 0; i < 8; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await StreamAsync(overlay, 5, 100_000, 6);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == 500_000, "streaming is under way");

        var leaverId = InteriorPeer(overlay).Id;
        var leaver = overlay.PeerById(leaverId);
        var leaving = leaver.Peer.LeaveAsync(TimeSpan.FromSeconds(30));
        await StreamAsync(overlay, 10, 100_000, 7);
        await leaving.WaitAsync(Overlay.Deadline);
        Assert.All(leaver.Peer.ChildIds(), children => Assert.Empty(children));
        await StreamAsync(overlay, 5, 100_000, 8);
        await overlay.EndAsync();

        foreach (var p in overlay.Peers.Where(p => p.Peer != leaver.Peer)) await overlay.AssertIdenticalAsync(p);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_link_broken_between_two_live_peers_is_made_again_with_no_byte_lost_and_no_one_evicted(int shards)
    {
        await using var overlay = await Overlay.StartAsync(shards, minPeers: 9);
        for (int i = 0; i < 9; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await StreamAsync(overlay, 10, 100_000, 12);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == 1_000_000, "streaming is under way");

        // A peer fed by another peer: cut every connection between the two, nothing else.
        var child = overlay.Coordinator.Snapshot().Nodes.First(n => n.Id != 0 && n.Parents.Any(p => p != 0));
        int parentId = child.Parents.First(p => p != 0);
        overlay.Network.Cut(overlay.PeerById(child.Id).Host, overlay.PeerById(parentId).Host);
        await StreamAsync(overlay, 10, 100_000, 13);
        await Overlay.WaitUntilAsync(() => overlay.PeerById(child.Id).Peer.BytesWritten == 2_000_000, "the cut-off child streams again");

        // Both ends answer the coordinator: neither is taken out of the overlay for the cut.
        var ids = overlay.Coordinator.Snapshot().Nodes.Select(n => n.Id).ToHashSet();
        Assert.Contains(child.Id, ids);
        Assert.Contains(parentId, ids);
        await StreamAsync(overlay, 5, 100_000, 14);
        await overlay.EndAsync();

        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }

    [Fact]
    public async Task A_gap_older_than_every_window_is_skipped_at_a_chunk_boundary_and_counted()
    {
        // Replay windows of one byte: nobody can replay anything, so a resume must skip.
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, heartbeatTimeout: TimeSpan.FromSeconds(10),
            configure: o => o with { ReplayWindowBytes = 1 });
        for (int i = 0; i < 3; i++) await overlay.AddPeerAsync(configure: o => o with { ReplayWindowBytes = 1 });
        overlay.StartStreaming();
        await StreamAsync(overlay, 2, 50_000, 9);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == 100_000, "streaming is under way");

        // Peer 1 feeds peer 3. Freeze peer 1 so peer 3 falls behind while the coordinator goes on.
        var parentId = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == 3).Parents[0];
        var parent = overlay.PeerById(parentId);
        var orphan = overlay.PeerById(3);
        await Overlay.WaitUntilAsync(() => orphan.Peer.BytesWritten == 100_000, "the orphan has the first part");
        overlay.Network.Freeze(parent.Host);
        await StreamAsync(overlay, 4, 50_000, 10);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != parentId), "the frozen parent is dropped");
        await Overlay.WaitUntilAsync(() => orphan.Peer.ParentIds()[0] != parentId, "the orphan has a new parent");
        await StreamAsync(overlay, 4, 50_000, 11);
        await overlay.EndAsync();
        await orphan.Run.WaitAsync(Overlay.Deadline);

        var source = overlay.Written;
        var got = orphan.Output.ToArray();
        Assert.True(orphan.Peer.LostBytes > 0, "the orphan should have lost the bytes it could not get back");
        Assert.Equal(source.Length, got.Length + orphan.Peer.LostBytes);
        // What was written is the source with one contiguous range cut out: never corrupted, never silently short.
        int head = 0;
        while (head < got.Length && got[head] == source[head]) head++;
        Assert.True(head >= 100_000, $"the first 100000 bytes arrived before the freeze, but output differs at {head}");
        Assert.True(source.AsSpan(head + (int)orphan.Peer.LostBytes).SequenceEqual(got.AsSpan(head)), "after the gap the output must continue with the source's bytes");
    }
}

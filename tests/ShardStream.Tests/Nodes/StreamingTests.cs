using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>Whole overlays on the virtual network: every peer writes the source's exact bytes.</summary>
public sealed class StreamingTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(1, 7)]
    [InlineData(1, 15)]
    [InlineData(2, 1)]
    [InlineData(2, 6)]
    [InlineData(2, 16)]
    public async Task Every_peer_writes_exactly_the_source_bytes(int shards, int peers)
    {
        await using var overlay = await Overlay.StartAsync(shards, minPeers: peers);
        for (int i = 0; i < peers; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();

        var random = new Random(shards * 100 + peers);
        for (int i = 0; i < 40; i++)
        {
            // Odd sizes: the coordinator cuts chunks as reads return, from 1 byte to 64 KiB.
            await overlay.WriteAsync(Overlay.RandomBytes(random.Next(1, 150_000), i));
        }
        await overlay.EndAsync();

        var source = overlay.Written;
        foreach (var (peer, output, run, _) in overlay.Peers)
        {
            await run.WaitAsync(Overlay.Deadline);
            Assert.Equal(0, peer.StartOffset);
            Assert.True(source.AsSpan().SequenceEqual(output.ToArray()), $"peer {peer.Id} wrote {output.Length} bytes that differ from the {source.Length}-byte source");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_peer_that_joins_while_short_reads_are_merged_writes_the_stream_from_its_join_point(int shards)
    {
        // A joiner is told the head (next chunk's seq and offset) while the chunk before it still
        // waits for its signature: later reads must not grow that chunk, or the next one would
        // start past the offset the joiner was told.
        await using var overlay = await Overlay.StartAsync(shards, minPeers: 2,
            configure: o => o with { MergeShortReads = true, MinSigningInterval = TimeSpan.FromSeconds(1), MaxSigningDelay = TimeSpan.FromSeconds(2), JoinBacklog = TimeSpan.Zero });
        for (int i = 0; i < 2; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        async Task WriteRecords(int from, int count)
        {
            for (int i = from; i < from + count; i++)
            {
                await overlay.WriteAsync(Overlay.RandomBytes(1250, i));
                await Task.Delay(1);
            }
        }
        await WriteRecords(0, 30);
        var joining = overlay.AddPeerAsync();
        await WriteRecords(30, 10);
        await joining;
        await WriteRecords(40, 30);
        await overlay.EndAsync();

        foreach (var peer in overlay.Peers) await overlay.AssertIdenticalAsync(peer);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Short_reads_merged_while_they_wait_for_their_signature_reach_every_peer_intact(int shards)
    {
        // A long signing interval holds each list open for a while: the records written meanwhile
        // (one read each) are appended to the chunk held, and every peer checks that chunk
        // against the hash signed for it as merged.
        await using var overlay = await Overlay.StartAsync(shards, minPeers: 3,
            configure: o => o with { MergeShortReads = true, MinSigningInterval = TimeSpan.FromSeconds(1), MaxSigningDelay = TimeSpan.FromSeconds(2) });
        for (int i = 0; i < 3; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        const int records = 100;
        for (int i = 0; i < records; i++)
        {
            await overlay.WriteAsync(Overlay.RandomBytes(1250, i));
            await Task.Delay(1);
        }
        await overlay.EndAsync();

        foreach (var peer in overlay.Peers) await overlay.AssertIdenticalAsync(peer);
        Assert.True(overlay.Coordinator.ChunksCut <= records / 2, $"{records} records of 1250 bytes, one read each, were cut into {overlay.Coordinator.ChunksCut} chunks: not merged");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_peer_that_joins_mid_stream_writes_the_stream_from_its_join_point(int shards)
    {
        // No join backlog: the join point is exactly where the source is when the peer joins.
        await using var overlay = await Overlay.StartAsync(shards, minPeers: 3, configure: o => o with { JoinBacklog = TimeSpan.Zero });
        for (int i = 0; i < 3; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(3_000_000, 1));
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == 3_000_000, "the first part is streamed");

        var late = await overlay.AddPeerAsync();
        await overlay.WriteAsync(Overlay.RandomBytes(3_000_000, 2));
        await overlay.EndAsync();

        var source = overlay.Written;
        foreach (var (peer, output, run, _) in overlay.Peers)
        {
            await run.WaitAsync(Overlay.Deadline);
            var expected = source.AsSpan((int)peer.StartOffset);
            Assert.True(expected.SequenceEqual(output.ToArray()), $"peer {peer.Id} (join offset {peer.StartOffset}) wrote {output.Length} bytes that are not the source from its join point");
        }
        Assert.Equal(3_000_000, late.StartOffset);
    }

    [Fact]
    public async Task A_peer_that_joins_through_another_peer_is_redirected_to_the_coordinator()
    {
        await using var overlay = await Overlay.StartAsync(shards: 2, minPeers: 3);
        var first = await overlay.AddPeerAsync();
        await overlay.AddPeerAsync(joinAddress: first.ListenAddress);
        await overlay.AddPeerAsync(joinAddress: overlay.Peers[1].Peer.ListenAddress);
        // Placed by the coordinator, all three (finished peers leave its view after the end).
        Assert.Equal(4, overlay.Coordinator.Snapshot().Nodes.Count);
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(1_000_000, 3));
        await overlay.EndAsync();

        foreach (var (peer, output, run, _) in overlay.Peers)
        {
            await run.WaitAsync(Overlay.Deadline);
            Assert.Equal(overlay.Written, output.ToArray());
        }
    }

    [Theory]
    [InlineData(1, 14)]
    [InlineData(2, 14)]
    public async Task The_overlay_built_from_real_joins_keeps_every_node_within_its_budget(int shards, int peers)
    {
        await using var overlay = await Overlay.StartAsync(shards, minPeers: peers);
        for (int i = 0; i < peers; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(500_000, 4));
        await overlay.EndAsync();

        var snapshot = overlay.Coordinator.Snapshot();
        foreach (var node in snapshot.Nodes)
        {
            Assert.True(node.Used <= shards + 1, $"node {node.Id} sends {node.Used} shard-streams, more than (K+1) = {shards + 1}");
            int edges = snapshot.Nodes.Sum(n => n.Parents.Count(p => p == node.Id));
            Assert.Equal(edges, node.Used);
        }
    }
}

using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A peer moved under a parent that joined after the point this peer has reached: the new parent
/// holds the stream only from its own join point, so it cannot replay what the peer still needs.
/// The peer must get those bytes anyway (docs/resilience.md, "A parent that joined later").
/// </summary>
public sealed class LateParentTests
{
    private static async Task StreamAsync(Overlay overlay, int parts, int partSize, int seed)
    {
        for (int i = 0; i < parts; i++) await overlay.WriteAsync(Overlay.RandomBytes(partSize, seed * 1000 + i));
    }

    [Fact]
    public async Task A_lagging_peer_moved_under_a_strong_joiner_that_starts_after_its_position_loses_no_byte()
    {
        // K = 1, a chain: the coordinator serves one child (relay), relay one (lagging). A long
        // heartbeat timeout: no failure detector acts before the test kills the frozen relay.
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 2, heartbeatTimeout: TimeSpan.FromSeconds(60),
            configure: o => o with { Upload = 1, RejoinGrace = TimeSpan.FromSeconds(1) });
        var relay = await overlay.AddPeerAsync(upload: 1);
        var lagging = await overlay.AddPeerAsync(upload: 0);
        Assert.Equal(relay.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == lagging.Id).Parents[0]);
        overlay.StartStreaming();
        await StreamAsync(overlay, 4, 50_000, 1);
        await Overlay.WaitUntilAsync(() => lagging.BytesWritten == 200_000, "the lagging peer has the first part");

        // Its relay freezes: the lagging peer stops at 200,000 while the stream goes on, a live
        // source of a part every 100 ms, until a joiner would start after its position (once the
        // chunks there are older than the coordinator's join backlog, 2 s).
        overlay.Network.Freeze(overlay.PeerById(relay.Id).Host);
        await StreamAsync(overlay, 4, 50_000, 2);
        var deadline = DateTime.UtcNow + Overlay.Deadline;
        for (int i = 0; overlay.Coordinator.JoinPointOffset <= 200_000; i++)
        {
            Assert.True(DateTime.UtcNow < deadline, $"a joiner would still start at {overlay.Coordinator.JoinPointOffset}, after {i} more parts");
            await overlay.WriteAsync(Overlay.RandomBytes(10_000, 3000 + i));
            long written = overlay.Written.Length;
            await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == written, "the part is read");
            await Task.Delay(100);
        }

        // A strong joiner takes the relay's place next to the coordinator; the lagging peer is
        // moved under it (a join's rebalancing Move), though the joiner holds the stream only from
        // its own join point, after the lagging peer's position.
        // Its position is read before the join: once moved, it takes the chunks in between from
        // the coordinator at once, and may have them all by the time the join returns here.
        long position = lagging.StartOffset + lagging.BytesWritten;
        Assert.Equal(200_000, position);
        var strong = await overlay.AddPeerAsync(upload: 4);
        Assert.True(strong.StartOffset > position, $"the joiner starts at {strong.StartOffset}, after the lagging peer's position {position}");
        Assert.Equal(strong.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == lagging.Id).Parents[0]);

        // The frozen relay dies.
        overlay.Network.Kill(overlay.PeerById(relay.Id).Host);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != relay.Id), "the coordinator has dropped the dead relay");
        await StreamAsync(overlay, 4, 50_000, 4);
        await overlay.EndAsync();

        foreach (var p in overlay.Peers.Where(p => p.Peer != relay)) await overlay.AssertIdenticalAsync(p);
    }
}

using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A repair's Move to a peer whose control link is backed up with chunks (the coordinator serves
/// it a shard there, and the peer reads slowly) must not wait behind them: the seconds of stream
/// queued there are what the replay windows are ageing through meanwhile (docs/resilience.md).
/// </summary>
public sealed class MoveAheadTests
{
    [Fact]
    public async Task A_move_to_a_slow_reader_overtakes_the_chunks_queued_on_its_control_link()
    {
        // No slow-child demotion: the test is about the Move, not about the slow viewer's fate.
        var lenient = TimeSpan.FromSeconds(120);
        await using var overlay = await Overlay.StartAsync(shards: 2, minPeers: 4, configure: o => o with { SlowChildAge = lenient });
        for (int i = 0; i < 4; i++) await overlay.AddPeerAsync(upload: 2, configure: o => o with { SlowChildAge = lenient });

        // A peer fed one shard by the coordinator (on its control link) and the other by a peer.
        var node = overlay.Coordinator.Snapshot().Nodes.FirstOrDefault(n => n.Id != 0 && n.Parents.Contains(0) && n.Parents.Any(p => p > 0));
        Assert.True(node is not null, "setup: no peer receives one shard from the coordinator and the other from a peer\n" + overlay.Coordinator.Snapshot().Render());
        int relayShard = Array.FindIndex(node.Parents, p => p > 0);
        int relayId = node.Parents[relayShard];
        var slow = overlay.PeerById(node.Id);
        var relay = overlay.PeerById(relayId);

        // It reads 125 kB/s; 24 MB of stream arrive at once: several MB of it queue for it at the
        // coordinator (4 MiB before the coordinator stops waiting for it, more after). Slow, as
        // what it received is read once the test has seen the Move applied, and it goes on
        // reading meanwhile: at 250 kB/s a test host held up 10 s there failed the check below.
        overlay.Network.SetDownloadRate(slow.Host, 125_000);
        overlay.StartStreaming();
        const int total = 24_000_000;
        for (int i = 0; i < 24; i++) await overlay.WriteAsync(Overlay.RandomBytes(total / 24, 40 + i));
        await Overlay.WaitUntilAsync(() => slow.Peer.Status().BytesReceived > 200_000, "the slow peer receives");

        // Its link to the relay breaks; both still answer the coordinator, which sends it back there.
        overlay.Network.Cut(slow.Host, relay.Host);
        await Overlay.WaitUntilAsync(() => slow.Peer.ParentIds()[relayShard] == -1, "the slow peer has lost its relay");
        await Overlay.WaitUntilAsync(() => slow.Peer.ParentIds()[relayShard] == relayId, "the slow peer is back at its relay");
        long received = slow.Peer.Status().BytesReceived;
        // Applied at once it finds ~0.3-0.5 MB received (16 s more of reading to 2.5 MB); behind the queue, more than 4 MiB.
        Assert.True(received < 2_500_000,
            $"the Move waited behind the chunks queued on the control link: the slow peer had received {received} of {total} bytes when it applied it");

        overlay.Network.SetDownloadRate(slow.Host, 0);
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

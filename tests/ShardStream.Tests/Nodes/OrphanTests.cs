using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>Every orphan gets a parent, even when the plan has no other room for it.</summary>
public sealed class OrphanTests
{
    /// <summary>
    /// A viewer loses its link to its parent and cannot connect to it again, and no other node has
    /// a free slot (the coordinator feeds only the relay, the relay's two slots hold the two
    /// viewers). It is not left without a parent: it is sent to the same parent again, after a
    /// pause, until the path works again; then it gets every byte.
    /// </summary>
    [Fact]
    public async Task An_orphan_with_no_other_room_is_sent_to_its_parent_again_until_it_can_reach_it()
    {
        var network = new VirtualNetwork();
        var logs = new LogCapture();
        var heartbeat = (Timeout: TimeSpan.FromSeconds(10), Interval: TimeSpan.FromMilliseconds(500));
        await using var coordinator = new Coordinator(new CoordinatorOptions
        {
            ListenAddress = "coord:1",
            ShardCount = 1,
            Upload = 1, // one shard-stream: the relay's
            HeartbeatTimeout = heartbeat.Timeout,
            HeartbeatInterval = heartbeat.Interval,
        }, network.Host("coord"), logs.Factory);
        await coordinator.StartAsync(CancellationToken.None);
        var peers = new List<(Peer Peer, MemoryStream Output)>();
        try
        {
            for (int i = 1; i <= 3; i++)
            {
                var peer = new Peer(new PeerOptions
                {
                    JoinAddress = "coord:1",
                    ListenAddress = $"p{i}:1",
                    Upload = i == 1 ? null : 0,
                    HeartbeatTimeout = heartbeat.Timeout,
                    HeartbeatInterval = heartbeat.Interval,
                }, network.Host($"p{i}"), Overlay.Loggers);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline);
                peers.Add((peer, new MemoryStream()));
            }
            int relay = peers[0].Peer.Id;
            Assert.All(peers.Skip(1), p => Assert.Equal(relay, p.Peer.ParentIds()[0]));
            var runs = peers.Select(p => Task.Run(() => p.Peer.RunAsync(p.Output, CancellationToken.None))).ToList();
            var source = new System.IO.Pipelines.Pipe();
            var streaming = Task.Run(() => coordinator.RunAsync(source.Reader.AsStream(), CancellationToken.None));
            var data = Overlay.RandomBytes(1_500_000, 5);
            await source.Writer.WriteAsync(data.AsMemory(0, 500_000));
            await Overlay.WaitUntilAsync(() => peers.All(p => p.Peer.BytesWritten > 0), "every viewer wrote the first bytes");

            // p2 loses the relay and cannot reach it again; nobody else has room for it.
            network.Block("p2", "p1");
            network.Cut("p2", "p1");
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"cannot connect to parent {relay} (p1:1), and no other node has room for shard 0"),
                "the coordinator finds no other parent for the orphan");
            await source.Writer.WriteAsync(data.AsMemory(500_000, 500_000));
            network.Unblock("p2", "p1");
            await Overlay.WaitUntilAsync(() => peers[1].Peer.ParentIds()[0] == relay, "the orphan is attached to its parent again");

            await source.Writer.WriteAsync(data.AsMemory(1_000_000));
            await source.Writer.CompleteAsync();
            await streaming.WaitAsync(Overlay.Deadline);
            await Task.WhenAll(runs).WaitAsync(Overlay.Deadline);
            foreach (var (peer, output) in peers)
            {
                Assert.True(data.AsSpan().SequenceEqual(output.ToArray()), $"peer {peer.Id} wrote {output.Length} bytes that differ from the {data.Length}-byte source");
                Assert.Equal(0, peer.LostBytes);
            }
        }
        finally
        {
            foreach (var (peer, _) in peers) await peer.DisposeAsync();
        }
    }
}

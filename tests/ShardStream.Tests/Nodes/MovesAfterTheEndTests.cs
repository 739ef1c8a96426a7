using ShardStream.Nodes;
using ShardStream.Simulation;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Once the source has ended, the coordinator moves nobody for a shorter path: the peers are
/// taking in the tail, and a move then only costs a new parent's replay (repairs still move peers).
/// </summary>
[Collection(ManyNodesCollection.Name)]
public sealed class MovesAfterTheEndTests(ITestOutputHelper output)
{
    [Fact]
    public async Task No_latency_move_is_sent_after_the_source_ends()
    {
        const int count = 40;
        var model = new WorldLatencyModel(3);
        // A round of latency moves every 250 ms with one move each (4 a second, as the CLI's
        // default), and peers that heartbeat and ping every 250 ms: the moves start after the same
        // rounds and samples as with 1 s, in a quarter of the time.
        await using var overlay = await Overlay.StartAsync(shards: 4, configure: o => o with { LatencyAware = true, LatencyMovesPerSecond = 1, LatencyMoveInterval = TimeSpan.FromMilliseconds(250) });
        overlay.Network.UseLatencyModel(["coord", .. Enumerable.Range(1, count).Select(i => $"p{i}")], model.OneWay);
        overlay.StartStreaming();
        for (int first = 1; first <= count; first += 10)
        {
            await Task.WhenAll(Enumerable.Range(first, 10).Select(async i =>
            {
                var options = new PeerOptions
                {
                    JoinAddress = overlay.Coordinator.ListenAddress,
                    ListenAddress = $"p{i}:1",
                    HeartbeatTimeout = TimeSpan.FromSeconds(10),
                    HeartbeatInterval = TimeSpan.FromMilliseconds(250),
                };
                var peer = new Peer(options, overlay.Network.Host($"p{i}"), Overlay.Loggers);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline);
                var sink = new MemoryStream();
                lock (overlay.Peers) overlay.Peers.Add((peer, sink, Task.Run(() => peer.RunAsync(sink, CancellationToken.None)), $"p{i}"));
            }));
            await overlay.WriteAsync(Overlay.RandomBytes(20_000, first));
        }
        // The stream goes on until the coordinator moves peers (a move waits for the leaf's own
        // measurements of its parent, seconds after the joins); it ends while they still move.
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(3);
        for (int part = 0; overlay.Coordinator.LatencyMoves == 0; part++)
        {
            Assert.True(DateTime.UtcNow < deadline, "no peer moved within 3 minutes");
            await overlay.WriteAsync(Overlay.RandomBytes(20_000, 1000 + part));
            await Task.Delay(250);
        }
        // One viewer reads slowly: the coordinator's run lasts until it has the tail, as with a slow
        // viewer on a real network: ~3.3 s at 30 KB/s, 13 rounds at 250 ms (as many as the 400 KB
        // and 13 s this test gave the tail at a round a second).
        overlay.Network.SetDownloadRate("p1", 30_000);
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 99));
        var ending = overlay.EndAsync(TimeSpan.FromMinutes(3));
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.SourceEnded, "the source has ended");
        long atTheEnd = overlay.Coordinator.LatencyMoves;
        await ending;
        output.WriteLine($"{atTheEnd} latency moves before the end, {overlay.Coordinator.LatencyMoves - atTheEnd} after");
        Assert.True(atTheEnd > 0);
        Assert.Equal(atTheEnd, overlay.Coordinator.LatencyMoves);
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

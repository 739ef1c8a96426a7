using ShardStream.Nodes;
using ShardStream.Simulation;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Improving placement over time (issue 12, point 4) on a <see cref="ShardStream.Transport.VirtualNetwork"/>
/// with the world latency model: the coordinator moves peers whose path is much worse than a free
/// slot elsewhere, a few a second, while the stream runs; every peer still writes every byte, and
/// the moves stop (no oscillation).
/// </summary>
[Collection(ManyNodesCollection.Name)]
public sealed class LatencyMovesTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(3)]
    [InlineData(11)]
    public async Task Peers_move_to_shorter_paths_while_streaming_lose_no_byte_and_the_moves_stop(int seed)
    {
        const int count = 60;
        const int movesPerSecond = 4;
        var model = new WorldLatencyModel(seed);
        await using var overlay = await Overlay.StartAsync(shards: 4, configure: o => o with { LatencyAware = true, LatencyMovesPerSecond = movesPerSecond });
        overlay.Network.UseLatencyModel(["coord", .. Enumerable.Range(1, count).Select(i => $"p{i}")], model.OneWay);
        overlay.StartStreaming();
        var data = Overlay.RandomBytes(600_000, seed);
        int written = 0;
        for (int first = 1; first <= count; first += 10)
        {
            var wave = Enumerable.Range(first, Math.Min(10, count - first + 1)).Select(async i =>
            {
                var options = new PeerOptions
                {
                    JoinAddress = overlay.Coordinator.ListenAddress,
                    ListenAddress = $"p{i}:1",
                    HeartbeatTimeout = TimeSpan.FromSeconds(10),
                    HeartbeatInterval = TimeSpan.FromSeconds(2),
                };
                var peer = new Peer(options, overlay.Network.Host($"p{i}"), Overlay.Loggers);
                await peer.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline);
                var sink = new MemoryStream();
                lock (overlay.Peers) overlay.Peers.Add((peer, sink, Task.Run(() => peer.RunAsync(sink, CancellationToken.None)), $"p{i}"));
            });
            await Task.WhenAll(wave);
            await overlay.WriteAsync(data.AsMemory(written, 20_000).ToArray());
            written += 20_000;
        }

        // The stream goes on while peers move: until no edge has moved for 5 s (the planner has
        // nothing more worth a move), then the rest.
        long last = -1;
        var quietSince = DateTime.UtcNow;
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(4);
        while (DateTime.UtcNow - quietSince < TimeSpan.FromSeconds(5))
        {
            Assert.True(DateTime.UtcNow < deadline, $"still moving after 4 minutes: {overlay.Coordinator.LatencyMoves} moves");
            if (overlay.Coordinator.LatencyMoves != last)
            {
                last = overlay.Coordinator.LatencyMoves;
                quietSince = DateTime.UtcNow;
            }
            if (written < data.Length - 20_000)
            {
                await overlay.WriteAsync(data.AsMemory(written, 20_000).ToArray());
                written += 20_000;
            }
            await Task.Delay(250);
        }
        await overlay.WriteAsync(data.AsMemory(written).ToArray());
        long moves = overlay.Coordinator.LatencyMoves;
        output.WriteLine($"{model.Description}, {count} peers, K=4 striped: {moves} edges moved for a shorter path");

        Assert.True(moves > 0, "no peer moved");
        // No oscillation: each move gains at least 20 ms, a moved peer rests, and it settled above;
        // a bound well below endless moving back and forth: at most one move per (peer, shard) edge.
        Assert.True(moves <= count * 4, $"{moves} moves for {count * 4} edges");
        await overlay.EndAsync(TimeSpan.FromMinutes(3));
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

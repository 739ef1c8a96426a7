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
        // A round of latency moves every 250 ms with a quarter of the cap each (4 a second, as the
        // CLI's default), and peers that heartbeat and ping every 250 ms: the same rounds (a moved
        // peer rests 30) and samples as at the CLI's 1 s, in less wall time.
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 4, configure: o => o with { LatencyAware = true, LatencyMovesPerSecond = movesPerSecond / 4, LatencyMoveInterval = TimeSpan.FromMilliseconds(250) }, loggers: log.Factory);
        overlay.Network.UseLatencyModel(["coord", .. Enumerable.Range(1, count).Select(i => $"p{i}")], model.OneWay);
        overlay.StartStreaming();
        var data = Overlay.RandomBytes(600_000, seed);
        int written = 0;
        for (int first = 1; first <= count; first += 10)
        {
            // Pings every interval until 4 samples, then every 5: a move is judged after 6 (3.5 s).
            await Task.WhenAll(Enumerable.Range(first, Math.Min(10, count - first + 1)).Select(i => overlay.JoinHostAsync(i, TimeSpan.FromMilliseconds(250))));
            await overlay.WriteAsync(data.AsMemory(written, 20_000).ToArray());
            written += 20_000;
        }

        // The stream goes on while peers move: until every peer has measured its parents often
        // enough for the coordinator to judge its edges (a move needs that), each peer at its own
        // moment (Overlay.EveryPeerMeasuredItsParents: every move gives its peer a new link that
        // starts from no sample, so a moment with every link measured at once is rare while moves
        // go on), and then no edge has moved for 10 s (the planner has nothing more worth a move),
        // then the rest.
        long last = -1;
        var joined = DateTime.UtcNow;
        var quietSince = joined;
        var deadline = joined + TimeSpan.FromMinutes(4);
        bool measured = false;
        while (!measured || DateTime.UtcNow - quietSince < TimeSpan.FromSeconds(10))
        {
            Assert.True(DateTime.UtcNow < deadline, measured
                ? $"still moving after 4 minutes: {overlay.Coordinator.LatencyMoves} moves"
                : $"not every peer measured its parent links after 4 minutes ({overlay.Coordinator.LatencyMoves} moves): {string.Join(" | ", overlay.UnmeasuredParentLinks(neverMeasuredOnly: true))}");
            if (!measured && overlay.EveryPeerMeasuredItsParents())
            {
                output.WriteLine($"every peer measured its parent links {(DateTime.UtcNow - joined).TotalSeconds:0} s after the joins ({overlay.Coordinator.LatencyMoves} moves by then)");
                measured = true;
                quietSince = DateTime.UtcNow;
            }
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
        // Every peer is honest, but an honest coordinate can be badly fitted (seen: peer 7 put 6.6-78 ms
        // from a child that measured 190.9 ms, seed 3); two children that measured it so hold it where
        // they measured it (event 1688). A hold must bring the plan nearer what was measured, never farther.
        output.WriteLine($"coordinates held by their children's RTTs: {overlay.Coordinator.WitnessHolds}");
        foreach (var line in log.Lines.Where(l => l.Message.Contains("claims a coordinate that puts it", StringComparison.Ordinal))) output.WriteLine(line.Message);
        WitnessHoldAssert.EachBringsThePlanNearerWhatWasMeasured(log);
        await overlay.EndAsync(TimeSpan.FromMinutes(3));
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }

    /// <summary>
    /// Peers on one machine, started together while it is loaded (b713a7c): every RTT a node
    /// measures in its first seconds is 0.3 to 1.4 s (each host is slow to answer, by its own
    /// amount), then the machine calms down and RTTs are those of loopback. The coordinates made
    /// of the first samples put some paths hundreds of ms longer than others; no path is really
    /// shorter than another, so no peer may be moved.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Peers_on_one_loaded_host_started_together_are_not_moved(int seed)
    {
        const int count = 20;
        var random = new Random(seed);
        var hosts = new List<string> { "coord" };
        hosts.AddRange(Enumerable.Range(1, count).Select(i => $"p{i}"));
        // Each host answers late by its own amount (half of an RTT of 0.3 to 1.4 s) until its start-up ends, 4 to 10 s in.
        var slow = hosts.Select(_ => TimeSpan.FromMilliseconds(150 + random.Next(550))).ToArray();
        var calm = hosts.Select(_ => TimeSpan.FromSeconds(4 + random.Next(7))).ToArray();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        TimeSpan Delay(int host) => clock.Elapsed < calm[host] ? slow[host] : TimeSpan.FromMicroseconds(Random.Shared.Next(50, 2000));
        await using var overlay = await Overlay.StartAsync(shards: 4, configure: o => o with { LatencyAware = true, LatencyMovesPerSecond = 4 });
        overlay.Network.UseLatencyModel(hosts, (i, j) => (Delay(i) + Delay(j)) / 2);
        overlay.StartStreaming();
        await Task.WhenAll(Enumerable.Range(1, count).Select(i => overlay.JoinHostAsync(i, TimeSpan.FromSeconds(1))));

        // The stream runs until every peer has measured each of its parents often enough for the
        // coordinator to judge that edge (the machine calmed down long before), and the coordinator
        // has then looked at every edge several times.
        var data = Overlay.RandomBytes(2_000_000, seed);
        int written = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(3);
        long roundsAtMeasured = -1;
        while (roundsAtMeasured < 0 || overlay.Coordinator.LatencyMoveRounds < roundsAtMeasured + 10)
        {
            Assert.True(DateTime.UtcNow < deadline, $"not every parent link measured after 3 minutes ({overlay.Coordinator.LatencyMoves} moves)");
            if (roundsAtMeasured < 0 && overlay.EveryParentLinkMeasured())
                roundsAtMeasured = overlay.Coordinator.LatencyMoveRounds;
            if (written < data.Length - 20_000)
            {
                await overlay.WriteAsync(data.AsMemory(written, 20_000).ToArray());
                written += 20_000;
            }
            await Task.Delay(250);
        }
        await overlay.WriteAsync(data.AsMemory(written).ToArray());
        output.WriteLine($"seed {seed}: {count} peers started together, {overlay.Coordinator.LatencyMoves} edges moved, {overlay.Coordinator.LatencyMoveRounds} rounds");
        Assert.Equal(0, overlay.Coordinator.LatencyMoves);
        await overlay.EndAsync(TimeSpan.FromMinutes(3));
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

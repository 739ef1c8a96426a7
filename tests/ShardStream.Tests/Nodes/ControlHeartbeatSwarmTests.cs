using System.Diagnostics;
using ShardStream.LoadGeneration;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A real coordinator over TCP on loopback with a few hundred swarm peers (the load generator's
/// peers, which heartbeat and follow the coordinator's requests as a peer does): by default it
/// chooses the control-link heartbeat interval from the number of peers it holds, every control
/// link moves to it on both ends, a frozen peer is still found and evicted, and once the peers
/// have left the interval is back to the heartbeat interval.
/// </summary>
public sealed class ControlHeartbeatSwarmTests
{
    [Fact]
    public async Task A_coordinator_with_a_few_hundred_peers_lengthens_their_heartbeats_and_still_evicts_a_frozen_one()
    {
        // 100 heartbeats a second instead of 1,000: 300 peers stand for 3 s, as 3,000 would by default.
        var coordinatorOptions = new CoordinatorOptions { ListenAddress = "127.85.0.1:0", ShardCount = 2, ControlHeartbeatsPerSecond = 100 };
        var log = new LogCapture();
        await using var coordinator = new Coordinator(coordinatorOptions, loggerFactory: log.Factory);
        await coordinator.StartAsync(CancellationToken.None);
        var swarm = new Swarm(new SwarmOptions
        {
            CoordinatorAddress = coordinator.ListenAddress,
            Peers = 300,
            JoinRate = 300,
            Hold = TimeSpan.FromSeconds(0.5),
            FirstAddress = "127.85.2.1",
            Addresses = 10,
            JoinTimeout = TimeSpan.FromSeconds(60),
        });
        var three = TimeSpan.FromSeconds(3);
        SwarmPeer? frozen = null;
        ulong frozenId = 0;
        TimeSpan foundAfter = default;
        int othersWhenFound = -1;
        var report = await swarm.RunAsync(null, async () =>
        {
            // Every control link at 3 s on the coordinator's side (it follows once its peer says it
            // does), and every swarm peer heartbeating every 3 s.
            await Overlay.WaitUntilAsync(() => coordinator.ControlHeartbeatState() is var s && s.Interval == three && s.Peers == swarm.Connected && s.Following == s.Peers,
                "the coordinator asks for 3 s and keeps it on every control link");
            await Overlay.WaitUntilAsync(() => swarm.ConnectedPeers().All(p => p.HeartbeatInterval == three), "every swarm peer heartbeats every 3 s");

            frozen = swarm.ConnectedPeers()[0];
            frozenId = frozen.Id;
            frozen.Freeze();
            // Its silence starts at the last frame it sent (a heartbeat up to 3 s before).
            var silentFrom = frozen.LastSent;
            await Overlay.WaitUntilAsync(() => coordinator.Snapshot().Nodes.All(n => n.Id != (int)frozenId), "the frozen peer is out of the overlay");
            foundAfter = Stopwatch.GetElapsedTime(silentFrom);
            othersWhenFound = coordinator.Snapshot().Nodes.Count - 1;
        }, CancellationToken.None);

        Assert.Equal(300, report.Joined);
        // Found by its silence, and not before the 3 s interval allows (twice it: 6 s), which the
        // coordinator therefore judged it by; at 1 s heartbeats it would have gone after 5 s.
        Assert.NotNull(frozen);
        Assert.Contains(log.Lines, l => l.Message.StartsWith($"peer {frozenId} is gone (nothing heard for", StringComparison.Ordinal));
        Assert.True(foundAfter >= TimeSpan.FromSeconds(5.9), $"the frozen peer was out after {foundAfter.TotalSeconds:0.0} s of silence");
        // No one else lost its place with it.
        Assert.Equal(299, othersWhenFound);
        // What the operator is told, once each way.
        Assert.Contains(log.Lines, l => l.Level == Microsoft.Extensions.Logging.LogLevel.Information && l.Message.StartsWith("control links heartbeat every 3 s from now on (was 2 s): 300 peers held", StringComparison.Ordinal));
        // Everyone gone: the interval is back to the heartbeat interval's 1 s.
        await Overlay.WaitUntilAsync(() => coordinator.ControlHeartbeatState() is { Peers: 0 } s && s.Interval == TimeSpan.FromSeconds(1), "the coordinator is back to 1 s with no peer");
        Assert.Contains(log.Lines, l => l.Message.StartsWith("control links heartbeat every 1 s from now on (was 2 s)", StringComparison.Ordinal));
    }
}

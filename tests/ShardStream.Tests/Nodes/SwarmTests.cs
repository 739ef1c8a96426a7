using ShardStream.LoadGeneration;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The load generator (<c>shardstream swarm</c>) against a real coordinator over TCP on loopback:
/// its peers join for real (the coordinator's dial-back probe answered), stay, churn and leave,
/// and the coordinator's own count of peers follows. No timing is asserted: figures go to
/// docs/performance.md.
/// </summary>
public sealed class SwarmTests
{
    [Fact]
    public async Task The_coordinator_counts_every_swarm_peer_that_joined_and_none_after_they_left()
    {
        // A long heartbeat timeout: the dial-back may take half of it, and on a loaded machine a
        // probe that misses 2.5 s would place a peer as a leaf (what the test checks does not happen).
        var coordinatorOptions = new CoordinatorOptions { ListenAddress = "127.0.0.1:0", ShardCount = 2, HeartbeatTimeout = TimeSpan.FromSeconds(60) };
        await using var coordinator = new Coordinator(coordinatorOptions, loggerFactory: Overlay.Loggers);
        await coordinator.StartAsync(CancellationToken.None);
        var options = new SwarmOptions
        {
            CoordinatorAddress = coordinator.ListenAddress,
            Peers = 500,
            JoinRate = 500,
            Hold = TimeSpan.FromSeconds(2),
            ChurnRate = 50,
            FirstAddress = "127.77.0.1",
            Addresses = 10,
            JoinTimeout = TimeSpan.FromSeconds(60),
        };
        var swarm = new Swarm(options);
        int countedAtHoldEnd = -1;
        int relaysAtHoldEnd = -1;
        var report = await swarm.RunAsync(null, async () =>
        {
            // Leaves of the churn may still be on their way: a churn's join can end before its
            // leave, and the swarm counts a leaver until the coordinator closes its link. Both sides
            // agreed on 509 with nine leaves under way (2026-12-06, load 70). So wait until the
            // swarm's own leaves are done, then until the coordinator agrees, then compare.
            await Overlay.WaitUntilAsync(() => swarm.Connected == options.Peers, "the swarm's churn leaves are done");
            await Overlay.WaitUntilAsync(() => PeersOf(coordinator) == swarm.Connected, "the coordinator counts as many peers as the swarm has connected");
            var snapshot = coordinator.Snapshot();
            countedAtHoldEnd = snapshot.Nodes.Count - 1;
            // Every peer answered the dial-back with its own token, so none was made a leaf.
            relaysAtHoldEnd = snapshot.Nodes.Count(n => n.Id != 0 && n.Budget > 0);
        }, CancellationToken.None);

        Assert.Empty(report.Failures);
        Assert.Empty(report.Dropped);
        Assert.Equal(500 + 100, report.JoinsStarted);
        Assert.Equal(report.JoinsStarted, report.Joined);
        Assert.Equal(500, countedAtHoldEnd);
        Assert.Equal(500, relaysAtHoldEnd);
        Assert.Equal(600, report.Left);
        await Overlay.WaitUntilAsync(() => PeersOf(coordinator) == 0, "the coordinator has taken every leave");
    }

    private static int PeersOf(Coordinator coordinator) => coordinator.Snapshot().Nodes.Count - 1;
}

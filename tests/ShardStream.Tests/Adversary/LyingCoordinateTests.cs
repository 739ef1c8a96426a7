using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Topology;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A stranger that speaks the protocol joins claiming a network coordinate right at the
/// coordinator's, sure of it, while it is 100 ms away. The coordinator measures its control
/// link, and once it has <see cref="Coordinator.SourceRttSamples"/> samples it holds the peer,
/// in the plan, as far as measured: that coordinate is what it places other joiners under the
/// peer by, and what it hands joiners as a landmark.
/// </summary>
public sealed class LyingCoordinateTests(ITestOutputHelper output)
{
    /// <summary>The real round trip between the coordinator and the liar.</summary>
    private static readonly TimeSpan PathRtt = TimeSpan.FromMilliseconds(100);

    [Fact]
    public async Task A_peer_that_claims_a_coordinate_next_to_the_coordinator_is_held_as_far_as_the_coordinator_measured_it()
    {
        var log = new LogCapture();
        // Latency-aware (the plan holds coordinates); pings every 250 ms until 4 samples, then every 1.25 s.
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { LatencyAware = true, HeartbeatInterval = TimeSpan.FromMilliseconds(250) }, loggers: log.Factory);
        overlay.Network.SetLatency("coord", "liar", PathRtt / 2);
        var atTheCoordinator = Node.ToWire(Coordinator.Anchor with { Error = 0.1 });
        await using var liar = await StrangerControlLink.JoinAsync(overlay, claimedHold: TimeSpan.Zero, atTheCoordinator);
        double joined = overlay.Coordinator.PlannedCoordinate(liar.Id).EstimateRtt(Coordinator.Anchor);

        // Two samples past the fourth: its heartbeats (every 200 ms) and pongs brought its claim again meanwhile.
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == liar.Id && r.Samples >= Coordinator.SourceRttSamples + 2),
            "the coordinator has 6 RTT samples of the liar's control link");

        var measured = overlay.Coordinator.LinkRtts().Single(r => r.RemoteId == liar.Id).Min.TotalMilliseconds;
        var held = overlay.Coordinator.PlannedCoordinate(liar.Id);
        output.WriteLine($"claimed {Node.FromWire(atTheCoordinator).EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator; held at {joined:F1} ms at join, {held.EstimateRtt(Coordinator.Anchor):F1} ms after {Coordinator.SourceRttSamples + 2} samples (least RTT measured {measured:F1} ms, path {PathRtt.TotalMilliseconds} ms)");
        Assert.True(measured >= PathRtt.TotalMilliseconds - 2, $"least RTT {measured:F1} ms on a path of {PathRtt.TotalMilliseconds} ms");
        // As far from the coordinator as measured (float rounding aside), the rest of the claim kept.
        Assert.True(held.EstimateRtt(Coordinator.Anchor) >= measured - 0.01, $"the plan holds the liar {held.EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator, which measured it at least {measured:F1} ms away");
        Assert.Equal(0, held.X, 3);
        Assert.Equal(0, held.Y, 3);
        Assert.True(log.Has(LogLevel.Debug, $"peer {liar.Id} claims a coordinate"), string.Join("\n", log.Lines.Select(l => l.Message)));
    }
}

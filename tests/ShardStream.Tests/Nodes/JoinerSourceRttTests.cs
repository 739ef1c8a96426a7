using ShardStream.Nodes;
using ShardStream.Tests.Adversary;
using ShardStream.Topology;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A joiner's RTT to the coordinator is its Join's wait for an answer, which holds the
/// coordinator's own work: a coordinator just started or busy answered late, and joiners put
/// themselves 2-3 times as far from it as they are (LatencyOverlayTests, docs/topology.md). The
/// coordinator places a joiner no farther than 4/3 of its connection's handshake RTT.
/// </summary>
public sealed class JoinerSourceRttTests(ITestOutputHelper output)
{
    private static readonly TimeSpan PathRtt = TimeSpan.FromMilliseconds(100);

    [Fact]
    public async Task A_joiner_that_puts_itself_far_beyond_its_handshake_rtt_is_placed_at_that_rtt()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { LatencyAware = true });
        overlay.Network.SetLatency("coord", "liar", PathRtt / 2);
        // 400 ms away in the plane, and it says its Join took 400 ms to be answered.
        var farOut = Node.ToWire(new NetworkCoordinate(240, 320, 5, 0.3));
        await using var joiner = await StrangerControlLink.JoinAsync(overlay, claimedHold: TimeSpan.Zero, farOut, [new MeasuredRtt(0, 400_000)]);
        var joined = overlay.Coordinator.PlannedCoordinate(joiner.Id);

        output.WriteLine($"claimed {Node.FromWire(farOut).EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator; placed {joined.EstimateRtt(Coordinator.Anchor):F1} ms (handshake {PathRtt.TotalMilliseconds} ms)");
        Assert.Equal(PathRtt.TotalMilliseconds, joined.EstimateRtt(Coordinator.Anchor), 0.01);
        // In the direction it claimed, its height kept.
        Assert.Equal(Math.Atan2(320, 240), Math.Atan2(joined.Y, joined.X), 5);
        Assert.Equal(5, joined.Height, 3);
    }
}

using System.Buffers;
using System.IO.Pipelines;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A stranger that speaks the protocol answers the coordinator's pings on its control link with a
/// Pong that claims it held each ping almost a whole round trip before answering. The pinger takes
/// a Pong's hold out of its sample only up to <see cref="Protocol.MaxPongHold"/>, and only when
/// what is left is no less than the least round trip it measured on the link (RFC 9002, section
/// 5.3): the coordinator's RTT to the liar stays the real path's, so the liar cannot look nearer
/// the source than it is.
/// </summary>
public sealed class LyingPongTests(ITestOutputHelper output)
{
    /// <summary>The real round trip between the coordinator and the liar (one way: half of it).</summary>
    private static readonly TimeSpan PathRtt = TimeSpan.FromMilliseconds(100);

    [Fact]
    public async Task A_peer_that_claims_to_hold_each_ping_almost_a_round_trip_is_measured_at_its_real_rtt()
    {
        // The coordinator pings every 250 ms until it has 4 samples, then every 1.25 s.
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { HeartbeatInterval = TimeSpan.FromMilliseconds(250) });
        overlay.Network.SetLatency("coord", "liar", PathRtt / 2);
        // It claims 95 ms of a 100 ms round trip: before, the coordinator measured it at about 5 ms.
        await using var liar = await StrangerControlLink.JoinAsync(overlay, claimedHold: TimeSpan.FromMilliseconds(95));

        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == liar.Id && r.Samples >= 6), "the coordinator has 6 RTT samples of the liar's control link");

        var rtt = overlay.Coordinator.LinkRtts().Single(r => r.RemoteId == liar.Id);
        output.WriteLine($"coordinator's RTT to the liar: SRTT {rtt.Smoothed.TotalMilliseconds:F1} ms, least {rtt.Min.TotalMilliseconds:F1} ms, {rtt.Samples} samples; pongs sent {liar.Pongs}; path {PathRtt.TotalMilliseconds} ms");
        Assert.True(liar.Pongs >= 6, $"the liar answered {liar.Pongs} pings");
        // The least RTT is what the planner records as the peer's RTT to the source; the SRTT is the page's.
        // A ping's send time is taken before the transport has it and the virtual network holds each
        // way to at least its delay: no sample can be below the path's round trip.
        Assert.True(rtt.Min >= PathRtt, $"least RTT {rtt.Min.TotalMilliseconds:F1} ms on a path of {PathRtt.TotalMilliseconds} ms");
        Assert.True(overlay.Coordinator.ControlRtt(liar.Id) >= PathRtt, $"SRTT {overlay.Coordinator.ControlRtt(liar.Id)?.TotalMilliseconds:F1} ms on a path of {PathRtt.TotalMilliseconds} ms");
    }
}

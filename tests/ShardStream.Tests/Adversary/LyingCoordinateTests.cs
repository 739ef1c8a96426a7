using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Topology;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A stranger that speaks the protocol joins claiming a network coordinate right at the
/// coordinator's, sure of it, while it is 100 ms away. It is placed as far as its connection's
/// handshake took (the virtual network gives the path's RTT, as the kernel's SYN-ACK sample
/// would); once the coordinator has <see cref="Coordinator.SourceRttSamples"/> samples of its
/// control link it holds the peer, in the plan, as far as measured: that coordinate is what it
/// places other joiners under the peer by, and what it hands joiners as a landmark. A liar that
/// leaves the coordinator no handshake sample to check it by (it dropped the first SYN-ACK) is
/// placed as if it had claimed nothing.
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
        // No handshake RTT (TCP elsewhere than on Linux): the join takes the claim as it is.
        overlay.Network.HandshakeRtts = false;
        var atTheCoordinator = Node.ToWire(Coordinator.Anchor with { Error = 0.1 });
        await using var liar = await StrangerControlLink.JoinAsync(overlay, claimedHold: TimeSpan.Zero, atTheCoordinator);
        double joined = overlay.Coordinator.PlannedCoordinate(liar.Id).EstimateRtt(Coordinator.Anchor);

        // Two samples past the fourth: its heartbeats (every 200 ms) and pongs brought its claim again meanwhile.
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == liar.Id && r.Samples >= Coordinator.SourceRttSamples + 2),
            "the coordinator has 6 RTT samples of the liar's control link");

        var measured = overlay.Coordinator.LinkRtts().Single(r => r.RemoteId == liar.Id).Min.TotalMilliseconds;
        var held = overlay.Coordinator.PlannedCoordinate(liar.Id);
        output.WriteLine($"claimed {Node.FromWire(atTheCoordinator).EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator; held at {joined:F1} ms at join, {held.EstimateRtt(Coordinator.Anchor):F1} ms after {Coordinator.SourceRttSamples + 2} samples (least RTT measured {measured:F1} ms, path {PathRtt.TotalMilliseconds} ms)");
        Assert.True(joined < 1, $"placed {joined:F1} ms from the coordinator with no handshake RTT to check its claim by");
        Assert.True(measured >= PathRtt.TotalMilliseconds - 2, $"least RTT {measured:F1} ms on a path of {PathRtt.TotalMilliseconds} ms");
        // As far from the coordinator as measured (float rounding aside), the rest of the claim kept.
        Assert.True(held.EstimateRtt(Coordinator.Anchor) >= measured - 0.01, $"the plan holds the liar {held.EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator, which measured it at least {measured:F1} ms away");
        Assert.Equal(0, held.X, 3);
        Assert.Equal(0, held.Y, 3);
        Assert.True(log.Has(LogLevel.Debug, $"peer {liar.Id} claims a coordinate"), string.Join("\n", log.Lines.Select(l => l.Message)));
    }

    [Fact]
    public async Task A_joiner_that_claims_a_coordinate_next_to_the_coordinator_is_placed_as_far_as_its_handshake_took()
    {
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { LatencyAware = true }, loggers: log.Factory);
        overlay.Network.SetLatency("coord", "liar", PathRtt / 2);
        var atTheCoordinator = Node.ToWire(Coordinator.Anchor with { Error = 0.1 });
        // It says it measured the coordinator at 0.2 ms too.
        await using var liar = await StrangerControlLink.JoinAsync(overlay, claimedHold: TimeSpan.Zero, atTheCoordinator, [new MeasuredRtt(0, 200)]);
        var joined = overlay.Coordinator.PlannedCoordinate(liar.Id);
        int samples = overlay.Coordinator.LinkRtts().FirstOrDefault(r => r.RemoteId == liar.Id)?.Samples ?? 0;

        output.WriteLine($"claimed {Node.FromWire(atTheCoordinator).EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator; held at {joined.EstimateRtt(Coordinator.Anchor):F1} ms at join, with {samples} RTT sample(s) of its control link (path {PathRtt.TotalMilliseconds} ms)");
        // Placed by the discounted coordinate: as far as the handshake, the rest of the claim kept.
        Assert.True(joined.EstimateRtt(Coordinator.Anchor) >= PathRtt.TotalMilliseconds - 0.01, $"the plan placed the liar {joined.EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator, whose handshake with it took {PathRtt.TotalMilliseconds} ms");
        Assert.Equal(0, joined.X, 3);
        Assert.Equal(0, joined.Y, 3);
        string lines = string.Join("\n", log.Lines.Select(l => l.Message));
        Assert.True(log.Has(LogLevel.Debug, $"joiner {liar.Id} claims a coordinate 0.2 ms from the coordinator, whose handshake with it took 100.0 ms"), lines);
        Assert.True(log.Has(LogLevel.Debug, $"joiner {liar.Id} says it measured 0.2 ms to the coordinator, whose handshake with it took 100.0 ms"), lines);

        // Its heartbeats bring the claim again before the control link has its samples: still held as far.
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == liar.Id && r.Samples >= 1), "the coordinator has a sample of the liar's control link");
        Assert.True(overlay.Coordinator.PlannedCoordinate(liar.Id).EstimateRtt(Coordinator.Anchor) >= PathRtt.TotalMilliseconds - 0.01);
    }

    [Fact]
    public async Task An_honest_peer_whose_process_answers_pings_late_is_held_where_it_claims_not_as_far_as_its_samples()
    {
        // Not a liar: a peer that claims its true distance (the path's 100 ms) but answers every ping
        // 300 ms late, as a process stalled on a loaded host does (it cannot know; it claims no hold).
        // Every sample of its control link is then about 400 ms, and a claim of 100 ms is less than
        // half of that. The handshake's 100 ms, which no stall is in, bounds what the coordinator
        // takes as measured (Coordinator.SourceRtt); without it, the plan held the peer 400 ms away.
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { LatencyAware = true, HeartbeatInterval = TimeSpan.FromMilliseconds(250) }, loggers: log.Factory);
        overlay.Network.SetLatency("coord", "liar", PathRtt / 2);
        var honest = Node.ToWire(Coordinator.Anchor with { X = PathRtt.TotalMilliseconds - (2 * Vivaldi.MinHeight), Error = 0.2 });
        double claimedMs = Node.FromWire(honest).EstimateRtt(Coordinator.Anchor);
        await using var peer = await StrangerControlLink.JoinAsync(overlay, claimedHold: TimeSpan.Zero, honest, answerDelay: TimeSpan.FromMilliseconds(300));

        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == peer.Id && r.Samples >= Coordinator.SourceRttSamples + 2),
            "the coordinator has 6 RTT samples of the peer's control link");
        var measured = overlay.Coordinator.LinkRtts().Single(r => r.RemoteId == peer.Id).Min.TotalMilliseconds;
        double held = overlay.Coordinator.PlannedCoordinate(peer.Id).EstimateRtt(Coordinator.Anchor);
        output.WriteLine($"claimed {claimedMs:F1} ms from the coordinator (path {PathRtt.TotalMilliseconds} ms); least RTT sample {measured:F1} ms; held at {held:F1} ms");
        Assert.True(measured > 2 * claimedMs + Coordinator.CoordinateSlackMs, $"least sample {measured:F1} ms: the late answers did not make the samples more than twice the claim");
        Assert.Equal(claimedMs, held, 1);
        string lines = string.Join("\n", log.Lines.Select(l => l.Message));
        Assert.False(log.Has(LogLevel.Debug, $"peer {peer.Id} claims a coordinate"), lines);
    }

    [Fact]
    public async Task A_peer_whose_handshake_was_far_shorter_than_its_path_is_held_as_far_as_its_pings_once_they_are_many()
    {
        // A liar behind a TCP relay next to the coordinator: the handshake ends at the relay (1 ms),
        // every byte after it crosses the whole path (100 ms). It claims the coordinator's own
        // coordinate. Until its control link has Coordinator.HandshakeBoundSamples samples the
        // handshake bounds what was measured; from then on its pings alone do. Without that limit,
        // it was held 1 ms away for good.
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { LatencyAware = true, HeartbeatInterval = TimeSpan.FromMilliseconds(250) });
        overlay.Network.SetLatency("coord", "liar", PathRtt / 2);
        overlay.Network.RelayHandshakes("liar", TimeSpan.FromMilliseconds(1));
        var atTheCoordinator = Node.ToWire(Coordinator.Anchor with { Error = 0.1 });
        await using var liar = await StrangerControlLink.JoinAsync(overlay, claimedHold: TimeSpan.Zero, atTheCoordinator);
        double joined = overlay.Coordinator.PlannedCoordinate(liar.Id).EstimateRtt(Coordinator.Anchor);

        // Pings every 250 ms until 4 samples, then every 1.25 s: about 16 s to the bound, two more after it.
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == liar.Id && r.Samples >= Coordinator.HandshakeBoundSamples + 2),
            $"the coordinator has {Coordinator.HandshakeBoundSamples + 2} RTT samples of the liar's control link", within: TimeSpan.FromMinutes(2));
        var measured = overlay.Coordinator.LinkRtts().Single(r => r.RemoteId == liar.Id).Min.TotalMilliseconds;
        double held = overlay.Coordinator.PlannedCoordinate(liar.Id).EstimateRtt(Coordinator.Anchor);
        output.WriteLine($"handshake 1 ms; placed {joined:F1} ms from the coordinator; least RTT sample {measured:F1} ms (path {PathRtt.TotalMilliseconds} ms); held at {held:F1} ms after {Coordinator.HandshakeBoundSamples + 2} samples");
        Assert.True(joined < 2, $"placed {joined:F1} ms from the coordinator by a 1 ms handshake");
        // Every ping crossed the whole path (the network delays a byte by at least its latency).
        Assert.True(measured >= PathRtt.TotalMilliseconds - 1, $"least RTT {measured:F1} ms: the pings did not cross the {PathRtt.TotalMilliseconds} ms path");
        Assert.True(held >= measured - 0.01, $"the plan holds the liar {held:F1} ms from the coordinator, whose pings took at least {measured:F1} ms");
    }

    [Fact]
    public async Task A_joiner_whose_handshake_gave_no_usable_RTT_is_placed_as_if_it_claimed_no_coordinate()
    {
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { LatencyAware = true, HeartbeatInterval = TimeSpan.FromMilliseconds(250) }, loggers: log.Factory);
        overlay.Network.SetLatency("coord", "liar", PathRtt / 2);
        // It drops the first SYN-ACK of its connection: the coordinator's kernel sends it again and
        // takes no sample (tcpi_total_retrans 1), as with a SYN cookie, though it measures handshakes.
        overlay.Network.DropFirstSynAcks("liar");
        var atTheCoordinator = Node.ToWire(Coordinator.Anchor with { Error = 0.1 });
        await using var liar = await StrangerControlLink.JoinAsync(overlay, claimedHold: TimeSpan.Zero, atTheCoordinator, [new MeasuredRtt(0, 200)]);
        var joined = overlay.Coordinator.PlannedCoordinate(liar.Id);

        output.WriteLine($"claimed {Node.FromWire(atTheCoordinator).EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator, no handshake sample; held at join: {joined}");
        // Placed by no coordinate at all (a latency-blind join), not by the claim it could not be checked by.
        Assert.Equal(NetworkCoordinate.Unknown, joined);
        string lines = string.Join("\n", log.Lines.Select(l => l.Message));
        Assert.True(log.Has(LogLevel.Information, $"joiner {liar.Id}: its connection's handshake gave no usable RTT"), lines);
        Assert.False(log.Has(LogLevel.Debug, $"joiner {liar.Id} claims a coordinate"), lines);

        // Its pongs and heartbeats bring the claim again: not taken before the control link has its
        // own samples, then checked against them.
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == liar.Id && r.Samples >= 2), "the coordinator has 2 RTT samples of the liar's control link");
        var early = overlay.Coordinator.PlannedCoordinate(liar.Id);
        Assert.True(early == NetworkCoordinate.Unknown || early.EstimateRtt(Coordinator.Anchor) >= PathRtt.TotalMilliseconds - 0.01, $"held at {early} after 2 samples");
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == liar.Id && r.Samples >= Coordinator.SourceRttSamples + 2),
            "the coordinator has 6 RTT samples of the liar's control link");
        var measured = overlay.Coordinator.LinkRtts().Single(r => r.RemoteId == liar.Id).Min.TotalMilliseconds;
        var held = overlay.Coordinator.PlannedCoordinate(liar.Id);
        output.WriteLine($"after {Coordinator.SourceRttSamples + 2} samples: held {held.EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator (least RTT measured {measured:F1} ms)");
        Assert.True(held.EstimateRtt(Coordinator.Anchor) >= measured - 0.01, $"the plan holds the liar {held.EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator, which measured it at least {measured:F1} ms away");
    }
}

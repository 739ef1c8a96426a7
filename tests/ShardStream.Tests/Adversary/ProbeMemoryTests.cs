using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// The coordinator's dial-back probe keeps a round trip only for peers it placed: a stranger that
/// joins, is probed and never comes back, again and again from new addresses, grows nothing.
/// </summary>
public class ProbeMemoryTests
{
    [Fact]
    public async Task A_joiner_that_never_comes_back_after_its_early_probe_leaves_no_round_trip_behind()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { LatencyAware = true });
        const ulong token = 0x5151;
        await using var listener = await overlay.Network.Host("quitter").ListenAsync("quitter:1", CancellationToken.None);
        var probed = ProbeAnswer.AnswerAsync(listener, token, untilClosed: true);

        // It joins with no coordinate and upload to spare: a latency-aware coordinator sends it
        // landmarks to measure and starts the dial-back meanwhile. It goes away instead.
        var connection = await overlay.Network.Host("quitter").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, token, 200, [], "quitter:1", new byte[Protocol.NonceLength], null, WireCoordinate.Unknown).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        var (type, _) = await RawFrames.ReadAsync(connection.Pipe.Input);
        Assert.Equal(FrameType.Landmarks, type);
        connection.Abort();

        // The dial-back was answered as the joiner would, and the coordinator closed it: it has
        // its round trip, and the joiner never came to be placed.
        await probed;
        Assert.Null(overlay.Coordinator.ProbeRoundTrip("quitter:1"));

        // A peer that is placed keeps its probe's round trip (the overlay's view shows it).
        var peer = await overlay.AddPeerAsync();
        string address = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == peer.Id).Address;
        Assert.NotNull(overlay.Coordinator.ProbeRoundTrip(address));
    }

    [Fact]
    public void A_peer_that_leaves_takes_only_its_own_round_trip_with_it()
    {
        // Peer 1's link broke and its place is kept for the rejoin grace; meanwhile the same
        // host joins again as a new peer (2) from the same address. Peer 1's grace ends later.
        var probe = new ReachabilityProbe(new CoordinatorOptions(), new VirtualNetwork().Host("coord"), (_, _) => throw new InvalidOperationException("no link in this test"),
            () => "coord:1", NullLogger.Instance, TimeProvider.System, CancellationToken.None);
        probe.Record("viewer:1", 1, TimeSpan.FromMilliseconds(5));
        probe.Record("viewer:1", 2, TimeSpan.FromMilliseconds(7));

        probe.Forget("viewer:1", 1);
        Assert.Equal(TimeSpan.FromMilliseconds(7), probe.RoundTrip("viewer:1"));
        probe.Forget("viewer:1", 2);
        Assert.Null(probe.RoundTrip("viewer:1"));
    }
}

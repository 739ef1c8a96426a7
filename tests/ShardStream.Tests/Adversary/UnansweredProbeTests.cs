using System.Buffers;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Topology;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A joiner measures the nodes it is sent before it is placed (docs/security.md, "Lies about RTTs
/// and coordinates"). A node that takes the connection and does not answer the probe is not
/// measured; the joiner reports it as far as the round's whole time, so the coordinator, which
/// places a joiner by what it measured where it has a figure, does not place it under such a node
/// by that node's claimed coordinate. Before, it was left out of the Join, and its claim stood for
/// the edge.
/// </summary>
public sealed class UnansweredProbeTests
{
    [Fact]
    public async Task A_node_that_does_not_answer_a_probe_is_reported_as_far_as_the_round_lasted()
    {
        var net = new VirtualNetwork();
        // A node that accepts every connection and answers nothing.
        var silent = await net.Host("s").ListenAsync("s:1", default);
        var held = new List<IConnection>();
        using var stop = new CancellationTokenSource();
        var hold = Task.Run(async () =>
        {
            while (await silent.AcceptAsync(stop.Token) is { } connection) lock (held) held.Add(connection);
        });
        // A coordinator that sends the joiner two landmarks, itself and the silent node (which claims
        // to be next to everyone: where it claims to be plays no part here), and reads its next Join.
        var listener = await net.Host("fc").ListenAsync("fc:1", default);
        var next = new TaskCompletionSource<Hello>(TaskCreationOptions.RunContinuationsAsynchronously);
        var serve = Task.Run(async () =>
        {
            var connection = await listener.AcceptAsync(stop.Token);
            await OneConnectionJoinTests.ReadFrameAsync(connection!.Pipe.Input);
            new Landmarks([new Landmark(0, "", Node.ToWire(Coordinator.Anchor)), new Landmark(7, "s:1", new WireCoordinate(1, 1, 0.1f, 0.1f))], Protocol.Version).Write(connection.Pipe.Output);
            await connection.Pipe.Output.FlushAsync();
            var (type, body) = await OneConnectionJoinTests.ReadFrameAsync(connection.Pipe.Input);
            var reader = new SequenceReader<byte>(body);
            Assert.Equal(FrameType.Hello, type);
            Assert.True(Hello.TryRead(ref reader, out var hello));
            next.SetResult(hello);
            return connection;
        });
        var options = new PeerOptions { JoinAddress = "fc:1", ListenAddress = "p:1", RejoinFor = TimeSpan.FromSeconds(1) };
        var peer = new Peer(options, net.Host("p"), Overlay.Loggers);
        var joining = peer.StartAsync(default);

        var join = await next.Task.WaitAsync(Overlay.Deadline);
        Assert.Contains(join.Measured ?? [], m => m.NodeId == 0 && m.RttMicros > 0);
        var reported = Assert.Single(join.Measured ?? [], m => m.NodeId == 7);
        Assert.Equal((uint)options.MeasureTimeout.TotalMicroseconds, reported.RttMicros);
        lock (held) Assert.NotEmpty(held);

        // The coordinator goes away without answering the Join, so the join fails now, not after
        // the joiner's wait for an answer (two heartbeat timeouts, 10 s) and its retry's (10 s more).
        await stop.CancelAsync();
        await listener.DisposeAsync();
        (await serve).Abort();
        await Assert.ThrowsAnyAsync<Exception>(() => joining.WaitAsync(Overlay.Deadline));
        await peer.DisposeAsync();
        await silent.DisposeAsync();
        try
        {
            await hold;
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
            // The listener stops with the test.
        }
    }

    [Fact]
    public void Two_nodes_reported_at_the_round_s_time_are_placed_alike_whatever_one_of_them_claims()
    {
        // A joiner at x = 95 whose round heard neither relay (its host starved: DodgedProbeTests'
        // failure in ci) reports both at the round's whole time. The first relay's claim, next to
        // the joiner or as far on the other side, must not pick the joiner's parent.
        Assert.Equal(UnderFirst(claimedX: 100, firstMs: 1000, secondMs: 1000), UnderFirst(claimedX: -100, firstMs: 1000, secondMs: 1000));
        // One that answered, however late (a round of 5 s), is preferred to one reported at the round's time.
        Assert.False(UnderFirst(claimedX: 100, firstMs: 5000, secondMs: 1200));
    }

    /// <summary>
    /// The source at the origin and two relays with room, the first at x = <paramref name="claimedX"/>
    /// as it claims, the second up and to the right (40, 60); whether a joiner at x = 95 that
    /// reported them at these RTTs is placed under the first.
    /// </summary>
    private static bool UnderFirst(double claimedX, double firstMs, double secondMs)
    {
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, new NetworkCoordinate(0, 0, 1, 0.1));
        int first = planner.Join(4, new NetworkCoordinate(claimedX, 0, Vivaldi.MinHeight, 0.1));
        int second = planner.Join(4, new NetworkCoordinate(40, 60, 1, 0.1));
        int joiner = planner.Join(0, new NetworkCoordinate(95, 0, Vivaldi.MinHeight, 0.2), new Dictionary<int, double> { [Planner.Source] = 95, [first] = firstMs, [second] = secondMs });
        return planner.ParentOf(joiner, 0) == first;
    }
}

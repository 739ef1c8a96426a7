using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Topology;
using ShardStream.Transport;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// What a relay held by its children's RTTs loses (docs/security.md, "Lies about RTTs and
/// coordinates"): while the plan believes its claim to sit among its children, their edges look
/// short and no latency move takes them; once it is held where they measured it, the leaves among
/// them that have a much shorter path through another relay are moved there, while the stream
/// runs, and lose no byte. The liar keeps claiming to sit among them as their coordinates drift.
/// </summary>
public sealed class HeldLiarMovesTests(ITestOutputHelper output)
{
    /// <summary>
    /// Where the hosts are in the plane (ms; an RTT is the distance): the coordinator at the origin,
    /// the liar 100 ms to the left; 100 ms to the right an honest relay and eight peers around it.
    /// </summary>
    private static readonly (string Host, double X, double Y)[] Hosts =
    [
        ("coord", 0, 0), ("liar", -100, 0), ("p1", 100, 0), ("p2", 110, 10), ("p3", 110, -10), ("p4", 90, 10), ("p5", 90, -10),
        ("p6", 100, 5), ("p7", 100, -5), ("p8", 105, 0), ("p9", 95, 0),
    ];

    [Fact]
    public async Task Once_a_relay_that_lies_about_its_direction_is_held_its_leaves_move_to_a_nearer_relay_and_lose_no_byte()
    {
        var log = new LogCapture();
        // Two direct children at the coordinator (one shard), the liar and the relay; a round of
        // latency moves every 250 ms, one move each (4 a second, the CLI's default cap).
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with
        {
            LatencyAware = true, Upload = 2, HeartbeatInterval = TimeSpan.FromMilliseconds(250), LatencyMovesPerSecond = 1, LatencyMoveInterval = TimeSpan.FromMilliseconds(250),
            // A disposed filler closes its control link with no goodbye, and the coordinator keeps
            // its place for the rejoin grace (4 heartbeat timeouts: 40 s), which took most of the
            // test's 49 s; ci132 (load 20-60) timed out waiting 60 s for the fillers to leave the
            // plan. Their leaving is not the subject: a short grace.
            RejoinGrace = TimeSpan.FromSeconds(2),
        }, loggers: log.Factory);
        LyingDirectionTests.UsePlane(overlay, Hosts);
        overlay.StartStreaming();
        PeerOptions Fast(PeerOptions o) => o with { HeartbeatInterval = TimeSpan.FromMilliseconds(250) };

        Func<WireCoordinate> claim = () => WireCoordinate.Unknown;
        var transport = new TamperingTransport(overlay.Network.Host("liar"), Attacks.ClaimCoordinate(() => Volatile.Read(ref claim)())) { Opened = true, OnlyTo = "coord" };
        await using var liar = new Peer(Fast(new PeerOptions { JoinAddress = overlay.Coordinator.ListenAddress, ListenAddress = "liar:1", Upload = 4 }), transport, Overlay.Loggers);
        await liar.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline);
        var liarRun = Task.Run(() => liar.RunAsync(Stream.Null, CancellationToken.None));
        // The relay and the eight peers tell the coordinator their true place in the plane (their
        // frames to it rewritten as the liar's are), as LyingDirectionTests' viewers do. With their
        // own fits (only the coordinator and one parent to measure) the viewers' coordinates wandered,
        // the lie that followed them could come to contradict none of them, and the hold lapsed
        // (2026-12-05: 1 run of 3 at load 40, 3 of 4 viewers still under the liar after 4 minutes).
        // The subject is what a hold costs the liar, not the viewers' fits.
        Func<ITransport, ITransport> TruePlace(int host)
        {
            var where = new WireCoordinate((float)Hosts[host].X, (float)Hosts[host].Y, (float)Vivaldi.MinHeight, 0.2f);
            return t => new TamperingTransport(t, Attacks.ClaimCoordinate(() => where)) { Opened = true, OnlyTo = "coord", Active = true };
        }
        var relay = await overlay.AddPeerAsync(upload: 4, configure: Fast, network: TruePlace(2));
        Assert.Equal(0, Parent(overlay, relay));
        // Eight peers join around the relay, in the slots of the relay and the liar (four each, and
        // none elsewhere): those under the liar are the viewers; those under the relay, fillers
        // that leave once the liar lies.
        var around = new List<Peer>();
        for (int i = 0; i < 8; i++) around.Add(await overlay.AddPeerAsync(upload: 0, configure: Fast, network: TruePlace(3 + i)));
        var viewers = around.Where(p => Parent(overlay, p) == liar.Id).ToList();
        var fillers = around.Where(p => Parent(overlay, p) == relay.Id).ToList();
        Assert.Equal((4, 4), (viewers.Count, fillers.Count));
        await overlay.WriteAsync(Overlay.RandomBytes(50_000, seed: 1));
        await Overlay.WaitUntilAsync(() => viewers.All(v => overlay.Coordinator.PlannedCoordinate(v.Id).Error <= 0.5), "the plan holds a settled coordinate for every viewer");

        // It claims to sit among the viewers (as in LyingDirectionTests), worked out from their
        // coordinates in the plan at every frame it sends (a claim that stayed put while theirs
        // drifted could come to contradict none of them, and the plan would hold it as claimed
        // again: security.md, "A held liar"). Then the relay's slots free.
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == liar.Id && r.Samples >= Coordinator.SourceRttSamples), "the coordinator measured the liar");
        double least = 0.6 * overlay.Coordinator.LinkRtts().Single(r => r.RemoteId == liar.Id).Min.TotalMilliseconds;
        WireCoordinate Claim() => LyingDirectionTests.ClaimAmong([.. viewers.Select(v => overlay.Coordinator.PlannedCoordinate(v.Id))], least);
        Volatile.Write(ref claim, Claim);
        transport.Active = true;
        output.WriteLine($"the liar {liar.Id} claims {Node.FromWire(Claim())}");
        foreach (var f in fillers) await f.DisposeAsync();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => !fillers.Any(f => f.Id == n.Id)), "the fillers left the plan");

        // The stream goes on while the viewers measure the liar, it is held, and they move.
        using var stop = new CancellationTokenSource();
        var writer = Task.Run(async () =>
        {
            for (int seed = 2; !stop.IsCancellationRequested; seed++)
            {
                await overlay.WriteAsync(Overlay.RandomBytes(4_000, seed));
                await Task.Delay(100);
            }
        });
        try
        {
            // Each move waits until the new parent's coordinate and the leaf's are sure enough
            // (an error of at most 0.5), and a move unsettles both for a while (the relay's error
            // rose to 0.96 after the first two in one run, and the next two came 36 s later):
            // minutes, not seconds, on a loaded host.
            await Overlay.WaitUntilAsync(() => viewers.All(v => v.ParentIds()[0] == relay.Id), "every viewer moved from the liar to the relay, and follows", within: TimeSpan.FromMinutes(4));
        }
        finally
        {
            foreach (var v in viewers) output.WriteLine($"viewer {v.Id}: planned under {Parent(overlay, v)}, receives from {v.ParentIds()[0]}, at {overlay.Coordinator.PlannedCoordinate(v.Id)} in the plan");
            output.WriteLine($"the relay {relay.Id} at {overlay.Coordinator.PlannedCoordinate(relay.Id)} in the plan");
            foreach (var l in log.Lines.Where(l => l.Message.Contains("of latency moves", StringComparison.Ordinal) || l.Message.Contains($"peer {liar.Id} claims a coordinate that", StringComparison.Ordinal) || l.Message.StartsWith($"peer {liar.Id}: ", StringComparison.Ordinal) && l.Message.Contains("contradict its claimed coordinate now", StringComparison.Ordinal)))
                output.WriteLine(l.Message);
            output.WriteLine($"latency moves: {overlay.Coordinator.LatencyMoves}; witness holds: {overlay.Coordinator.WitnessHolds}; the liar held at {overlay.Coordinator.PlannedCoordinate(liar.Id)}");
            stop.Cancel();
            await writer;
        }
        Assert.All(viewers, v => Assert.Equal(relay.Id, Parent(overlay, v)));
        Assert.True(log.Has(Microsoft.Extensions.Logging.LogLevel.Debug, $"peer {liar.Id} claims a coordinate that"), "the liar was never held");

        await overlay.WriteAsync(Overlay.RandomBytes(50_000, seed: 0));
        await overlay.EndAsync();
        foreach (var v in viewers) await overlay.AssertIdenticalAsync(overlay.PeerById(v.Id));
        await liarRun.WaitAsync(Overlay.Deadline);
    }

    private static int? Parent(Overlay overlay, Peer peer) =>
        overlay.Coordinator.Snapshot().Nodes.FirstOrDefault(n => n.Id == peer.Id)?.Parents[0];
}

using System.Globalization;
using System.Text.RegularExpressions;
using ShardStream.Nodes;
using ShardStream.Simulation;
using ShardStream.Topology;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Hundreds of in-process nodes on modelled latencies: one of these tests at a time. The collection
/// runs beside one other test class (it ran alone at the end of the project, the CI's longest tail:
/// 6.5 min of 17 in ci120) and starts first, since it is the longest.
/// </summary>
[RunsLong(400)]
[CollectionDefinition(Name)]
public sealed class ManyNodesCollection
{
    public const string Name = "many nodes";
}

/// <summary>
/// Round-trip times measured through the transport (version-6 pings) and latency-aware placement
/// on a <see cref="ShardStream.Transport.VirtualNetwork"/> whose delays come from a latency model.
/// </summary>
[Collection(ManyNodesCollection.Name)]
public sealed partial class LatencyOverlayTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Every_link_measures_the_delay_the_network_puts_on_it()
    {
        await using var overlay = await Overlay.StartAsync(shards: 2, heartbeatTimeout: TimeSpan.FromSeconds(5));
        overlay.Network.SetLatency("coord", "p1", TimeSpan.FromMilliseconds(40));
        overlay.Network.SetLatency("coord", "p2", TimeSpan.FromMilliseconds(15));
        overlay.Network.SetLatency("p1", "p2", TimeSpan.FromMilliseconds(70));
        overlay.StartStreaming();
        var p1 = await overlay.AddPeerAsync();
        var p2 = await overlay.AddPeerAsync();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 1));

        // Each side pings: every link has samples at both ends.
        await Overlay.WaitUntilAsync(() => p1.LinkRtts().Any(r => r.RemoteId == 0 && r.Samples >= 3) && p2.LinkRtts().Any(r => r.RemoteId == 0 && r.Samples >= 3)
            && overlay.Coordinator.LinkRtts().Count(r => r.Samples >= 3) >= 2, "both control links have three RTT samples at each end");

        // A sample also holds whatever kept this process from running while its ping was out (a
        // stalled machine; a starved process: 0.9-1.1 s on three links at once at load 5-9), and
        // a link between the peers may have only that one sample yet. The least sample comes down
        // to the network's delay as samples accumulate (a ping every heartbeat interval, then
        // every five): wait until it has on every link, then check every link.
        List<(LinkRtt Rtt, double ModelMs, string What)> Measured()
        {
            List<(LinkRtt, double, string)> links =
            [
                (p1.LinkRtts().First(r => r.RemoteId == 0), 80, "p1 to the coordinator"),
                (p2.LinkRtts().First(r => r.RemoteId == 0), 30, "p2 to the coordinator"),
                (overlay.Coordinator.LinkRtts().First(r => r.RemoteId == p1.Id && r.Link.StartsWith("peer", StringComparison.Ordinal)), 80, "the coordinator to p1"),
            ];
            // A link between the peers (in one direction or the other, per shard) when the plan made one.
            foreach (var rtt in p1.LinkRtts().Where(r => r.RemoteId == p2.Id).Concat(p2.LinkRtts().Where(r => r.RemoteId == p1.Id)))
                links.Add((rtt, 140, $"{rtt.Link} between the peers"));
            return links;
        }
        var measured = Measured();
        try
        {
            await Overlay.WaitUntilAsync(() => (measured = Measured()).All(m => m.Rtt.Min.TotalMilliseconds < MostLeastRtt(m.ModelMs)), "every link's least RTT is near the network's");
        }
        catch (TimeoutException)
        {
            // AssertRtt says which link.
        }
        foreach (var (rtt, modelMs, what) in measured) AssertRtt(rtt, modelMs, what);

        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(11)]
    public async Task Latency_aware_placement_gives_shorter_delays_from_the_source_than_blind_placement(int seed)
    {
        // 100 in CI; SHARDSTREAM_LATENCY_OVERLAY_PEERS sets another size for a measurement (docs/topology.md).
        int peers = int.TryParse(Environment.GetEnvironmentVariable("SHARDSTREAM_LATENCY_OVERLAY_PEERS"), out int size) && size > 0 ? size : 100;
        var model = new WorldLatencyModel(seed);
        // The two overlays are apart (each its own network) and built side by side.
        var building = BuildAsync(model, peers, latencyAware: false);
        var aware = await BuildAsync(model, peers, latencyAware: true);
        var blind = await building;
        output.WriteLine($"{model.Description}, {peers} peers, K=4 striped: blind mean {blind.Mean:0.#} ms p95 {blind.P95:0.#} ms; aware mean {aware.Mean:0.#} ms p95 {aware.P95:0.#} ms");
        output.WriteLine($"issue 12's figures: mean edge RTT {aware.MeanEdgeRtt:0.#} ms against blind {blind.MeanEdgeRtt:0.#} ({aware.MeanEdgeRtt / blind.MeanEdgeRtt:0.###} of it); p95 delay {1 - aware.P95 / blind.P95:P0} lower; mean RDP {aware.MeanRdp:0.##} against blind {blind.MeanRdp:0.##}; max depth {aware.MaxDepth} against blind {blind.MaxDepth}");
        output.WriteLine($"control-link RTT over the model (least sample): median {aware.MedianRttRatio:0.###}, worst {aware.WorstRttRatio:0.###}, least sample minus the model at most {aware.LowestRttExcessMs:0.#} ms");
        Assert.True(aware.Mean < blind.Mean, $"latency-aware mean source-to-peer delay {aware.Mean:0.#} ms is not below blind placement's {blind.Mean:0.#} ms");
        // Of issue 12's targets only this one holds at this size with no time to improve (the
        // others are printed above; docs/topology.md has them).
        Assert.True(aware.MaxDepth <= blind.MaxDepth + 1, $"latency-aware max depth {aware.MaxDepth} is more than one deeper than blind placement's {blind.MaxDepth}");
        // And this one: every joiner of the aware overlay measured (the coordinator at least), none
        // more than 16 nodes; the blind coordinator asks for no measurement.
        output.WriteLine($"nodes a joiner was asked to measure: {aware.LeastPings}-{aware.MostPings} (blind: {blind.MostPings})");
        Assert.InRange(aware.LeastPings, 1, 16);
        Assert.InRange(aware.MostPings, 1, 16);
        Assert.Equal(0, blind.MostPings);
        // Measured through the transport: never below the network's delay but for the timers' grain
        // (see AssertRtt), and at the median within 25 % of it once the least samples had time to
        // come down (BuildAsync).
        Assert.True(aware.LowestRttExcessMs >= -TimerGrainMs, $"a control link measured {-aware.LowestRttExcessMs:0.#} ms less than the model's RTT");
        Assert.True(aware.MedianRttRatio <= MostMedianRttRatio, $"the median control link measured {aware.MedianRttRatio:0.###} times the model's RTT");
        // Honest joiners checked against their handshakes (the path's RTT here, as the kernel's
        // SYN-ACK sample), and peers against the least RTT of their control links or the handshake's,
        // whichever is less until it has 16 (event 1681; ci127, ci128 and ci130 discounted an honest peer whose first
        // samples a loaded host inflated, 473 ms on a 146 ms path, before the handshake bounded them). A
        // coordinate fitted from at most 16 RTTs could claim a third of the joiner's RTT to the
        // coordinator (a CI run, seed 11: 10 of 100 did, 59 ms against 190 ms), and one moved by
        // its links' samples later as little (0-12 of 100 per overlay), so a peer holds its
        // coordinate at least at Vivaldi.SourceFloor (3/4) of the RTT it measured to the
        // coordinator (Vivaldi.HoldSource), and the coordinator discounts under 1/2 of its own
        // sample. The peer's sample may be up to the timers' grain (10 ms, TimerGrainMs) under the
        // path's on this network, and 3/4 of (h - 10) is at least h/2 for h >= 30 ms: no honest
        // peer at least 30 ms away can be discounted; a nearer one only by a sample the grain cut short.
        output.WriteLine($"discounted at the join: {aware.JoinDiscounts.Length}; by control-link samples later (event 1681): {aware.LaterDiscounts.Length}");
        foreach (var d in aware.JoinDiscounts) output.WriteLine($"joiner {d.Id}: claimed {d.ClaimedMs:0.#} ms, handshake {d.MeasuredMs:0.#} ms, the model's RTT {d.ModelMs:0.#} ms");
        foreach (var d in aware.LaterDiscounts) output.WriteLine($"peer {d.Id}: claimed {d.ClaimedMs:0.#} ms, least control-link RTT {d.MeasuredMs:0.#} ms, the model's RTT {d.ModelMs:0.#} ms");
        Assert.All(aware.JoinDiscounts, d => Assert.Equal(d.ModelMs, d.MeasuredMs, 0.1));
        Assert.All(aware.JoinDiscounts, d => Assert.True(d.ModelMs < 30, $"honest joiner {d.Id}, {d.ModelMs:0.#} ms from the coordinator, discounted at its join: it claimed {d.ClaimedMs:0.#} ms"));
        Assert.All(aware.LaterDiscounts, d => Assert.True(d.ModelMs < 30, $"honest peer {d.Id}, {d.ModelMs:0.#} ms from the coordinator, discounted by its control link's least RTT {d.MeasuredMs:0.#} ms: it claimed {d.ClaimedMs:0.#} ms"));
        Assert.Equal(0, aware.JoinRttsRaised);
        // An honest peer whose coordinate is badly fitted can be held where two of its children
        // measured it (event 1688): a hold must bring the plan nearer what was measured, never farther.
        output.WriteLine($"held by their children's RTTs (event 1688): {aware.WitnessHolds.Length}");
        foreach (var line in aware.WitnessHolds) output.WriteLine(line);
        WitnessHoldAssert.EachBringsThePlanNearerWhatWasMeasured(aware.WitnessHolds);
    }

    /// <summary>The median control link's least RTT over the model's is at most this (BuildAsync waits for it).</summary>
    private const double MostMedianRttRatio = 1.25;

    private sealed record Discount(int Id, double ClaimedMs, double MeasuredMs, double ModelMs);

    private sealed record Figures(double Mean, double P95, double LowestRttExcessMs, double MedianRttRatio, double WorstRttRatio, Discount[] JoinDiscounts, int JoinRttsRaised, Discount[] LaterDiscounts, double MeanEdgeRtt, int MaxDepth, double MeanRdp, string[] WitnessHolds, int LeastPings, int MostPings);

    /// <summary>
    /// Builds an overlay of <paramref name="count"/> peers on hosts p1..pN whose delays come from
    /// <paramref name="model"/> (the coordinator is its node 0), joining in waves, streams through it,
    /// checks that every peer wrote every byte, and measures the plan's delays under the model.
    /// </summary>
    private static async Task<Figures> BuildAsync(WorldLatencyModel model, int count, bool latencyAware)
    {
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 4, configure: o => o with { LatencyAware = latencyAware }, loggers: log.Factory);
        overlay.Network.UseLatencyModel(["coord", .. Enumerable.Range(1, count).Select(i => $"p{i}")], model.OneWay);
        overlay.StartStreaming();
        var hostOf = new Dictionary<int, int>();
        // Each joiner's own loggers count the nodes it was asked to measure (issue 12's pings per joining peer).
        var pings = new List<JoinPings>();
        for (int first = 1; first <= count; first += 10)
        {
            var wave = Enumerable.Range(first, Math.Min(10, count - first + 1)).Select(async i =>
            {
                var counted = new JoinPings();
                lock (pings) pings.Add(counted);
                var peer = await overlay.JoinHostAsync(i, TimeSpan.FromSeconds(2), counted);
                lock (hostOf) hostOf[peer.Id] = i;
            });
            await Task.WhenAll(wave);
        }
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, 5));
        // Every sample also holds what this process added to the virtual network's own delays: on a
        // loaded machine its timers end late and their continuations wait for the thread pool
        // (measured at 40-80 CPU burners: 4-10 ms late each way at the median, up to 300 ms; until
        // 2026-12-06 a frame sent while an earlier one was still delayed on that link also waited
        // for the rest of that delay, docs/topology.md). The least sample comes down as samples
        // accumulate (at 40-80 burners, before that fix, from 1.20-1.24 times the model at the
        // median for the least of two to 1.11-1.19 for the least of four); a CI run (2 cores, both test projects at once) had
        // 1.333 when every peer had two (the last wave; earlier ones had more). So wait, as the
        // coordinator does before it takes a control link's least sample for a peer's RTT to it,
        // for Coordinator.SourceRttSamples on every peer, then, while pings go on, until the
        // median is within the bound (the theory asserts it, at the deadline if not).
        List<(double Min, double Model)>? Measured()
        {
            var least = overlay.Peers.Select(p => (Rtt: p.Peer.LinkRtts().FirstOrDefault(r => r.RemoteId == 0), Model: model.RttMs(0, HostNumber(p.Host)))).ToList();
            return least.Any(m => m.Rtt is not { Samples: >= Coordinator.SourceRttSamples }) ? null : [.. least.Select(m => (m.Rtt!.Min.TotalMilliseconds, m.Model))];
        }
        static double MedianRatio(List<(double Min, double Model)> links) => links.Select(m => m.Min / m.Model).Order().ElementAt(links.Count / 2);
        List<(double Min, double Model)>? measured = null;
        await Overlay.WaitUntilAsync(() => (measured = Measured()) is not null, $"every peer has {Coordinator.SourceRttSamples} RTT samples of its control link");
        // The blind build's ratio is not asserted, so not waited for either (its polling and pings
        // would only load the machine the aware build is measured on).
        if (latencyAware)
        {
            try
            {
                await Overlay.WaitUntilAsync(() => (measured = Measured() ?? measured!) is var links && MedianRatio(links) <= MostMedianRttRatio, "the median control link's least RTT is near the model's");
            }
            catch (TimeoutException)
            {
                // Asserted by the theory.
            }
        }
        var leastRtts = measured!;
        var ratios = leastRtts.Select(m => m.Min / m.Model).Order().ToArray();
        double lowestExcess = leastRtts.Min(m => m.Min - m.Model);
        var snapshot = overlay.Coordinator.Snapshot();
        // A peer the coordinator took for dead joins again with a new id (ci131, load average 40-65:
        // peer 91 was no key here): every id a peer had stands for its host, the ids it has now and
        // every id the coordinator logged it joining with (one it had only between two looks here).
        void NoteIds()
        {
            lock (overlay.Peers)
                foreach (var p in overlay.Peers) hostOf[p.Peer.Id] = HostNumber(p.Host);
            foreach (var line in log.Lines)
                if (JoinedLine().Match(line.Message) is { Success: true } joined)
                    hostOf[int.Parse(joined.Groups[1].Value, CultureInfo.InvariantCulture)] = HostNumber(joined.Groups[2].Value);
        }
        NoteIds();
        try
        {
            // 100 peers, paths of up to four ocean crossings, on a shared 2-core machine: a generous deadline.
            await overlay.EndAsync(TimeSpan.FromMinutes(3));
        }
        catch (TimeoutException)
        {
            var behind = overlay.Peers.Where(p => !p.Run.IsCompleted).Select(p => $"peer {p.Peer.Id} ({p.Host}): wrote {p.Output.Length} of {overlay.Written.Length - p.Peer.StartOffset}");
            Assert.Fail($"the coordinator did not finish: {string.Join("; ", behind)}");
        }
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
        NoteIds();

        // Each peer's delay from the source: the slowest of its shards' paths, edge by edge under the model.
        var byId = snapshot.Nodes.ToDictionary(n => n.Id);
        int Host(int id) => id == 0 ? 0 : hostOf[id];
        var peers = snapshot.Nodes.Where(n => n.Id != 0).ToArray();
        var worst = peers.ToDictionary(n => n.Id, n => Enumerable.Range(0, snapshot.ShardCount).Max(s =>
        {
            double delay = 0;
            for (var node = n; node.Id != 0; node = byId[node.Parents[s]]) delay += model.RttMs(Host(node.Parents[s]), Host(node.Id)) / 2;
            return delay;
        }));
        var delays = worst.Values.Order().ToArray();
        Assert.Equal(count, delays.Length);
        // Issue 12's other figures, as the simulator's JSON gives them (LatencyMetrics): every
        // edge's RTT, the deepest tree, and the mean over peers of the delay from the source in the
        // slowest tree over the direct one-way delay (RDP).
        double meanEdge = peers.SelectMany(n => Enumerable.Range(0, snapshot.ShardCount).Select(s => model.RttMs(Host(n.Parents[s]), Host(n.Id)))).Average();
        int maxDepth = peers.Max(n => Enumerable.Range(0, snapshot.ShardCount).Max(s =>
        {
            int depth = 0;
            for (var node = n; node.Id != 0; node = byId[node.Parents[s]]) depth++;
            return depth;
        }));
        double meanRdp = peers.Average(n => worst[n.Id] / (model.RttMs(0, Host(n.Id)) / 2));
        // Events 1684 and 1685 (a joiner's coordinate or its RTT to the coordinator taken as its handshake's), and 1681.
        var joinDiscounts = log.Lines.Select(l => JoinDiscountLine().Match(l.Message)).Where(m => m.Success).Select(m =>
        {
            int id = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            return new Discount(id, double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture), model.RttMs(0, hostOf[id]));
        }).ToArray();
        int joinRttsRaised = log.Lines.Count(l => l.Message.Contains("to the coordinator, whose handshake with it took", StringComparison.Ordinal));
        var laterDiscounts = log.Lines.Select(l => LaterDiscountLine().Match(l.Message)).Where(m => m.Success).Select(m =>
        {
            int id = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            return new Discount(id, double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture), model.RttMs(0, hostOf[id]));
        }).ToArray();
        var witnessHolds = log.Lines.Where(l => l.Message.Contains("claims a coordinate that puts it", StringComparison.Ordinal)).Select(l => l.Message).ToArray();
        var (leastPings, mostPings) = JoinPings.Range(pings);
        return new Figures(delays.Average(), delays[(int)Math.Ceiling(0.95 * delays.Length) - 1], lowestExcess, ratios[ratios.Length / 2], ratios[^1], joinDiscounts, joinRttsRaised, laterDiscounts, meanEdge, maxDepth, meanRdp, witnessHolds, leastPings, mostPings);
    }

    /// <summary>The number of host "p<i>i</i>".</summary>
    private static int HostNumber(string host) => int.Parse(host.AsSpan(1), CultureInfo.InvariantCulture);

    [GeneratedRegex(@"^peer (\d+) \((p\d+):1\) joined ")]
    private static partial Regex JoinedLine();

    [GeneratedRegex(@"^joiner (\d+) claims a coordinate ([\d.]+) ms from the coordinator, whose handshake with it took ([\d.]+) ms")]
    private static partial Regex JoinDiscountLine();

    [GeneratedRegex(@"^peer (\d+) claims a coordinate ([\d.]+) ms from the coordinator, which measured it at least ([\d.]+) ms away: the plan holds it [\d.]+ ms away \(its height raised")]
    private static partial Regex LaterDiscountLine();

    /// <summary>
    /// The least sample is the network's delay and what the machine added: never below the model
    /// (a pong's hold at the other side is taken off, never more) but for the grain of the timers
    /// that make the virtual network's delays (.NET's timers count <c>Environment.TickCount64</c>,
    /// CLOCK_MONOTONIC_COARSE on Linux: one 4 ms jiffy, so a delay may end up to 4 ms early each
    /// way), and on an idle path close to it.
    /// </summary>
    /// <summary>
    /// How much shorter than asked the virtual network's two delays of a round trip may be: 5 ms
    /// each way, the 4 ms jiffy and the timer's whole milliseconds (a delay of 40.9 ms is a timer of
    /// 40 ms; the world model's RTTs are fractional). With 8 (no truncation counted) a CI run
    /// failed on seed 3: "a control link measured 8.2 ms less than the model's RTT".
    /// </summary>
    private const double TimerGrainMs = 10;

    private void AssertRtt(LinkRtt rtt, double modelMs, string what)
    {
        output.WriteLine($"{what}: network {modelMs} ms, least {rtt.Min.TotalMilliseconds:0.#} ms, SRTT {rtt.Smoothed.TotalMilliseconds:0.#} ms, RTTVAR {rtt.Variation.TotalMilliseconds:0.#} ms, {rtt.Samples} samples");
        Assert.True(rtt.Min.TotalMilliseconds >= modelMs - TimerGrainMs, $"{what}: least RTT {rtt.Min.TotalMilliseconds:0.#} ms is below the network's {modelMs} ms");
        Assert.True(rtt.Smoothed.TotalMilliseconds >= modelMs - TimerGrainMs, $"{what}: SRTT {rtt.Smoothed.TotalMilliseconds:0.#} ms is below the network's {modelMs} ms");
        Assert.True(rtt.Min.TotalMilliseconds < MostLeastRtt(modelMs), $"{what}: least RTT {rtt.Min.TotalMilliseconds:0.#} ms of {rtt.Samples} samples, the network's is {modelMs} ms");
    }

    /// <summary>The least sample of a link is at most this over a network whose RTT is <paramref name="modelMs"/>.</summary>
    private static double MostLeastRtt(double modelMs) => modelMs * 1.5 + 20;
}

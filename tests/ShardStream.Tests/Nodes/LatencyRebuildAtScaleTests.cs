using System.Diagnostics;
using System.Text.RegularExpressions;
using ShardStream.Nodes;
using ShardStream.Simulation;
using ShardStream.Topology;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The rebuild by regions as the CLI's coordinator runs it by default (from bb3d80c; at K = 1 only
/// with <c>--latency-rebuild</c> from fc125ab, for what this measured, until its plans for binary
/// trees kept their depth bound: docs/topology.md, "The rebuild at 1, 2 and 3 shards"), with real nodes:
/// docs/topology.md, "With real nodes at 1,000 peers". In-process peers on a
/// <see cref="ShardStream.Transport.VirtualNetwork"/> whose delays come from the world model of
/// the seed, and the coordinator's options as <c>shardstream coordinator --latency-rebuild</c>
/// builds them (CoordinatorCommand): K = 1 (binary), the upload (K+1)/K, a peer believed up to 4,
/// a 5 s heartbeat timeout (1 s heartbeats), a 30 s / 64 MiB replay window, latency-aware, the
/// rebuild on from <see cref="Planner.RebuildMinPeers"/> peers, a round of moves a second capped
/// at 4 or <see cref="Planner.RebuildMovesShare"/> of the peers (<see cref="Planner.MovesCap"/>).
/// A measurement of minutes: skipped unless SHARDSTREAM_MEASURE=1. SHARDSTREAM_REBUILD_PEERS
/// sets the peers (1,000 unless set; below 1,000 the fewest for a rebuild is lowered to them, a
/// smoke run only), SHARDSTREAM_REBUILD_SHARE the share (the CLI's 1% unless set),
/// SHARDSTREAM_REBUILD_SHARDS K (the CLI's 1 unless set).
/// What a user would check: every peer writes exactly the source's bytes, the plan keeps every
/// node within its budget and the trees acyclic at every sample (the depth is printed, with the
/// latency-blind planner's), a rebuild is planned and carried out, no round moves more than the cap (a rebuild's
/// exchange may spend seconds saved before it: never more than the cap a second over the
/// rebuild's rounds), and the mean edge RTT, source delay and RDP before and after are printed.
/// </summary>
[Collection(ManyNodesCollection.Name)]
public sealed partial class LatencyRebuildAtScaleTests(ITestOutputHelper output)
{
    [GeneratedRegex(@"^round (\d+) of latency moves: moving (\d+) peer edge")]
    private static partial Regex RoundLine();

    [MeasurementTheory("9-25 min a seed at 1,000 peers")]
    [InlineData(3)]
    [InlineData(11)]
    public async Task The_CLIs_default_rebuild_with_1000_real_peers_loses_no_byte_and_keeps_budgets_depth_and_the_cap(int seed)
    {
        static string? Env(string name) => Environment.GetEnvironmentVariable(name);
        int count = int.TryParse(Env("SHARDSTREAM_REBUILD_PEERS"), out int n) && n > 0 ? n : 1000;
        double share = double.TryParse(Env("SHARDSTREAM_REBUILD_SHARE"), System.Globalization.CultureInfo.InvariantCulture, out double s) && s > 0 ? s : Planner.RebuildMovesShare;
        int shards = int.TryParse(Env("SHARDSTREAM_REBUILD_SHARDS"), out int k) && k > 0 ? k : 1;
        int minPeers = Math.Min(count, Planner.RebuildMinPeers);
        const int floor = 4;
        int cap = Planner.MovesCap(floor, share, count, minPeers);
        var clock = Stopwatch.StartNew();
        var model = new WorldLatencyModel(seed);
        var topology = shards switch { 1 => TopologyKind.Binary, 2 => TopologyKind.Tessellated, _ => TopologyKind.Striped };
        var blind = ShardStream.Simulation.Simulation.Run(new SimulationOptions(count, shards, topology, (shards + 1.0) / shards, Seed: seed, Latency: model, LatencyAware: true)).LatencyBlind!;
        var coordinatorLog = new LogCapture();
        // As CoordinatorCommand builds them with no flag but --listen (CommonOptions.Apply: the
        // replay window and the heartbeats; the library's defaults are the CLI's there).
        await using var overlay = await Overlay.StartAsync(shards: shards, heartbeatTimeout: TimeSpan.FromSeconds(5), configure: o => o with
        {
            MaxPeerUpload = 4,
            LatencyAware = true,
            LatencyMovesPerSecond = floor,
            LatencyRebuild = true,
            LatencyMovesShare = share,
            LatencyRebuildMinPeers = minPeers,
            ReplayWindowAge = TimeSpan.FromSeconds(30),
            ReplayWindowBytes = 64L * 1024 * 1024,
        }, loggers: coordinatorLog.Factory);
        overlay.Network.UseLatencyModel(["coord", .. Enumerable.Range(1, count).Select(i => $"p{i}")], model.OneWay);
        overlay.StartStreaming();

        // A live source: 2 kB every 250 ms (64 kbit/s, so that 1,000 peers' copies of the whole
        // stream fit in memory) from the first join to the end.
        var data = Overlay.RandomBytes(8_000_000, seed);
        int written = 0;
        using var stopWriting = new CancellationTokenSource();
        var writer = Task.Run(async () =>
        {
            while (!stopWriting.IsCancellationRequested && written < data.Length - 2_000)
            {
                await overlay.WriteAsync(data.AsMemory(written, 2_000).ToArray());
                written += 2_000;
                try { await Task.Delay(250, stopWriting.Token); } catch (OperationCanceledException) { }
            }
        });
        Task<Peer> JoinAsync(int i) => overlay.JoinHostAsync(i, TimeSpan.FromSeconds(1));

        // All but the last peer join in waves of 20; leaf moves run until every parent link has
        // the samples a rebuild fits its coordinates to (at most 3 minutes), and the last join
        // makes the overlay big enough for a rebuild.
        for (int first = 1; first < count; first += 20)
            await Task.WhenAll(Enumerable.Range(first, Math.Min(20, count - first)).Select(JoinAsync));
        var joined = clock.Elapsed;
        // With K = 1 the coordinator's children have no parent link a peer measures
        // (Overlay.EveryParentLinkMeasured would wait for them forever): every link there is.
        bool Measured()
        {
            var underSourceOnly = overlay.Coordinator.Snapshot().Nodes.Where(n => n.Id != 0 && n.Parents.All(p => p == 0)).Select(n => n.Id).ToHashSet();
            lock (overlay.Peers)
                return overlay.Peers.All(p => underSourceOnly.Contains(p.Peer.Id)
                    || p.Peer.ParentRttReport() is { Count: > 0 } report && report.All(r => r.Samples >= Planner.ImproveMinSamples));
        }
        var measuring = DateTime.UtcNow + TimeSpan.FromMinutes(3);
        while (!Measured() && DateTime.UtcNow < measuring) await Task.Delay(500);
        output.WriteLine($"{count - 1} peers joined in {joined.TotalSeconds:0} s; every parent link measured: {Measured()} after {(clock.Elapsed - joined).TotalSeconds:0} s more; load average {LoadAverage()}");
        output.WriteLine($"{model.Description}, {count} peers, K={shards} {topology}, cap {cap} a second (floor {floor}, share {share:0.###}, from {minPeers} peers): "
            + $"blind edge RTT {blind.MeanEdgeRttMs:0.#} ms, delay {blind.MeanSourceDelayMs:0.#} ms, RDP {blind.MeanRdp:0.##}, depth {blind.MaxDepth}");

        using var beforeRead = new ManualResetEventSlim();
        overlay.Coordinator.RebuildPlanning = (snapshot, token) =>
        {
            beforeRead.Wait(token);
            return snapshot.Plan(token);
        };
        var last = await JoinAsync(count);
        var beforeSnapshot = overlay.Coordinator.Snapshot();
        beforeRead.Set();
        var violations = new List<string>();
        Check(beforeSnapshot, "before");
        var before = Report("before the rebuild", beforeSnapshot);
        long roundsAtStart = overlay.Coordinator.LatencyMoveRounds;
        long movesAtStart = overlay.Coordinator.LatencyMoves;

        // Until the first rebuild is done (at most 25 minutes), the stream flowing; the plan
        // checked every second.
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(25);
        int maxDepthDuring = 0, samples = 0;
        while (overlay.Coordinator.LatencyRebuilds < 1 && DateTime.UtcNow < deadline)
        {
            var snapshot = overlay.Coordinator.Snapshot();
            Check(snapshot, $"sample {samples++}");
            maxDepthDuring = Math.Max(maxDepthDuring, snapshot.MaxDepth);
            if (samples % 60 == 0) output.WriteLine($"{clock.Elapsed.TotalMinutes:0.0} min: {overlay.Coordinator.LatencyMoves - movesAtStart} moves in {overlay.Coordinator.LatencyMoveRounds - roundsAtStart} rounds, depth {snapshot.MaxDepth}, load average {LoadAverage()}");
            await Task.Delay(1000);
        }
        int rebuilds = overlay.Coordinator.LatencyRebuilds;
        long rounds = overlay.Coordinator.LatencyMoveRounds - roundsAtStart, moved = overlay.Coordinator.LatencyMoves - movesAtStart;
        var afterSnapshot = overlay.Coordinator.Snapshot();
        Check(afterSnapshot, "after");
        var after = Report($"after ({rebuilds} rebuild(s), {moved} moves in {rounds} rounds)", afterSnapshot);
        foreach (var l in coordinatorLog.Lines.Where(l => l.Message.Contains("rebuild", StringComparison.OrdinalIgnoreCase)).TakeLast(10)) output.WriteLine(l.Message);

        // The rounds of moves since the last join, as logged (event 1677): each at most the cap,
        // or with an exchange that spent seconds saved before it, never more than the cap a round
        // over the rounds since the last join.
        var roundsMoved = coordinatorLog.Lines.Select(l => RoundLine().Match(l.Message)).Where(m => m.Success)
            .Select(m => (Round: long.Parse(m.Groups[1].Value), Count: int.Parse(m.Groups[2].Value))).Where(r => r.Round > roundsAtStart).ToList();
        int most = roundsMoved.Count == 0 ? 0 : roundsMoved.Max(r => r.Count);
        long sum = 0;
        int overCap = 0;
        foreach (var r in roundsMoved)
        {
            sum += r.Count;
            if (r.Count > cap) overCap++;
            if (sum > cap * (r.Round - roundsAtStart)) violations.Add($"{sum} moves by round {r.Round - roundsAtStart} after the last join, more than {cap} a round");
        }
        output.WriteLine($"moves a round: at most {most} (cap {cap}), {overCap} round(s) above the cap, {roundsMoved.Count} rounds with moves, {sum} moves, {rounds} rounds, max depth while under way {maxDepthDuring}");

        await stopWriting.CancelAsync();
        await writer;
        await overlay.EndAsync(TimeSpan.FromMinutes(5));
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
        output.WriteLine($"every peer wrote the source's bytes ({written:N0} in all); {clock.Elapsed.TotalMinutes:0.0} min in all; load average {LoadAverage()}");
        output.WriteLine($"table row: | {count}, {seed}, K={shards}, cap {cap} | {before.Edge:0.#}, {before.Delay:0.#}, {before.Rdp:0.##}, {before.Depth} | "
            + $"{after.Edge:0.#}, {after.Delay:0.#}, {after.Rdp:0.##}, {after.Depth} | {moved} in {rounds} s, at most {most} | {blind.MaxDepth}, {maxDepthDuring} |");

        if (rebuilds < 1) violations.Add($"no rebuild carried out in 25 minutes after the last join ({moved} moves)");
        if (after.Peers != count) violations.Add($"{after.Peers} peers in the plan, not {count}");
        // Not asserted: the depth against blind's + 1 (printed). At K = 1 the rebuild's own plan was
        // deeper until 2026-12-06: 11 against blind's 9 at 1,000 peers, seeds 3 and 11, here and in
        // the simulator (docs/topology.md, "With real nodes at 1,000 peers", and "The rebuild at 1,
        // 2 and 3 shards" for the cause and the fix).
        output.WriteLine($"{violations.Count} violation(s) of budgets, trees or the cap");
        foreach (var v in violations.Take(20)) output.WriteLine(v);
        Assert.True(violations.Count == 0, string.Join("; ", violations.Take(10)));

        void Check(OverlaySnapshot snapshot, string when)
        {
            var byId = snapshot.Nodes.ToDictionary(n => n.Id);
            var children = new Dictionary<int, int>();
            foreach (var node in snapshot.Nodes.Where(n => n.Id != 0))
                foreach (int parent in node.Parents) children[parent] = children.GetValueOrDefault(parent) + 1;
            foreach (var node in snapshot.Nodes)
            {
                if (children.GetValueOrDefault(node.Id) > node.Budget) violations.Add($"{when}: node {node.Id} has {children[node.Id]} children in the plan, budget {node.Budget}");
                if (node.Id == 0) continue;
                for (int sh = 0; sh < snapshot.ShardCount; sh++)
                {
                    int hops = 0;
                    for (var at = node; at.Id != 0;)
                    {
                        if (!byId.TryGetValue(at.Parents[sh], out var up)) { violations.Add($"{when}: node {at.Id}'s parent {at.Parents[sh]} in shard {sh} is not in the plan"); break; }
                        if (++hops > snapshot.Nodes.Count) { violations.Add($"{when}: a cycle through node {node.Id} in shard {sh}"); break; }
                        at = up;
                    }
                }
            }
        }

        Figures Report(string when, OverlaySnapshot snapshot)
        {
            var hostOf = new Dictionary<int, int>();
            lock (overlay.Peers)
                foreach (var p in overlay.Peers) hostOf[p.Peer.Id] = int.Parse(p.Host.AsSpan(1));
            var (peers, worst, edge, rdp) = ModelPricing.Price(snapshot, model, id => id == 0 ? 0 : hostOf[id]);
            var figures = new Figures(peers.Length, edge, worst.Average(), rdp, snapshot.MaxDepth);
            output.WriteLine($"{when}, {clock.Elapsed.TotalMinutes:0.0} min: {peers.Length} peers, mean edge RTT {edge:0.#} ms, mean source delay {figures.Delay:0.#} ms, mean RDP {rdp:0.##}, depth {snapshot.MaxDepth}");
            return figures;
        }
    }

    private sealed record Figures(int Peers, double Edge, double Delay, double Rdp, int Depth);

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";
}

using System.CommandLine;
using System.Globalization;
using System.Text;
using ShardStream.Simulation;
using ShardStream.Topology;
using OverlaySimulation = ShardStream.Simulation.Simulation;

namespace ShardStream.Cli;

/// <summary>
/// <c>shardstream simulate</c>: builds an overlay of N peers through the real planner (no network)
/// and prints depth, upload, throughput and memory, optionally after churn and a branch failure.
/// </summary>
internal static class SimulateCommand
{
    public static Command Create()
    {
        var peers = new Option<int>("--peers") { Description = "Number of peers that join.", DefaultValueFactory = _ => 1000 };
        var shards = new Option<int?>("--shards") { Description = "Shard count K (default: binary 1, tessellated 2, striped 8)." };
        var topology = new Option<string>("--topology") { Description = "binary | tessellated | striped.", DefaultValueFactory = _ => "striped" };
        topology.AcceptOnlyFromAmong("binary", "tessellated", "striped");
        var upload = new Option<double?>("--upload") { Description = "Each peer's upload as a multiple of the stream rate (default (K+1)/K); budget = floor(X*K) shard-streams, as the nodes count it." };
        var sourceUpload = new Option<double?>("--source-upload") { Description = "The source's upload as a multiple of the stream rate (default (K+1)/K)." };
        var seed = new Option<int>("--seed") { Description = "Seed of the planner and of the simulation's random choices.", DefaultValueFactory = _ => 0 };
        var churn = new Option<double>("--churn") { Description = "Fraction of joins followed by the leave of a random peer, in [0, 1).", DefaultValueFactory = _ => 0 };
        var uploadMix = new Option<string?>("--upload-mix") { Description = "Each peer draws its upload from upload:fraction pairs summing to 1, e.g. 0:0.6,2.5:0.4 (60% upload nothing, 40% upload 2.5x); instead of --upload." };
        var failBranch = new Option<double>("--fail-branch") { Description = "After the build, fail at once the subtree(s) holding about this fraction of peers, and repair.", DefaultValueFactory = _ => 0 };
        var latency = new Option<string>("--latency") { Description = "RTT model: none, world (ten regions with access links, seeded) or matrix:FILE (N, then N rows of N RTTs in ms, -1 unmeasured); see docs/topology.md.", DefaultValueFactory = _ => "none" };
        var latencyAware = new Option<string?>("--latency-aware") { Description = "Place by latency (default: true when a latency model is on). The report compares with the other planner either way." };
        latencyAware.AcceptOnlyFromAmong("true", "false"); // a string: see the coordinator's
        var rdpBreakdown = new Option<bool>("--rdp-breakdown") { Description = "With --latency world (refused without it): print to stderr where each planner's mean RDP comes from (the slowest tree's path split into access and core delay, peers of the source's region apart), a lower bound of it from the model, and the mean RDP of an offline construction from the model's true positions within the same budgets (an upper bound of the best)." };
        var improveSeconds = new Option<int>("--improve-seconds") { Description = "With a latency model (refused without one): after the build, this many simulated seconds of the coordinator's latency moves (one ImproveLatency call a second), then the aware overlay is measured again (reported apart; the build's figures are unchanged).", DefaultValueFactory = _ => 0 };
        var latencyMoves = new Option<int>("--latency-moves") { Description = "The cap of those moves per second (as the coordinator's --latency-moves): default 4, or with the rebuild on (the default) and at least --latency-rebuild-min-peers peers, 1% of the peers; a number given here is a fixed cap. Refused without a model and --improve-seconds.", DefaultValueFactory = _ => 4 };
        var latencyRebuild = new Option<bool>("--latency-rebuild") { Description = "During --improve-seconds, the coordinator's rebuild of every tree by regions first (as the coordinator's --latency-rebuild: on by default; from 1,000 peers, with the moves' cap at 1% of the peers unless --latency-moves is given; --latency-rebuild false turns it off and leaves the cap at 4); leaf moves take the seconds it leaves unused. Given, it is refused without a model and --improve-seconds, or with --latency-moves 0 (docs/topology.md, \"The rebuild by regions\").", DefaultValueFactory = _ => true };
        var latencyRebuildMinPeers = new Option<int>("--latency-rebuild-min-peers") { Description = $"With the rebuild on (refused with --latency-rebuild false, and where the rebuild does nothing): the fewest peers for a rebuild to be planned (as the coordinator's; default {Planner.RebuildMinPeers}, at least {Planner.RebuildLeastPeers}).", DefaultValueFactory = _ => Planner.RebuildMinPeers };
        var json = new Option<bool>("--json") { Description = "Print one JSON object with every figure (and nothing else on stdout)." };

        var command = new Command("simulate", "Simulate an overlay of N peers through the planner and report depth, upload, speed and memory.");
        foreach (var option in new Option[] { peers, shards, topology, upload, uploadMix, sourceUpload, seed, churn, failBranch, latency, latencyAware, rdpBreakdown, improveSeconds, latencyMoves, latencyRebuild, latencyRebuildMinPeers, json })
        {
            command.Options.Add(option);
        }

        command.SetAction(parseResult =>
        {
            var kind = Enum.Parse<TopologyKind>(parseResult.GetValue(topology)!, ignoreCase: true);
            // K: --shards, or the topology's own (8 for striped trees).
            var k = parseResult.GetValue(shards) ?? kind switch
            {
                TopologyKind.Binary => 1,
                TopologyKind.Tessellated => 2,
                _ => 8,
            };
            if (k is < 1 or > Planner.MaxShardCount)
            {
                Console.Error.WriteLine($"shardstream: error: --shards must be between 1 and {Planner.MaxShardCount}, got {k}");
                return 1;
            }
            if (parseResult.GetValue(upload) is not null && parseResult.GetValue(uploadMix) is not null)
            {
                Console.Error.WriteLine("shardstream: error: give either --upload or --upload-mix, not both");
                return 1;
            }

            UploadMix? mix;
            try
            {
                mix = parseResult.GetValue(uploadMix) is { } text ? UploadMix.Parse(text) : null;
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"shardstream: error: --upload-mix: {e.Message}");
                return 1;
            }

            LatencyModel? model;
            try
            {
                model = LatencyModel.Parse(parseResult.GetValue(latency)!, parseResult.GetValue(seed), File.ReadAllText);
            }
            catch (Exception e) when (e is FormatException or IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"shardstream: error: --latency: {e.Message}");
                return 1;
            }

            if (parseResult.GetValue(latencyAware) == "true" && model is null)
            {
                Console.Error.WriteLine("shardstream: error: --latency-aware true needs a latency model (--latency world or matrix:FILE)");
                return 1;
            }

            if (InertFlag(parseResult, model) is { } inert)
            {
                Console.Error.WriteLine($"shardstream: error: {inert}");
                return 1;
            }

            // On by default, where it can run: a model, seconds to move in, and moves.
            bool rebuild = RebuildOff(parseResult, model) is null;
            var options = new SimulationOptions(
                parseResult.GetValue(peers),
                k,
                kind,
                parseResult.GetValue(upload) ?? (k + 1.0) / k,
                parseResult.GetValue(sourceUpload),
                parseResult.GetValue(seed),
                parseResult.GetValue(churn),
                parseResult.GetValue(failBranch),
                mix,
                model,
                parseResult.GetValue(latencyAware) is { } aware ? aware == "true" : null,
                parseResult.GetValue(rdpBreakdown) ? Console.Error : null,
                parseResult.GetValue(improveSeconds),
                parseResult.GetValue(latencyMoves),
                rebuild,
                parseResult.GetValue(latencyRebuildMinPeers),
                CommonOptions.MovesShare(parseResult, latencyMoves, rebuild));
            try
            {
                var report = OverlaySimulation.Run(options);
                Console.Out.Write(parseResult.GetValue(json) ? SimulateJson.Format(report) + "\n" : Format(report));
                return 0;
            }
            catch (Exception e) when (e is ArgumentException or PlacementException)
            {
                Console.Error.WriteLine($"shardstream: error: {e.Message}");
                return 1;
            }
        });
        return command;

        // A flag that acts only through another is refused without it (it did nothing): the
        // breakdown reads the world model's regions, the seconds of moves need a model to measure
        // them by, and the moves' cap and the rebuild act only during those seconds.
        string? InertFlag(ParseResult parse, LatencyModel? model)
        {
            const string AnyModel = "without --latency world or matrix:FILE";
            bool improving = parse.GetValue(improveSeconds) != 0;
            if (parse.GetValue(rdpBreakdown) && model is not WorldLatencyModel) return CommonOptions.NoEffect("--rdp-breakdown", "without --latency world");
            if (improving && model is null) return CommonOptions.NoEffect("--improve-seconds", AnyModel);
            // What the moves' flags lack, if anything: a model, or the seconds to move in.
            string? lacking = model is null ? AnyModel : !improving ? "without --improve-seconds" : null;
            if (lacking is not null && CommonOptions.Given(parse, latencyMoves)) return CommonOptions.NoEffect("--latency-moves", lacking);
            if (lacking is not null && CommonOptions.Given(parse, latencyRebuild) && parse.GetValue(latencyRebuild)) return CommonOptions.NoEffect("--latency-rebuild", lacking);
            return CommonOptions.RebuildWithoutMoves(parse, latencyRebuild, latencyMoves)
                ?? CommonOptions.RebuildMinPeersWithoutRebuild(parse, latencyRebuildMinPeers, RebuildOff(parse, model));
        }

        // Why the rebuild (on by default) does nothing in this command line, or null when it runs.
        string? RebuildOff(ParseResult parse, LatencyModel? model) =>
            CommonOptions.RebuildOff(parse, latencyRebuild, latencyMoves,
                model is null ? "without --latency world or matrix:FILE" : parse.GetValue(improveSeconds) == 0 ? "without --improve-seconds" : null);
    }

    private static string Format(SimulationReport report)
    {
        var o = report.Options;
        var text = new StringBuilder();
        void Line(string label, string value) => text.Append(CultureInfo.InvariantCulture, $"{label,-26}{value}\n");
        static string Mib(long bytes) => (bytes / 1048576.0).ToString("F0", CultureInfo.InvariantCulture) + " MiB";
        static string F(double value, int digits = 2) => value.ToString("F" + digits, CultureInfo.InvariantCulture);

        Line("topology", $"{o.Topology.ToString().ToLowerInvariant()}, K = {o.ShardCount}, seed {o.Seed}");
        Line("peers", $"{report.PeerCount:N0} live ({report.Joins:N0} joins, {report.Leaves:N0} churn leaves, {report.ChurnEvicted} evicted)");
        if (o.UploadMix is { } mix)
        {
            Line("upload mix", $"{mix} (mean {F(mix.MeanUpload)}x stream)");
            Line("peer budgets drawn", string.Join(", ", report.BudgetMix.Select(b =>
                $"{b.Budget} ({F((double)b.Budget / o.ShardCount)}x): {b.Peers:N0}")));
        }
        else
        {
            Line("peer budget", $"{report.PeerBudget} shard-streams ({F((double)report.PeerBudget / o.ShardCount)}x stream)");
        }

        Line("evictions", $"{report.Evictions:N0} peers not carried ({report.Unplaced:N0} never placed, {report.ChurnEvicted:N0} evicted by churn); {report.RefusedJoins:N0} joins refused at first and retried");
        Line("max depth per shard", string.Join(" ", report.Shards.Select(s => s.MaxDepth)));
        Line("mean depth per shard", string.Join(" ", report.Shards.Select(s => F(s.MeanDepth))));
        Line("best depth per shard", string.Join(" ", report.Shards.Select(s => s.BestDepth == int.MaxValue ? "-" : s.BestDepth.ToString(CultureInfo.InvariantCulture))));
        if (o.Topology == TopologyKind.Tessellated)
        {
            Line("exact tessellation depth", report.PolicyBestDepth.ToString(CultureInfo.InvariantCulture));
        }

        Line("peer upload max / p99", $"{report.MaxPeerUpload} / {report.P99PeerUpload} of {report.PeerBudget} shard-streams; {report.PeersOverBudget} peers over budget");
        Line("source upload", $"{report.SourceUpload} of {report.SourceBudget} shard-streams ({F(report.SourceUploadMultiple)}x stream)");
        Line("moves", $"{report.JoinMoves:N0} by joins, {report.ChurnMoves:N0} by churn repairs");
        if (o.Topology == TopologyKind.Striped)
        {
            Line("fostered edges", $"{report.FosteredEdges} (non-home forwarding left from bootstrap)");
        }

        Line("planner joins/s", report.JoinsPerSecond.ToString("N0", CultureInfo.InvariantCulture));
        Line("build time", $"{F(report.BuildTime.TotalSeconds)} s");
        Line("memory", $"{Mib(report.ManagedBytes)} managed, {Mib(report.WorkingSetBytes)} working set");
        if (report.BranchFailure is { } f)
        {
            Line("branch failure", $"{f.PeersFailed:N0} peers in {f.Branches} subtree(s) of shard {f.Shard}");
            Line("  reattachments", $"{f.Reattachments:N0} Move messages, {f.Evicted} evicted, repaired in {F(f.RepairTime.TotalMilliseconds, 0)} ms");
            Line("  max depth", $"{f.MaxDepthBefore} before, {f.MaxDepthAfter} after (best {f.BestDepthAfter}, bound {f.BestDepthAfter + 1})");
            Line("  max depth per shard", string.Join(" ", f.ShardsAfter.Select(s => s.MaxDepth)));
        }

        if (o.Latency is { } model)
        {
            Line("latency model", model.Description);
            foreach (var l in new[] { report.LatencyAware!, report.LatencyBlind! })
            {
                var which = l.LatencyAware ? "latency-aware" : "latency-blind";
                Line(which, $"max depth {l.MaxDepth}, edge RTT mean {F(l.MeanEdgeRttMs, 1)} ms / p95 {F(l.P95EdgeRttMs, 1)} ms, source delay mean {F(l.MeanSourceDelayMs, 1)} ms / p95 {F(l.P95SourceDelayMs, 1)} ms, mean RDP {F(l.MeanRdp)}");
                Line("", $"{F(l.PingsPerJoin, 1)} pings per join (max {l.MaxPingsPerJoin}), coordinate median error {(double.IsNaN(l.CoordinateMedianError) ? "-" : F(l.CoordinateMedianError, 3))}, planner joins/s {l.JoinsPerSecond.ToString("N0", CultureInfo.InvariantCulture)} ({(double.IsNaN(l.JoinsPerCpuSecond) ? "-" : l.JoinsPerCpuSecond.ToString("N0", CultureInfo.InvariantCulture))} per CPU second)");
            }

            if (report.LatencyAwareImproved is { } m)
            {
                foreach (var r in report.Rebuilds ?? [])
                {
                    Line("rebuild by regions", $"done after {r.Second} s, {r.EdgesMoved} edges moved by then: mean RDP {F(r.MeanRdp)}, max depth {r.MaxDepth}; while under way at worst {F(r.WorstMeanRdp)} and {r.WorstMaxDepth}");
                }

                Line($"after {o.ImproveSeconds} s of moves", $"{report.ImproveMoves} edges moved (at most {o.MovesCap(report.PeerCount)} a second): max depth {m.MaxDepth}, edge RTT mean {F(m.MeanEdgeRttMs, 1)} ms / p95 {F(m.P95EdgeRttMs, 1)} ms, source delay mean {F(m.MeanSourceDelayMs, 1)} ms / p95 {F(m.P95SourceDelayMs, 1)} ms, mean RDP {F(m.MeanRdp)}");
            }
        }

        return text.ToString();
    }
}

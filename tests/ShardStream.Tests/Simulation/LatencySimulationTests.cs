using ShardStream.Simulation;
using ShardStream.Topology;
using OverlaySimulation = ShardStream.Simulation.Simulation;

namespace ShardStream.Tests.Simulation;

public sealed class LatencySimulationTests
{
    /// <summary>
    /// Issue 12's comparison at a size that fits in CI (the 100k and 1M figures are in
    /// docs/topology.md): striped, K = 8, upload 1.25, the world model, several seeds.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void The_latency_aware_planner_shortens_edges_and_source_delays_on_the_world_model(int seed)
    {
        var report = OverlaySimulation.Run(new SimulationOptions(8000, 8, TopologyKind.Striped, 1.25, Seed: seed, Latency: new WorldLatencyModel(seed)));
        var aware = report.LatencyAware!;
        var blind = report.LatencyBlind!;

        Assert.True(aware.LatencyAware);
        Assert.False(blind.LatencyAware);
        Assert.Equal(0, report.PeersOverBudget);
        Assert.Equal(8000, report.PeerCount);

        // Issue 12's targets: edge <= 0.5 of blind, p95 source delay <= 0.7 of blind, mean RDP <= 2.0,
        // depth <= blind + 1, <= 16 pings. At join time, before any rebuild, the edge ratio is
        // 0.269-0.277 on seeds 1-3 and p95 53-60% lower; the mean RDP is 3.6-3.9 (blind 10.9-13.8):
        // missed until the rebuilds (the next test; docs/topology.md).
        Assert.True(aware.MeanEdgeRttMs <= 0.5 * blind.MeanEdgeRttMs, $"mean edge RTT {aware.MeanEdgeRttMs:0.0} vs blind {blind.MeanEdgeRttMs:0.0} ms");
        Assert.True(aware.P95SourceDelayMs <= 0.7 * blind.P95SourceDelayMs, $"p95 source delay {aware.P95SourceDelayMs:0.0} vs blind {blind.P95SourceDelayMs:0.0} ms");
        Assert.True(aware.MeanRdp < 0.6 * blind.MeanRdp, $"mean RDP {aware.MeanRdp:0.00} vs blind {blind.MeanRdp:0.00}");
        Assert.True(aware.MaxDepth <= blind.MaxDepth + 1, $"max depth {aware.MaxDepth} vs blind {blind.MaxDepth}");
        Assert.InRange(aware.MaxPingsPerJoin, 1, 16);
        Assert.Equal(0, blind.PingsPerJoin);
        Assert.InRange(aware.CoordinateMedianError, 0, 0.25);
    }

    /// <summary>
    /// Issue 12's five targets together, at a size that fits in CI, as the CLI runs the simulator
    /// by default (the rebuild by regions on, its moves capped at 1% of the peers a second: 100 at
    /// 10,000): striped, K = 8, upload 1.25, the world model, 4,500 simulated seconds of moves
    /// after the build (three rebuilds on each seed, the third done at 3,978-4,126 s). After them
    /// the mean edge RTT is at most half of the latency-blind planner's (0.135-0.142), the p95
    /// delay from the source at least 30% lower (68-73%), the mean RDP at most 2.0 (1.949, 1.720,
    /// 1.988: at 3,000 peers one rebuild leaves 2.33-2.36), the trees within blind + 1 after and
    /// while every rebuild was under way (6, blind's 5), and no joiner pinged more than 16 nodes
    /// (docs/topology.md, "The rebuild by regions in CI").
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void After_the_rebuilds_every_target_of_issue_12_holds_at_10_000_peers(int seed)
    {
        var report = OverlaySimulation.Run(new SimulationOptions(10_000, 8, TopologyKind.Striped, 1.25, Seed: seed, Latency: new WorldLatencyModel(seed), ImproveSeconds: 4500, LatencyRebuild: true, LatencyMovesShare: Planner.RebuildMovesShare));
        var blind = report.LatencyBlind!;
        var after = report.LatencyAwareImproved!;
        Assert.NotEmpty(report.Rebuilds!);
        Assert.True(after.MeanEdgeRttMs <= 0.5 * blind.MeanEdgeRttMs, $"mean edge RTT {after.MeanEdgeRttMs:0.0} ms, blind's {blind.MeanEdgeRttMs:0.0} ms");
        Assert.True(after.P95SourceDelayMs <= 0.7 * blind.P95SourceDelayMs, $"p95 delay from the source {after.P95SourceDelayMs:0.0} ms, blind's {blind.P95SourceDelayMs:0.0} ms");
        Assert.True(after.MeanRdp <= 2.0, $"mean RDP {after.MeanRdp:0.000}");
        Assert.True(after.MaxDepth <= blind.MaxDepth + 1, $"max depth {after.MaxDepth}, blind's {blind.MaxDepth}");
        foreach (var step in report.Rebuilds!)
        {
            Assert.True(step.WorstMaxDepth <= blind.MaxDepth + 1, $"rebuild done after {step.Second} s: max depth {step.WorstMaxDepth} while under way, blind's {blind.MaxDepth}");
        }

        Assert.InRange(report.LatencyAware!.MaxPingsPerJoin, 1, 16);
    }

    /// <summary>
    /// <c>simulate --improve-seconds S --latency-moves N</c>: after the build, S simulated seconds of
    /// the coordinator's latency moves (one ImproveLatency call a second, at most N moves each); the
    /// build's own figures are those of a run without them, the moves stay within the cap, the
    /// overlay stays within the depth target, and the delays improve.
    /// </summary>
    [Fact]
    public void Improvement_rounds_after_the_build_are_reported_apart_within_their_cap()
    {
        var options = new SimulationOptions(3000, 8, TopologyKind.Striped, 1.25, Seed: 2, Latency: new WorldLatencyModel(2));
        var plain = OverlaySimulation.Run(options);
        var report = OverlaySimulation.Run(options with { ImproveSeconds = 300, LatencyMovesPerSecond = 4 });
        Assert.Null(plain.LatencyAwareImproved);
        Assert.Equal(plain.LatencyAware!.MeanRdp, report.LatencyAware!.MeanRdp);
        Assert.Equal(plain.LatencyAware.MeanSourceDelayMs, report.LatencyAware.MeanSourceDelayMs);
        var improved = report.LatencyAwareImproved!;
        Assert.InRange(report.ImproveMoves, 1, 300 * 4);
        Assert.InRange(improved.MaxDepth, 1, report.LatencyBlind!.MaxDepth + 1);
        Assert.True(improved.MeanSourceDelayMs < report.LatencyAware.MeanSourceDelayMs, $"{improved.MeanSourceDelayMs} vs {report.LatencyAware.MeanSourceDelayMs}");
    }

    /// <summary>
    /// <c>simulate --improve-seconds S --latency-moves N --latency-rebuild</c>: the coordinator's
    /// rebuild by regions runs within the cap, every completed rebuild is reported with the worst
    /// max depth and mean RDP seen while it was under way, the trees stay within the depth target
    /// (blind + 1) all along, and the overlay ends with a lower mean RDP than the joins left.
    /// </summary>
    [Fact]
    public void A_rebuild_by_regions_during_the_improve_seconds_lowers_the_mean_rdp_within_the_depth_target()
    {
        var options = new SimulationOptions(3000, 8, TopologyKind.Striped, 1.25, Seed: 2, Latency: new WorldLatencyModel(2), ImproveSeconds: 400, LatencyMovesPerSecond: 500, LatencyRebuild: true);
        var report = OverlaySimulation.Run(options);
        var steps = report.Rebuilds!;
        Assert.NotEmpty(steps);
        Assert.InRange(report.ImproveMoves, steps[^1].EdgesMoved, 400L * 500);
        foreach (var step in steps)
        {
            Assert.InRange(step.Second, 1, 400);
            Assert.InRange(step.EdgesMoved, 3000, 500L * step.Second);
            Assert.InRange(step.MaxDepth, 1, report.LatencyBlind!.MaxDepth + 1);

            // What the overlay went through while it was under way: at least as bad as its end,
            // and never deeper than the depth target (before the moves kept trees within their
            // depth, 2026-12-04, this run reached 7 and 9 against blind's 5).
            Assert.InRange(step.WorstMaxDepth, step.MaxDepth, report.LatencyBlind!.MaxDepth + 1);
            Assert.InRange(step.WorstMeanRdp, step.MeanRdp, 100);
        }

        var improved = report.LatencyAwareImproved!;
        Assert.True(improved.MeanRdp < 0.8 * report.LatencyAware!.MeanRdp, $"mean RDP {improved.MeanRdp:F2} after, {report.LatencyAware.MeanRdp:F2} at join time");
        Assert.InRange(improved.MaxDepth, 1, report.LatencyBlind!.MaxDepth + 1);
    }

    /// <summary>
    /// <c>simulate --latency-rebuild --latency-rebuild-min-peers 100</c> at 200 peers (K = 4, the
    /// world model, seed 1, the default 4 moves a second): the default fewest peers (1,000) plans no
    /// rebuild of so small an overlay; lowered to 100 it plans one and carries it out, and the
    /// overlay ends with edges under half the latency-blind planner's, where the leaf moves alone
    /// leave them above (docs/topology.md, "The rebuild by regions").
    /// </summary>
    [Fact]
    public void A_rebuild_of_a_small_overlay_runs_only_with_a_lower_fewest_peers_and_halves_its_edges()
    {
        SimulationOptions Options(int minPeers) => new(200, 4, TopologyKind.Striped, 1.25, Seed: 1, Latency: new WorldLatencyModel(1), ImproveSeconds: 900, LatencyRebuild: true, LatencyRebuildMinPeers: minPeers);
        var leafMovesOnly = OverlaySimulation.Run(Options(Planner.RebuildMinPeers));
        Assert.Empty(leafMovesOnly.Rebuilds!);
        var rebuilt = OverlaySimulation.Run(Options(100));
        Assert.NotEmpty(rebuilt.Rebuilds!);
        double blind = rebuilt.LatencyBlind!.MeanEdgeRttMs;
        Assert.Equal(blind, leafMovesOnly.LatencyBlind!.MeanEdgeRttMs);
        Assert.True(leafMovesOnly.LatencyAwareImproved!.MeanEdgeRttMs > 0.5 * blind, $"leaf moves alone: mean edge RTT {leafMovesOnly.LatencyAwareImproved.MeanEdgeRttMs:F1} ms, blind {blind:F1} ms");
        Assert.True(rebuilt.LatencyAwareImproved!.MeanEdgeRttMs < 0.5 * blind, $"with the rebuild: mean edge RTT {rebuilt.LatencyAwareImproved.MeanEdgeRttMs:F1} ms, blind {blind:F1} ms");
        Assert.True(rebuilt.LatencyAwareImproved.P95SourceDelayMs < leafMovesOnly.LatencyAwareImproved.P95SourceDelayMs);
        Assert.InRange(rebuilt.LatencyAwareImproved.MaxDepth, 1, rebuilt.LatencyBlind.MaxDepth + 1);
    }

    /// <summary>
    /// <c>simulate --peers N --shards 4 --latency world --improve-seconds S --latency-rebuild
    /// --latency-rebuild-min-peers 20</c> at the default 4 moves a second: while a rebuild of a
    /// small overlay is under way its trees stay within blind + 1, as at 100k. Before 2026-12-06
    /// they did not (7, 7 and 8 here against blind's 4, 5 and 5): a step that exchanges a node's
    /// place with a child's (2 Moves and one per child moved, up to 12 at budget 5) needed more
    /// than the cap of a call and was never made, so the new first relay of a tree stayed below
    /// the old one, everything planned under it hung a level deeper, and the tree was finished in
    /// the passes that allow more levels (docs/topology.md, "The rebuild by regions").
    /// </summary>
    [Theory]
    [InlineData(100, 2, 900)]
    [InlineData(200, 1, 900)]
    [InlineData(500, 1, 1500)]
    public void A_rebuild_of_a_small_overlay_keeps_its_trees_within_blind_plus_one_while_under_way(int peers, int seed, int seconds)
    {
        var report = OverlaySimulation.Run(new SimulationOptions(peers, 4, TopologyKind.Striped, 1.25, Seed: seed, Latency: new WorldLatencyModel(seed), ImproveSeconds: seconds, LatencyRebuild: true, LatencyRebuildMinPeers: Planner.RebuildLeastPeers));
        var blind = report.LatencyBlind!.MaxDepth;
        Assert.NotEmpty(report.Rebuilds!);
        Assert.InRange(report.ImproveMoves, 1, 4L * seconds);
        foreach (var step in report.Rebuilds!)
        {
            Assert.InRange(step.EdgesMoved, 1, 4L * step.Second);
            Assert.True(step.WorstMaxDepth <= blind + 1, $"rebuild done after {step.Second} s: max depth {step.WorstMaxDepth} while under way, blind's {blind}");
        }

        Assert.InRange(report.LatencyAwareImproved!.MaxDepth, 1, blind + 1);
    }

    /// <summary>
    /// A rebuild of one binary tree (the coordinator's default: relays of 2 slots) at 1,000 and
    /// 3,000 peers, as the CLI runs it (1% of the peers a second): its rebuilds leave the mean delay
    /// from the source lower than the leaf moves alone over the same seconds, and the tree within
    /// blind + 1 while under way and after. Before 2026-12-06 the
    /// construction merged the clusters down to the first relay's slots (two regions for a binary
    /// tree, one of them the world), filled the merged ones from a single entry and priced them by
    /// local coordinates fitted to short parent links: planned 11 levels against blind's 9, estimated
    /// at 234 ms, it took the mean delay from 354 to 429 ms (seed 1; docs/topology.md, "The
    /// rebuild at 1, 2 and 3 shards"). The third case: a plan within blind + 1 whose carrying out
    /// went to blind + 2 (its third rebuild, 13 against 11) in the passes that allow the tree more
    /// levels for the nodes put off, until they were kept within the plan's depth bound.
    /// </summary>
    [Theory]
    [InlineData(1000, 1, 400)]
    [InlineData(1000, 4, 400)]
    [InlineData(3000, 1, 800)]
    public void A_rebuild_of_trees_with_few_slots_a_relay_shortens_the_delay_within_blind_plus_one(int peers, int seed, int seconds)
    {
        var options = new SimulationOptions(peers, 1, TopologyKind.Binary, 2, Seed: seed, Latency: new WorldLatencyModel(seed), ImproveSeconds: seconds, LatencyRebuild: true, LatencyMovesShare: Planner.RebuildMovesShare);
        var rebuilt = OverlaySimulation.Run(options);
        var leafMoves = OverlaySimulation.Run(options with { LatencyRebuild = false });
        var blind = rebuilt.LatencyBlind!.MaxDepth;
        Assert.NotEmpty(rebuilt.Rebuilds!);
        foreach (var step in rebuilt.Rebuilds!)
        {
            Assert.True(step.WorstMaxDepth <= blind + 1, $"rebuild done after {step.Second} s: max depth {step.WorstMaxDepth} while under way, blind's {blind}");
        }

        Assert.InRange(rebuilt.LatencyAwareImproved!.MaxDepth, 1, blind + 1);
        Assert.True(
            rebuilt.LatencyAwareImproved.MeanSourceDelayMs < leafMoves.LatencyAwareImproved!.MeanSourceDelayMs,
            $"mean delay from the source {rebuilt.LatencyAwareImproved.MeanSourceDelayMs:F0} ms after the rebuild, {leafMoves.LatencyAwareImproved.MeanSourceDelayMs:F0} ms with leaf moves alone");
    }

    /// <summary>
    /// <c>simulate --peers N --shards 2 --latency world --improve-seconds 2 --latency-rebuild-min-peers 20</c>:
    /// at K = 2 the source has two slots in tree 0 and one in tree 1, so tree 0's depth bound (one
    /// more than the best its caps allow) is a level less than tree 1's. The construction from
    /// one of the source's slots ended a level past it, the bounded construction's backbone ran
    /// out, and the plan was declined for depth (JSON <c>deeperThanBound</c>): in 31 of 416 small
    /// plannings at K = 2 and 3 on 2026-12-06 (20-200 peers, seeds 1-4), these 3 among them;
    /// putting leftovers under the shallowest free relay alone did not change them. Now the merged
    /// clusters are built again with an entry under the source's second slot, within the bound.
    /// (Still declined: 69 peers seed 1, 76 peers seeds 2 and 3, 20 peers seed 4, at blind + 1
    /// but a level past tree 0's bound with every construction.)
    /// </summary>
    [Theory]
    [InlineData(69, 2)]
    [InlineData(76, 1)]
    [InlineData(76, 4)]
    public void A_small_striped_plan_uses_every_source_slot_to_stay_within_its_depth_bound(int peers, int seed)
    {
        var report = OverlaySimulation.Run(new SimulationOptions(peers, 2, TopologyKind.Striped, 1.5, Seed: seed, Latency: new WorldLatencyModel(seed), ImproveSeconds: 2, LatencyRebuild: true, LatencyRebuildMinPeers: Planner.RebuildLeastPeers));
        var planning = Assert.Single(report.RebuildPlannings!);
        Assert.False(planning.DeeperThanBound, $"planned {planning.PlannedMaxDepth} levels, blind's {report.LatencyBlind!.MaxDepth}");
        Assert.InRange(planning.PlannedMaxDepth, 1, report.LatencyBlind!.MaxDepth + 1);
    }

    /// <summary>
    /// <c>simulate --latency-aware false --improve-seconds S --latency-rebuild</c>: the main build is
    /// the latency-blind one, but the seconds of moves run on the aware overlay, as without the
    /// flag, and its rebuilds and plannings are reported with them. Before 2026-12-06 they were
    /// taken from the blind build, which has none: JSON <c>latencyRebuilds</c> was empty though the
    /// improved figures came from a rebuild.
    /// </summary>
    [Fact]
    public void With_the_blind_planner_first_the_aware_overlays_rebuilds_are_still_reported()
    {
        var options = new SimulationOptions(200, 4, TopologyKind.Striped, 1.25, Seed: 1, Latency: new WorldLatencyModel(1), ImproveSeconds: 900, LatencyRebuild: true, LatencyRebuildMinPeers: Planner.RebuildLeastPeers);
        var aware = OverlaySimulation.Run(options);
        var blindFirst = OverlaySimulation.Run(options with { LatencyAware = false });
        Assert.NotEmpty(aware.Rebuilds!);
        Assert.Equal(aware.ImproveMoves, blindFirst.ImproveMoves);
        Assert.Equal(aware.LatencyAwareImproved!.MeanRdp, blindFirst.LatencyAwareImproved!.MeanRdp);
        Assert.Equal(aware.Rebuilds!, blindFirst.Rebuilds!);
        Assert.Equal(aware.RebuildPlannings!.Select(p => (p.Second, p.CarriedOut, p.EstimatedAfterMs)), blindFirst.RebuildPlannings!.Select(p => (p.Second, p.CarriedOut, p.EstimatedAfterMs)));
    }

    /// <summary>
    /// <see cref="SimulationOptions.LatencyRebuildMinPeers"/> below <see cref="Planner.RebuildLeastPeers"/>
    /// is refused by <see cref="OverlaySimulation.Run"/>, not only by the CLI: with 1 (the least
    /// <see cref="ShardStream.Nodes.CoordinatorOptions"/> takes), two peers in four shards got a rebuild
    /// planned, and it threw IndexOutOfRangeException (RegionConstruction); with 19 at 19 peers it ran.
    /// </summary>
    [Theory]
    [InlineData(2, 1)]
    [InlineData(19, 19)]
    public void Fewer_fewest_peers_for_a_rebuild_than_the_least_is_refused(int peers, int minPeers)
    {
        var options = new SimulationOptions(peers, 4, TopologyKind.Striped, 1.25, Seed: 1, Latency: new WorldLatencyModel(1), ImproveSeconds: 300, LatencyRebuild: true, LatencyRebuildMinPeers: minPeers);
        var error = Assert.Throws<ArgumentException>(() => OverlaySimulation.Run(options));
        Assert.Equal($"--latency-rebuild-min-peers must be at least {Planner.RebuildLeastPeers}, got {minPeers}", error.Message);
    }

    /// <summary>
    /// <c>simulate --rdp-breakdown</c>: the breakdown's mean RDP is the report's, the mean over
    /// single trees is at most the slowest tree's, the path splits into its parts, and the lower
    /// bound from the model lies below what both planners reach and is at least about 1 (a path
    /// is never faster than the direct route's metric closure), and the offline construction
    /// from the model is a valid plan (no peer over budget, no deeper than blind + 1) whose mean
    /// RDP is not under the bound; so is the same construction from the planner's coordinates,
    /// and from local coordinates fitted to RTTs among each region's peers.
    /// </summary>
    [Fact]
    public void The_rdp_breakdown_adds_up_and_its_lower_bound_lies_below_both_planners()
    {
        var output = new StringWriter();
        var report = OverlaySimulation.Run(new SimulationOptions(3000, 8, TopologyKind.Striped, 1.25, Seed: 2, Latency: new WorldLatencyModel(2), RdpBreakdown: output));
        var text = output.ToString();
        foreach (var (which, figures) in new[] { ("aware", report.LatencyAware!), ("blind", report.LatencyBlind!) })
        {
            var line = text.Split('\n').Single(l => l.StartsWith($"rdp {which}:", StringComparison.Ordinal));
            var worst = Number(line, "mean RDP (worst tree) ");
            Assert.Equal(figures.MeanRdp, worst, 0.006);
            Assert.True(Number(line, "mean per-tree RDP ") <= worst);
            var path = Number(line, " path ");
            Assert.Equal(figures.MeanSourceDelayMs, path, 0.06);
            Assert.Equal(path, Number(line, "endpoints' access ") + Number(line, "relays' access ") + Number(line, "+ core "), 0.2);
            var lines = text.Split('\n');
            var at = Array.IndexOf(lines, line);
            Assert.Matches(@"^    slowest tree's path by region .*: source region [SRX]+ \d+ %", lines[at + 2]);
            var boundLine = lines[at + 3];
            Assert.StartsWith("    lower bound of the mean RDP", boundLine, StringComparison.Ordinal);
            var bound = Number(boundLine, "= ");
            Assert.InRange(bound, 0.9, worst);
            Assert.True(Number(boundLine, "per-hop base ") > 0);
            if (which == "aware")
            {
                // The offline construction (RdpConstruction): a valid plan, so never under the bound.
                var built = lines[at + 4];
                Assert.StartsWith("    offline construction", built, StringComparison.Ordinal);
                Assert.InRange(Number(built, "mean RDP "), bound, double.MaxValue);
                Assert.Equal(0, Number(built, "peers over budget "));
                Assert.InRange(Number(built, "max depth "), 1, report.LatencyBlind!.MaxDepth + 1);
                // The same construction from the planner's coordinates (clusters of the plane, then
                // the model's regions): valid plans too, and no better than the bound.
                foreach (var (offset, start) in new[] { (5, "    the same construction from the planner's coordinates (points, heights; regions: "), (6, "    the same from the planner's coordinates within the model's true regions") })
                {
                    var fromCoordinates = lines[at + offset];
                    Assert.StartsWith(start, fromCoordinates, StringComparison.Ordinal);
                    Assert.InRange(Number(fromCoordinates, "mean RDP "), bound, double.MaxValue);
                    Assert.Equal(0, Number(fromCoordinates, "peers over budget "));
                    Assert.InRange(Number(fromCoordinates, "max depth "), 1, report.LatencyBlind!.MaxDepth + 1);
                }

                Assert.InRange(Number(lines[at + 5], "regions: "), 1, 400);
                Assert.InRange(Number(lines[at + 7], "|estimate - RTT| median "), 0.01, 1000);
                // From local coordinates (RTTs among a region's own peers): a valid plan too.
                var fromLocal = lines[at + 8];
                Assert.StartsWith("    the same from local coordinates within the model's true regions (16 peers of its region", fromLocal, StringComparison.Ordinal);
                Assert.InRange(Number(fromLocal, "mean RDP "), bound, double.MaxValue);
                Assert.Equal(0, Number(fromLocal, "peers over budget "));
                Assert.InRange(Number(fromLocal, "max depth "), 1, report.LatencyBlind!.MaxDepth + 1);
                // What a coordinator knows: clusters (the source's by measured RTT, at most the first
                // relay's budget of them), local coordinates from random peers of the cluster, then
                // from parent links only in successive rebuilds: valid plans too, each one moving edges.
                var inClusters = lines[at + 9];
                Assert.StartsWith("    the same from local coordinates within clusters of the plane, the source's by measured RTT to it (", inClusters, StringComparison.Ordinal);
                Assert.InRange(Number(inClusters, "by measured RTT to it ("), 2, 10);
                var rebuilds = lines.Where(l => l.StartsWith("    rebuild ", StringComparison.Ordinal)).ToList();
                Assert.Equal(RdpConstruction.ParentLinkRebuilds, rebuilds.Count);
                Assert.Equal(at + 10, Array.IndexOf(lines, rebuilds[0]));
                foreach (var built2 in rebuilds.Prepend(inClusters))
                {
                    Assert.InRange(Number(built2, "mean RDP "), bound, double.MaxValue);
                    Assert.Equal(0, Number(built2, "peers over budget "));
                    Assert.InRange(Number(built2, "max depth "), 1, report.LatencyBlind!.MaxDepth + 1);
                }

                Assert.All(rebuilds, r => Assert.InRange(Number(r, "edges whose parent changed "), 1, 3000 * 8));
                // Which plans' links each fit used ("rebuilds 1-1" for the second before 2026-12-06).
                Assert.Contains("the planner's plan):", rebuilds[0], StringComparison.Ordinal);
                Assert.Contains("the planner's plan and rebuild 1):", rebuilds[1], StringComparison.Ordinal);
                Assert.Contains("the planner's plan and rebuilds 1-2):", rebuilds[2], StringComparison.Ordinal);
            }
        }

        static double Number(string line, string label)
        {
            var start = line.IndexOf(label, StringComparison.Ordinal) + label.Length;
            var end = start;
            while (end < line.Length && (char.IsDigit(line[end]) || line[end] == '.'))
            {
                end++;
            }

            return double.Parse(line[start..end], System.Globalization.CultureInfo.InvariantCulture);
        }
    }

    /// <summary>
    /// The source's cluster is made from measured RTTs, not from the plane: peers whose core RTT
    /// to the source is within <see cref="RegionConstruction.SourceClusterMs"/> leave whatever cluster
    /// of the plane they were in (here split over two, one shared with far peers), peers with no
    /// measurement stay; then the smallest other cluster joins the nearest other one (never the
    /// source's) until the budget of clusters holds.
    /// </summary>
    [Fact]
    public void The_source_cluster_comes_from_measured_rtts_and_the_smallest_other_clusters_merge()
    {
        // Plane clusters: 0 = {0, 1, 2}, 1 = {3, 4}, 2 = {5, 6, 7, 8}, 3 = {9}; points near their
        // cluster's centre (0, 0), (100, 0), (300, 0), (120, 0).
        double[] x = [0, 1, 2, 100, 101, 300, 301, 302, 303, 120];
        var y = new double[x.Length];
        // Peers 0, 1 and 3 are near the source by RTT; peer 2 and 4 are not; 9 measured nothing.
        double[] core = [5, 30, 60, 12, 200, 150, 150, 150, 150, double.NaN];
        int[] region = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3];
        var (regions, source) = RegionConstruction.SourceCluster(x, y, core, region, regions: 4, maxRegions: 4);
        Assert.Equal(4, regions);
        Assert.All(region, r => Assert.InRange(r, 0, regions - 1));
        Assert.Equal([0, 1, 3], Enumerable.Range(0, x.Length).Where(i => region[i] == source).ToArray());
        // The clusters left besides the source's: {2}, {4}, {5-8}, {9}, one too many; {2}, {4} and
        // {9} hold one peer each, and the first of them ({2}, at 2) joins the nearest other cluster
        // ({4} at 101, not the source's), leaving {2, 4}, {5-8} and {9}.
        Assert.Equal(region[2], region[4]);
        Assert.NotEqual(region[2], region[9]);
        Assert.NotEqual(region[5], region[9]);
        Assert.All(new[] { 6, 7, 8 }, i => Assert.Equal(region[5], region[i]));
        Assert.Equal(4, new HashSet<int>(region).Count);
    }

    [Fact]
    public void A_measured_matrix_drives_the_simulation_coordinates_fit_it_and_source_delays_drop()
    {
        // Four hosts: the coordinator's (0) and host 1 in one city, hosts 2 and 3 far away from it
        // but 8 ms from each other; 1 <-> 3 was not measured (filled through host 2: 150 + 8).
        const string Matrix = """
            4
            0, 4, 150, 155
            4, 0, 150, -1
            150, 150, 0, 8
            155, -1, 8, 0
            """;
        var model = MatrixLatencyModel.Parse(Matrix, seed: 7, name: "four-hosts.csv");
        var report = OverlaySimulation.Run(new SimulationOptions(2000, 4, TopologyKind.Striped, 1.25, Seed: 7, Latency: model));
        var aware = report.LatencyAware!;
        var blind = report.LatencyBlind!;

        Assert.Equal(2000, report.PeerCount);
        Assert.Equal(0, report.PeersOverBudget);

        // Half the peers sit across the ocean from the source: every one of them pays 75 ms one
        // way at least, whatever the tree; the aware tree adds less on top (measured: mean 172 vs
        // 203 ms). Its far peers still take their stream straight from near peers when that path
        // is shorter than through a far relay (the rule minimises delay, not edge length; see
        // docs/topology.md), so edges are not shorter here than blind ones.
        Assert.True(aware.CoordinateMedianError < 0.05, $"coordinate median error {aware.CoordinateMedianError:0.000}");
        Assert.True(aware.MeanSourceDelayMs < 0.9 * blind.MeanSourceDelayMs, $"mean source delay {aware.MeanSourceDelayMs:0.0} vs blind {blind.MeanSourceDelayMs:0.0} ms");
        Assert.True(aware.P95SourceDelayMs < blind.P95SourceDelayMs, $"p95 source delay {aware.P95SourceDelayMs:0.0} vs blind {blind.P95SourceDelayMs:0.0} ms");
        Assert.True(blind.MeanSourceDelayMs > 75);
        Assert.True(aware.MaxDepth <= blind.MaxDepth + 1);
        Assert.InRange(aware.MaxPingsPerJoin, 1, 16);
    }

    [Fact]
    public void Without_a_latency_model_there_are_no_latency_figures()
    {
        var report = OverlaySimulation.Run(new SimulationOptions(500, 8, TopologyKind.Striped, 1.25, Seed: 1));
        Assert.Null(report.LatencyAware);
        Assert.Null(report.LatencyBlind);
    }
}

using System.Diagnostics;
using ShardStream.Topology;

namespace ShardStream.Simulation;

/// <summary>
/// Builds an overlay through the same <see cref="Planner"/> the coordinator runs, optionally with
/// churn and a branch failure, and measures it. Pure: no console, no files; the only clock is a
/// <see cref="Stopwatch"/> for the throughput figures.
/// </summary>
public static class Simulation
{
    /// <summary>Runs one simulation.</summary>
    /// <exception cref="ArgumentException">The options do not make a valid plan.</exception>
    public static SimulationReport Run(SimulationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Peers < 0)
        {
            throw new ArgumentException($"--peers ({options.Peers}) cannot be negative");
        }

        if (options.Churn is < 0 or >= 1 || options.FailBranchFraction is < 0 or >= 1)
        {
            // No parameter name: the message is shown to a user as it is (shardstream simulate).
            throw new ArgumentException($"--churn ({options.Churn}) and --fail-branch ({options.FailBranchFraction}) must be at least 0 and below 1");
        }

        // The planner's own checks name its options (ShardCount, SourceBudget); these name the flags.
        if (options.Topology == TopologyKind.Binary && options.ShardCount != 1
            || options.Topology == TopologyKind.Tessellated && options.ShardCount != 2)
        {
            var needed = options.Topology == TopologyKind.Binary ? 1 : 2;
            throw new ArgumentException($"--topology {options.Topology.ToString().ToLowerInvariant()} needs --shards {needed}, not {options.ShardCount}");
        }

        if (options.ImproveSeconds < 0 || options.LatencyMovesPerSecond < 0)
        {
            throw new ArgumentException($"--improve-seconds ({options.ImproveSeconds}) and --latency-moves ({options.LatencyMovesPerSecond}) cannot be negative");
        }

        if (!(options.LatencyMovesShare is >= 0 and <= 1))
        {
            throw new ArgumentException($"the share of the peers moved a second ({options.LatencyMovesShare}) must be between 0 and 1");
        }

        // As CoordinatorCommand holds the coordinator's (the simulate command leaves it to this
        // check): with far fewer, a rebuild is planned for a handful of peers, too few per cluster
        // to fit local coordinates to (that of two peers in four shards, a tree with no relay,
        // threw IndexOutOfRangeException; RebuildSnapshot.Plan now gives no plan there).
        if (options.LatencyRebuildMinPeers < Planner.RebuildLeastPeers)
        {
            throw new ArgumentException($"--latency-rebuild-min-peers must be at least {Planner.RebuildLeastPeers}, got {options.LatencyRebuildMinPeers}");
        }

        if (options.UploadMix is null && !(options.Upload >= 0))
        {
            throw new ArgumentException($"--upload ({options.Upload}) cannot be negative");
        }

        if (options.SourceBudget < options.ShardCount)
        {
            throw new ArgumentException($"--source-upload ({options.SourceUpload}) must allow one shard-stream per shard: at least 1 (the stream rate)");
        }

        var aware = options.LatencyAware ?? options.Latency is not null;
        var (report, latency) = Build(options, aware);
        if (options.Latency is null)
        {
            return report;
        }

        // The same overlay (same joins, leaves and model) built by the other planner, for comparison.
        // The seconds of moves (and their rebuilds) run on the aware one, whichever is built first.
        var (otherReport, other) = Build(options with { FailBranchFraction = 0 }, !aware);
        var awareReport = aware ? report : otherReport;
        return report with
        {
            LatencyAware = aware ? latency : other,
            LatencyBlind = aware ? other : latency,
            LatencyAwareImproved = awareReport.LatencyAwareImproved,
            ImproveMoves = awareReport.ImproveMoves,
            Rebuilds = awareReport.Rebuilds,
            RebuildPlannings = awareReport.RebuildPlannings,
        };
    }

    private static (SimulationReport Report, LatencyReport? Latency) Build(SimulationOptions options, bool latencyAware)
    {
        var planner = new Planner(options.ToPlannerOptions() with { LatencyAware = latencyAware && options.Latency is not null, RebuildMinPeers = options.LatencyRebuildMinPeers });
        var random = new Random(options.Seed);
        // Uploads are drawn from their own generator so that a mix leaves the churn's draws alone.
        var uploads = new Random(options.Seed + 1);
        var live = new LivePeers(options.Peers);
        var joiner = planner.LatencyAware ? new LatencyJoiner(planner, options.Latency!, options.Seed) : null;
        var waiting = new WaitingPeers(planner, live, joiner is null ? null : joiner.Join);
        var budgets = new SortedDictionary<int, int>();
        long joinTicks = 0, churnMoves = 0;
        int leaves = 0, evicted = 0;
        var buildCpuNs = ThreadCpuClock.Nanoseconds();
        var build = Stopwatch.StartNew();
        for (var i = 0; i < options.Peers; i++)
        {
            var budget = options.UploadMix is { } mix
                ? Budgets.FromMultiple(mix.Draw(uploads), options.ShardCount)
                : options.PeerBudget;
            budgets[budget] = budgets.GetValueOrDefault(budget) + 1;
            var start = Stopwatch.GetTimestamp();
            if (waiting.TryJoin(budget) && budget > 0)
            {
                waiting.Retry();
            }

            joinTicks += Stopwatch.GetTimestamp() - start;
            if (options.Churn > 0 && random.NextDouble() < options.Churn && live.Count > 1)
            {
                var gone = live.RemoveAt(random.Next(live.Count));
                var moves = planner.Leave([gone]);
                churnMoves += moves.Count;
                foreach (var move in moves)
                {
                    if (move.NewParent == Planner.None && live.Remove(move.Peer))
                    {
                        evicted++;
                    }
                }

                leaves++;
                waiting.Retry();
            }
        }

        build.Stop();
        buildCpuNs = ThreadCpuClock.Nanoseconds() - buildCpuNs;
        // With latency, the joiner's own work (pings, coordinate fits) is not the planner's.
        var joinSeconds = (double)(joiner?.PlannerTicks ?? joinTicks) / Stopwatch.Frequency;
        var managed = GC.GetTotalMemory(forceFullCollection: true);
        var workingSet = Environment.WorkingSet;
        var shards = Depths(planner);
        var policyBest = PolicyBest(planner, shards);
        var (maxUpload, p99Upload, overBudget) = Uploads(planner);
        var fostered = options.Topology == TopologyKind.Striped ? planner.FosteredEdges : 0;
        var peerCount = planner.PeerCount;
        var sourceUpload = planner.UsedUnits(Planner.Source);
        var joinsPerSecond = joinSeconds > 0 ? waiting.Joined / joinSeconds : 0;
        // Per CPU second: the planner's wall time scaled by the share of the build's wall time the
        // build's thread was on a core (reading the thread's CPU clock around every call would be
        // a system call each, about as long as a blind join).
        var cpuShare = ThreadCpuClock.Available && build.Elapsed.TotalSeconds > 0 ? buildCpuNs / 1e9 / build.Elapsed.TotalSeconds : double.NaN;
        var joinsPerCpuSecond = joinsPerSecond / Math.Min(1, cpuShare);
        var latency = options.Latency is { } model ? LatencyMetrics.Measure(planner, model, joiner, joinsPerSecond, joinsPerCpuSecond, options.Seed) : null;
        if (options.RdpBreakdown is { } breakdown && options.Latency is WorldLatencyModel world)
        {
            RdpAnalysis.Write(planner, world, breakdown);
        }

        // Improvement over time, as the coordinator runs it: one ImproveLatency call a simulated
        // second with its cap (no pings meanwhile: the coordinates are the build's), each move
        // checked against the leaf's RTT to its parent as its pings would measure it (the model's).
        LatencyReport? improved = null;
        long improveMoves = 0;
        var rebuilds = new List<RebuildStep>();
        var plannings = new List<RebuildPlanning>();
        var (rebuildStart, worstDepth, worstRdp) = (0, 0, 0.0);
        if (options.Latency is { } improveModel && planner.LatencyAware && options.ImproveSeconds > 0)
        {
            MeasuredEdgeRtt? Measured(int peer, int parent)
            {
                var rtt = improveModel.RttMs(peer, parent);
                return new MeasuredEdgeRtt(rtt, rtt, int.MaxValue);
            }

            for (var second = 0; second < options.ImproveSeconds; second++)
            {
                // As the coordinator does it: the snapshot and the moves under its plan's lock, the
                // planning between them outside it (nothing changes the plan meanwhile here).
                var wasIn = planner.RebuildInProgress;
                var rebuilt = 0;
                var cap = options.MovesCap(planner.PeerCount, wasIn);
                if (options.LatencyRebuild && cap > 0)
                {
                    var clock = new PhaseClock();
                    var snapshot = wasIn ? null : planner.TakeRebuildSnapshot(Measured);
                    var copied = clock.Lap();
                    var plan = snapshot?.Plan();
                    var planned = clock.Lap();
                    if (snapshot is not null)
                    {
                        planner.AdoptRebuild(snapshot, plan);
                    }

                    rebuilt = planner.CarryOutRebuild(cap).Count;
                    if (plan is not null)
                    {
                        plannings.Add(new RebuildPlanning(second + 1, plan.WorthCarryingOut, copied, planned, clock.Lap(), plan.EstimatedBeforeMs, plan.EstimatedAfterMs, plan.MeasuredBeforeMs, plan.MeasuredAfterMs, plan.PlannedDepth.Max(), plan.DeeperThanBound));
                    }
                }

                improveMoves += rebuilt;
                if (planner.RebuildInProgress)
                {
                    // How the overlay fares while a rebuild is under way (its start is when its
                    // first moves were made: the second of its planning).
                    rebuildStart = wasIn ? rebuildStart : second;
                    worstDepth = Math.Max(worstDepth, LatencyMetrics.MaxDepth(planner));
                    if ((second - rebuildStart + 1) % RebuildStep.RebuildSampleSeconds == 0)
                    {
                        worstRdp = Math.Max(worstRdp, LatencyMetrics.MeanRdp(planner, improveModel));
                    }
                }
                else if (wasIn)
                {
                    var m = LatencyMetrics.Measure(planner, improveModel, joiner, 0, 0, options.Seed);
                    rebuilds.Add(new RebuildStep(second + 1, improveMoves, m.MeanRdp, m.MaxDepth, Math.Max(worstDepth, m.MaxDepth), Math.Max(worstRdp, m.MeanRdp), m.MeanEdgeRttMs, m.MeanSourceDelayMs, m.P95SourceDelayMs));
                    (worstDepth, worstRdp) = (0, 0);
                }

                if (rebuilt == 0 && !planner.RebuildInProgress)
                {
                    improveMoves += planner.ImproveLatency(cap, Measured).Count;
                }
            }

            improved = LatencyMetrics.Measure(planner, improveModel, joiner, 0, 0, options.Seed);
        }

        var branch = options.FailBranchFraction > 0 && planner.PeerCount > 1
            ? BranchFailure.Run(planner, options.FailBranchFraction, random)
            : null;

        return (new SimulationReport(
            options,
            peerCount,
            options.Peers,
            leaves,
            evicted,
            shards,
            policyBest,
            options.UploadMix is null || budgets.Count == 0 ? options.PeerBudget : budgets.Keys.Max(),
            maxUpload,
            p99Upload,
            overBudget,
            options.SourceBudget,
            sourceUpload,
            waiting.Moves,
            churnMoves,
            fostered,
            joinsPerSecond,
            build.Elapsed,
            managed,
            workingSet,
            branch,
            waiting.Refused,
            waiting.Count,
            [.. budgets.Select(b => new BudgetCount(b.Key, b.Value))],
            LatencyAwareImproved: improved,
            ImproveMoves: improveMoves,
            Rebuilds: rebuilds,
            RebuildPlannings: plannings), latency);
    }

    /// <summary>
    /// The least depth the policy allows for the live peers: the tessellation's own depth while
    /// the plan is the seed's pattern (deeper by design than the best split of the budgets), else
    /// the largest per-shard best depth.
    /// </summary>
    internal static int PolicyBest(Planner planner, IReadOnlyList<ShardDepthReport> shards) =>
        planner.Options.Topology == TopologyKind.Tessellated && planner.IsExactPattern
            ? planner.ExactTessellationDepth
            : shards.Max(s => s.BestDepth);

    /// <summary>Max, mean and best depth of every shard tree, from the planner's per-depth counts.</summary>
    internal static IReadOnlyList<ShardDepthReport> Depths(Planner planner)
    {
        var result = new ShardDepthReport[planner.ShardCount];
        for (var s = 0; s < planner.ShardCount; s++)
        {
            var max = planner.MaxDepth(s);
            long sum = 0;
            for (var d = 1; d <= max; d++)
            {
                sum += (long)d * planner.CountAtDepth(s, d);
            }

            var mean = planner.PeerCount == 0 ? 0 : (double)sum / planner.PeerCount;
            result[s] = new ShardDepthReport(s, max, mean, planner.BestDepth(s));
        }

        return result;
    }

    private static (int Max, int P99, int OverBudget) Uploads(Planner planner)
    {
        var histogram = new long[64];
        var max = 0;
        var over = 0;
        foreach (var peer in planner.Peers)
        {
            var used = planner.UsedUnits(peer);
            if (used >= histogram.Length)
            {
                Array.Resize(ref histogram, Math.Max(used + 1, histogram.Length * 2));
            }

            histogram[used]++;
            max = Math.Max(max, used);
            over += used > planner.Budget(peer) ? 1 : 0;
        }

        // The smallest value at or above which at most 1% of peers lie.
        var rank = (long)Math.Ceiling(planner.PeerCount * 0.99);
        long seen = 0;
        var p99 = 0;
        for (var v = 0; v < histogram.Length; v++)
        {
            seen += histogram[v];
            if (seen >= rank)
            {
                p99 = v;
                break;
            }
        }

        return (max, p99, over);
    }
}

/// <summary>Wall and thread CPU time of consecutive phases on the calling thread.</summary>
internal struct PhaseClock()
{
    private long _wall = Stopwatch.GetTimestamp();
    private long _cpu = ThreadCpuClock.Nanoseconds();

    /// <summary>The time since the last lap (or the start), and a new lap begins.</summary>
    public PhaseTime Lap()
    {
        var (wall, cpu) = (Stopwatch.GetTimestamp(), ThreadCpuClock.Nanoseconds());
        var lap = new PhaseTime(Stopwatch.GetElapsedTime(_wall, wall), TimeSpan.FromTicks((cpu - _cpu) / 100));
        (_wall, _cpu) = (wall, cpu);
        return lap;
    }
}

using System.Text;
using System.Text.Json;
using ShardStream.Simulation;

namespace ShardStream.Cli;

/// <summary><c>shardstream simulate --json</c>: every figure of the text report as one JSON object.</summary>
internal static class SimulateJson
{
    public static string Format(SimulationReport report)
    {
        var o = report.Options;
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("topology", o.Topology.ToString().ToLowerInvariant());
            w.WriteNumber("shards", o.ShardCount);
            w.WriteNumber("seed", o.Seed);
            w.WriteNumber("peers", report.PeerCount);
            w.WriteNumber("joins", report.Joins);
            w.WriteNumber("churnLeaves", report.Leaves);
            w.WriteNumber("churnEvicted", report.ChurnEvicted);
            if (o.UploadMix is { } mix)
            {
                w.WriteString("uploadMix", mix.ToString());
                w.WriteNumber("meanUpload", mix.MeanUpload);
                w.WriteStartArray("budgetsDrawn");
                foreach (var b in report.BudgetMix)
                {
                    w.WriteStartObject();
                    w.WriteNumber("budget", b.Budget);
                    w.WriteNumber("peers", b.Peers);
                    w.WriteEndObject();
                }

                w.WriteEndArray();
            }

            w.WriteNumber("peerBudget", report.PeerBudget);
            w.WriteNumber("evictions", report.Evictions);
            w.WriteNumber("neverPlaced", report.Unplaced);
            w.WriteNumber("refusedJoins", report.RefusedJoins);
            Shards(w, "shardDepths", report.Shards);
            w.WriteNumber("policyBestDepth", report.PolicyBestDepth);
            w.WriteNumber("maxPeerUpload", report.MaxPeerUpload);
            w.WriteNumber("p99PeerUpload", report.P99PeerUpload);
            w.WriteNumber("peersOverBudget", report.PeersOverBudget);
            w.WriteNumber("sourceBudget", report.SourceBudget);
            w.WriteNumber("sourceUpload", report.SourceUpload);
            w.WriteNumber("sourceUploadMultiple", report.SourceUploadMultiple);
            w.WriteNumber("joinMoves", report.JoinMoves);
            w.WriteNumber("churnMoves", report.ChurnMoves);
            w.WriteNumber("fosteredEdges", report.FosteredEdges);
            w.WriteNumber("joinsPerSecond", Math.Round(report.JoinsPerSecond));
            w.WriteNumber("buildSeconds", report.BuildTime.TotalSeconds);
            w.WriteNumber("managedBytes", report.ManagedBytes);
            w.WriteNumber("workingSetBytes", report.WorkingSetBytes);
            if (report.BranchFailure is { } f)
            {
                w.WriteStartObject("branchFailure");
                w.WriteNumber("peersFailed", f.PeersFailed);
                w.WriteNumber("branches", f.Branches);
                w.WriteNumber("shard", f.Shard);
                w.WriteNumber("reattachments", f.Reattachments);
                w.WriteNumber("evicted", f.Evicted);
                w.WriteNumber("maxDepthBefore", f.MaxDepthBefore);
                w.WriteNumber("maxDepthAfter", f.MaxDepthAfter);
                w.WriteNumber("bestDepthAfter", f.BestDepthAfter);
                w.WriteNumber("repairMilliseconds", f.RepairTime.TotalMilliseconds);
                Shards(w, "shardDepthsAfter", f.ShardsAfter);
                w.WriteEndObject();
            }

            if (o.Latency is { } model)
            {
                w.WriteString("latencyModel", model.Description);
                Latency(w, "latencyAware", report.LatencyAware!);
                Latency(w, "latencyBlind", report.LatencyBlind!);
                if (report.LatencyAwareImproved is { } improved)
                {
                    w.WriteNumber("improveSeconds", o.ImproveSeconds);
                    w.WriteNumber("latencyMovesPerSecond", o.MovesCap(report.PeerCount));
                    w.WriteNumber("latencyMovesShare", o.LatencyRebuild ? o.LatencyMovesShare : 0);
                    w.WriteBoolean("latencyRebuild", o.LatencyRebuild);
                    w.WriteNumber("improveMoves", report.ImproveMoves);
                    if (o.LatencyRebuild)
                    {
                        w.WriteNumber("rebuildSampleSeconds", RebuildStep.RebuildSampleSeconds);
                        w.WriteStartArray("latencyRebuilds");
                        foreach (var r in report.Rebuilds ?? [])
                        {
                            w.WriteStartObject();
                            w.WriteNumber("second", r.Second);
                            w.WriteNumber("edgesMoved", r.EdgesMoved);
                            w.WriteNumber("meanRdp", r.MeanRdp);
                            w.WriteNumber("meanEdgeRttMs", r.MeanEdgeRttMs);
                            w.WriteNumber("meanSourceDelayMs", r.MeanSourceDelayMs);
                            w.WriteNumber("p95SourceDelayMs", r.P95SourceDelayMs);
                            w.WriteNumber("maxDepth", r.MaxDepth);
                            w.WriteNumber("worstMaxDepth", r.WorstMaxDepth);
                            w.WriteNumber("worstMeanRdp", r.WorstMeanRdp);
                            w.WriteEndObject();
                        }

                        w.WriteEndArray();
                        w.WriteStartArray("latencyRebuildPlannings");
                        foreach (var r in report.RebuildPlannings ?? [])
                        {
                            w.WriteStartObject();
                            w.WriteNumber("second", r.Second);
                            w.WriteBoolean("carriedOut", r.CarriedOut);
                            w.WriteNumber("estimatedBeforeMs", r.EstimatedBeforeMs);
                            w.WriteNumber("estimatedAfterMs", r.EstimatedAfterMs);
                            w.WriteNumber("measuredBeforeMs", r.MeasuredBeforeMs);
                            w.WriteNumber("measuredAfterMs", r.MeasuredAfterMs);
                            w.WriteNumber("plannedMaxDepth", r.PlannedMaxDepth);
                            w.WriteBoolean("deeperThanBound", r.DeeperThanBound);
                            Phase(w, "lock", r.LockHeld);
                            Phase(w, "snapshot", r.Snapshot);
                            Phase(w, "planning", r.Planning);
                            Phase(w, "firstMoves", r.FirstMoves);
                            w.WriteEndObject();
                        }

                        w.WriteEndArray();
                    }

                    Latency(w, "latencyAwareImproved", improved);
                }
            }

            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>A phase's wall and CPU milliseconds as <c>NAMEMilliseconds</c> and <c>NAMECpuMilliseconds</c>.</summary>
    private static void Phase(Utf8JsonWriter w, string name, PhaseTime time)
    {
        w.WriteNumber(name + "Milliseconds", time.Wall.TotalMilliseconds);
        w.WriteNumber(name + "CpuMilliseconds", time.Cpu.TotalMilliseconds);
    }

    private static void Shards(Utf8JsonWriter w, string name, IReadOnlyList<ShardDepthReport> shards)
    {
        w.WriteStartArray(name);
        foreach (var s in shards)
        {
            w.WriteStartObject();
            w.WriteNumber("shard", s.Shard);
            w.WriteNumber("maxDepth", s.MaxDepth);
            w.WriteNumber("meanDepth", s.MeanDepth);
            if (s.BestDepth == int.MaxValue)
            {
                w.WriteNull("bestDepth");
            }
            else
            {
                w.WriteNumber("bestDepth", s.BestDepth);
            }

            w.WriteEndObject();
        }

        w.WriteEndArray();
    }

    private static void Latency(Utf8JsonWriter w, string name, LatencyReport l)
    {
        w.WriteStartObject(name);
        w.WriteNumber("maxDepth", l.MaxDepth);
        w.WriteNumber("meanEdgeRttMs", l.MeanEdgeRttMs);
        w.WriteNumber("p95EdgeRttMs", l.P95EdgeRttMs);
        w.WriteNumber("meanSourceDelayMs", l.MeanSourceDelayMs);
        w.WriteNumber("p95SourceDelayMs", l.P95SourceDelayMs);
        w.WriteNumber("meanRdp", l.MeanRdp);
        w.WriteNumber("pingsPerJoin", l.PingsPerJoin);
        w.WriteNumber("maxPingsPerJoin", l.MaxPingsPerJoin);
        if (double.IsNaN(l.CoordinateMedianError))
        {
            w.WriteNull("coordinateMedianError");
        }
        else
        {
            w.WriteNumber("coordinateMedianError", l.CoordinateMedianError);
        }

        w.WriteNumber("joinsPerSecond", Math.Round(l.JoinsPerSecond));
        if (double.IsNaN(l.JoinsPerCpuSecond))
        {
            w.WriteNull("joinsPerCpuSecond");
        }
        else
        {
            w.WriteNumber("joinsPerCpuSecond", Math.Round(l.JoinsPerCpuSecond));
        }

        w.WriteEndObject();
    }
}

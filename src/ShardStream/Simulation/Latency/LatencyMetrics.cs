using ShardStream.Topology;

namespace ShardStream.Simulation;

/// <summary>Measures a built overlay under a latency model: edge RTTs, source-to-peer delays, RDP.</summary>
internal static class LatencyMetrics
{
    public static LatencyReport Measure(Planner planner, LatencyModel model, LatencyJoiner? joiner, double joinsPerSecond, double joinsPerCpuSecond, int seed)
    {
        var peers = planner.PeerCount;
        var edges = new float[(long)peers * planner.ShardCount];
        var worst = WorstDelays(planner, model, edges, out var edgeCount);
        var maxDepth = MaxDepth(planner);

        var sourceDelays = new double[peers];
        double rdpSum = 0, delaySum = 0;
        var i = 0;
        foreach (var peer in planner.Peers)
        {
            sourceDelays[i++] = worst[peer];
            delaySum += worst[peer];
            rdpSum += worst[peer] / (model.RttMs(Planner.Source, peer) / 2);
        }

        double edgeSum = 0;
        for (var e = 0; e < edgeCount; e++)
        {
            edgeSum += edges[e];
        }

        Array.Sort(edges, 0, edgeCount);
        Array.Sort(sourceDelays);
        return new LatencyReport(
            planner.LatencyAware,
            maxDepth,
            edgeCount == 0 ? 0 : edgeSum / edgeCount,
            edgeCount == 0 ? 0 : edges[Percentile(edgeCount, 0.95)],
            peers == 0 ? 0 : delaySum / peers,
            peers == 0 ? 0 : sourceDelays[Percentile(peers, 0.95)],
            peers == 0 ? 0 : rdpSum / peers,
            joiner is null || joiner.Joins == 0 ? 0 : (double)joiner.Pings / joiner.Joins,
            joiner?.MaxPingsPerJoin ?? 0,
            planner.LatencyAware ? CoordinateError(planner, model, seed) : double.NaN,
            joinsPerSecond,
            joinsPerCpuSecond);
    }

    /// <summary>The deepest of the plan's trees.</summary>
    public static int MaxDepth(Planner planner)
    {
        var maxDepth = 0;
        for (var s = 0; s < planner.ShardCount; s++)
        {
            maxDepth = Math.Max(maxDepth, planner.MaxDepth(s));
        }

        return maxDepth;
    }

    /// <summary>Mean over the live peers of their delay from the source in their slowest tree over the direct route's (RDP), as <see cref="Measure"/> gives it, without the rest.</summary>
    public static double MeanRdp(Planner planner, LatencyModel model)
    {
        var worst = WorstDelays(planner, model, null, out _);
        double rdpSum = 0;
        foreach (var peer in planner.Peers)
        {
            rdpSum += worst[peer] / (model.RttMs(Planner.Source, peer) / 2);
        }

        return planner.PeerCount == 0 ? 0 : rdpSum / planner.PeerCount;
    }

    /// <summary>Per peer id, its delay from the source (ms, half the RTT of every edge on its path) in its slowest tree; each edge's RTT into <paramref name="edges"/> when given.</summary>
    private static double[] WorstDelays(Planner planner, LatencyModel model, float[]? edges, out int edgeCount)
    {
        var size = planner.NextPeerId;
        var worst = new double[size];
        var delay = new double[size];
        var done = new bool[size];
        var stack = new Stack<int>();
        edgeCount = 0;
        for (var s = 0; s < planner.ShardCount; s++)
        {
            Array.Clear(done);
            done[Planner.Source] = true;
            delay[Planner.Source] = 0;
            foreach (var peer in planner.Peers)
            {
                // Climb to the nearest node whose delay is known, then come back down.
                var node = peer;
                while (!done[node])
                {
                    stack.Push(node);
                    node = planner.ParentOf(node, s);
                }

                while (stack.Count > 0)
                {
                    var child = stack.Pop();
                    var parent = planner.ParentOf(child, s);
                    var rtt = model.RttMs(parent, child);
                    delay[child] = delay[parent] + (rtt / 2);
                    done[child] = true;
                    if (edges is not null)
                    {
                        edges[edgeCount++] = (float)rtt;
                    }
                }

                worst[peer] = Math.Max(worst[peer], delay[peer]);
            }
        }

        return worst;
    }

    /// <summary>The smallest index at or below which at least <paramref name="q"/> of <paramref name="count"/> sorted values lie.</summary>
    private static int Percentile(int count, double q) => Math.Clamp((int)Math.Ceiling(count * q) - 1, 0, count - 1);

    /// <summary>Median |estimate - rtt| / rtt over up to 10,000 random pairs of live nodes (seeded).</summary>
    private static double CoordinateError(Planner planner, LatencyModel model, int seed)
    {
        var nodes = planner.Peers.Prepend(Planner.Source).ToArray();
        if (nodes.Length < 2)
        {
            return double.NaN;
        }

        var random = new Random(seed + 2);
        var errors = new List<double>();
        for (var n = 0; n < 10_000; n++)
        {
            var a = nodes[random.Next(nodes.Length)];
            var b = nodes[random.Next(nodes.Length)];
            if (a == b)
            {
                continue;
            }

            var rtt = model.RttMs(a, b);
            errors.Add(Math.Abs(planner.CoordinateOf(a).EstimateRtt(planner.CoordinateOf(b)) - rtt) / rtt);
        }

        errors.Sort();
        return errors.Count == 0 ? double.NaN : errors[errors.Count / 2];
    }
}

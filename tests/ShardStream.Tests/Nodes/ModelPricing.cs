using ShardStream.Nodes;
using ShardStream.Simulation;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A coordinator's plan priced by the latency model its virtual network runs on (the rebuild's
/// figures tests): each peer's delay from the source is the slowest of its shards' paths, half
/// the RTT of every edge on it; its RDP that delay over half its RTT to the source.
/// </summary>
internal static class ModelPricing
{
    /// <summary>The peers of <paramref name="snapshot"/>, each one's delay from the source (same order), the mean edge RTT and the mean RDP; <paramref name="host"/> maps a node id to its model node (0 the coordinator).</summary>
    public static (OverlayNode[] Peers, double[] Delays, double MeanEdgeRttMs, double MeanRdp) Price(OverlaySnapshot snapshot, LatencyModel model, Func<int, int> host)
    {
        var byId = snapshot.Nodes.ToDictionary(n => n.Id);
        var peers = snapshot.Nodes.Where(n => n.Id != 0).ToArray();
        var delays = peers.Select(n => Enumerable.Range(0, snapshot.ShardCount).Max(s =>
        {
            double delay = 0;
            for (var node = n; node.Id != 0; node = byId[node.Parents[s]]) delay += model.RttMs(host(node.Parents[s]), host(node.Id)) / 2;
            return delay;
        })).ToArray();
        double edge = peers.SelectMany(n => Enumerable.Range(0, snapshot.ShardCount).Select(s => model.RttMs(host(n.Parents[s]), host(n.Id)))).Average();
        double rdp = peers.Select((n, i) => delays[i] / (model.RttMs(0, host(n.Id)) / 2)).Average();
        return (peers, delays, edge, rdp);
    }
}

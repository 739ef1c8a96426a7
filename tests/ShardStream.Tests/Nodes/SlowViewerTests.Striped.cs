using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Topology;

namespace ShardStream.Tests.Nodes;

/// <summary>A slow viewer that is the only home peer of its stripe in a small striped overlay.</summary>
public sealed partial class SlowViewerTests
{
    /// <summary>
    /// The namespace case (scripts/netns-unequal.py --viewers 4 --shards 4 --topology striped --in
    /// 5=700kbit): with as many viewers as stripes, each viewer is the only home peer of one
    /// stripe, the only peer that may forward that shard. The last joiner's download is a third of
    /// the stream rate, and it feeds the others their shard of its stripe. It was never demoted
    /// ("no spare upload to re-place its children", event 904, at every finding): the check counted
    /// only its stripe's home peers and the coordinator as room for its children, though the repair
    /// has home peers of other stripes foster them. The two viewers it fed fell 26 s behind across
    /// namespaces. Now it is demoted, its children are fostered, and every other viewer gets back to
    /// the live rate and writes every byte.
    /// </summary>
    [Fact]
    public async Task A_slow_viewer_that_is_the_only_home_peer_of_its_stripe_is_demoted_and_the_others_keep_the_live_rate()
    {
        const int rate = 256 * 1024;           // 2.1 Mbit/s, 0.5 Mbit/s a shard
        var lagBound = TimeSpan.FromSeconds(1.5);
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 4, configure: o => o with { Topology = TopologyKind.Striped }, loggers: logs.Factory);
        var peers = new List<Peer>();
        for (int i = 0; i < 4; i++) peers.Add(await overlay.AddPeerAsync());
        var slow = peers[^1];
        var healthy = peers.Where(p => p != slow).ToList();
        var nodes = overlay.Coordinator.Snapshot().Nodes;
        string Plan() => string.Join("; ", overlay.Coordinator.Snapshot().Nodes.Select(n => $"{n.Id} <- {string.Join(",", n.Parents)} ({n.Budget})"));
        // The slow viewer feeds others in one stripe, where no other peer forwards anything.
        int stripe = Enumerable.Range(0, 4).FirstOrDefault(s => nodes.Any(n => n.Parents.Length > s && n.Parents[s] == slow.Id), -1);
        Assert.True(stripe >= 0, $"the slow viewer feeds nobody: {Plan()}");
        Assert.True(nodes.All(n => n.Id == 0 || n.Parents[stripe] is 0 || n.Parents[stripe] == slow.Id), $"another peer forwards shard {stripe}: {Plan()}");
        overlay.Network.SetDownloadRate(overlay.PeerById(slow.Id).Host, rate / 3);
        overlay.StartStreaming();
        await using var source = LiveSource.Start(overlay, rate, maxSeconds: 60, seed: 21);

        string Lags() => string.Join(", ", healthy.Select(p => $"peer {p.Id} {source.Lag(p).TotalSeconds:0.0} s"));
        try
        {
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {slow.Id} demoted") || source.Ended, "the slow viewer is demoted");
            Assert.False(source.Ended, $"the slow viewer was never demoted: {Lags()}; {Plan()}");
            output.WriteLine($"demoted at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {Plan()}");
            await Overlay.WaitUntilAsync(() => healthy.All(p => source.Lag(p) < lagBound) || source.Ended, $"the other viewers are within {lagBound.TotalSeconds} s of the source");
            Assert.False(source.Ended, $"the source ended first: {Lags()}");
            output.WriteLine($"caught up at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {Plan()}");
        }
        finally
        {
            foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Warning)) output.WriteLine($"{source.At(l.Timestamp).TotalSeconds:0.0} {l.Category}: {l.Message}");
        }

        nodes = overlay.Coordinator.Snapshot().Nodes;
        Assert.Equal(0, nodes.Single(n => n.Id == slow.Id).Budget);
        Assert.DoesNotContain(nodes, n => n.Parents.Contains(slow.Id));
        // It leaves (a leaf now: nobody depends on it), and the others get the rest of the stream.
        await slow.DisposeAsync();
        await source.StopAsync();
        await overlay.EndAsync();
        foreach (var p in healthy) await overlay.AssertIdenticalAsync(overlay.PeerById(p.Id));
    }
}

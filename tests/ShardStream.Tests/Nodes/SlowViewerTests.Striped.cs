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
        var lagBound = TimeSpan.FromSeconds(1.5);
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 4, configure: o => o with { Topology = TopologyKind.Striped }, loggers: logs.Factory);
        var (slow, healthy) = await StartStripedAsync(overlay);
        string Plan() => PlanOf(overlay);
        await using var source = LiveSource.Start(overlay, StripedRate, maxSeconds: 60, seed: 21);

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

        var nodes = overlay.Coordinator.Snapshot().Nodes;
        Assert.Equal(0, nodes.Single(n => n.Id == slow.Id).Budget);
        Assert.DoesNotContain(nodes, n => n.Parents.Contains(slow.Id));
        // It leaves (a leaf now: nobody depends on it), and the others get the rest of the stream.
        // On purpose, with a goodbye: disposed, it was a peer whose link broke just before the end,
        // whose place the coordinator keeps for its rejoin (it may need the tail), and the end
        // waited out that grace, 40 s of the test's 48.
        await slow.LeaveAsync(TimeSpan.FromSeconds(10));
        await source.StopAsync();
        await overlay.EndAsync();
        foreach (var p in healthy) await overlay.AssertIdenticalAsync(overlay.PeerById(p.Id));
    }
    /// <summary>2.1 Mbit/s, 0.5 Mbit/s a shard; the slow viewer's download is a third of it.</summary>
    internal const int StripedRate = 256 * 1024;

    internal static string PlanOf(Overlay overlay) => string.Join("; ", overlay.Coordinator.Snapshot().Nodes.Select(n => $"{n.Id} <- {string.Join(",", n.Parents)} ({n.Budget})"));

    /// <summary>
    /// Four viewers in a striped overlay of four stripes; the last, the only home peer of its
    /// stripe, gets a download of a third of <see cref="StripedRate"/>. Streaming starts.
    /// </summary>
    private static async Task<(Peer Slow, List<Peer> Healthy)> StartStripedAsync(Overlay overlay)
    {
        var peers = new List<Peer>();
        for (int i = 0; i < 4; i++) peers.Add(await overlay.AddPeerAsync());
        var slow = peers[^1];
        var nodes = overlay.Coordinator.Snapshot().Nodes;
        // The slow viewer feeds others in one stripe, where no other peer forwards anything.
        int stripe = Enumerable.Range(0, 4).FirstOrDefault(s => nodes.Any(n => n.Parents.Length > s && n.Parents[s] == slow.Id), -1);
        Assert.True(stripe >= 0, $"the slow viewer feeds nobody: {PlanOf(overlay)}");
        Assert.True(nodes.All(n => n.Id == 0 || n.Parents[stripe] is 0 || n.Parents[stripe] == slow.Id), $"another peer forwards shard {stripe}: {PlanOf(overlay)}");
        overlay.Network.SetDownloadRate(overlay.PeerById(slow.Id).Host, StripedRate / 3);
        overlay.StartStreaming();
        return (slow, [.. peers.Where(p => p != slow)]);
    }

    /// <summary>
    /// The same slow viewer, demoted, then stopped as a leaf: it is told a download within a factor
    /// two of its link. Across namespaces (a 700 kbit/s tbf) it was told "92 kbit/s" and "50 kbit/s":
    /// the figure was one parent's share of its link, as that parent handed bytes to its transport
    /// over a few seconds, scaled to the stream; its parents cannot measure its download.
    /// </summary>
    [Fact]
    public async Task A_slow_viewer_stopped_as_a_leaf_is_told_a_download_near_its_link_rate()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 4, configure: o => o with { Topology = TopologyKind.Striped }, loggers: logs.Factory);
        var (slow, _) = await StartStripedAsync(overlay);
        var slowRun = overlay.PeerById(slow.Id).Run;
        await using var source = LiveSource.Start(overlay, StripedRate, maxSeconds: 60, seed: 22);
        try
        {
            await Overlay.WaitUntilAsync(() => slowRun.IsCompleted || source.Ended, "the slow viewer is stopped");
        }
        finally
        {
            foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Warning)) output.WriteLine($"{source.At(l.Timestamp).TotalSeconds:0.0} {l.Category}: {l.Message}");
        }
        var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => slowRun);
        output.WriteLine(stopped.Message);
        await slow.DisposeAsync();
        var figures = BelowRateMessage.Pattern().Match(stopped.Message);
        Assert.True(figures.Success, $"the slow viewer stopped with: {stopped.Message}");
        double link = StripedRate / 3 * 8 / 1e6;   // 0.7 Mbit/s
        double download = BelowRateMessage.DownloadOf(figures);
        Assert.True(download >= link / 2 && download <= link * 1.5, $"told a download of {download:0.00} Mbit/s, its link carries {link:0.00}: {stopped.Message}");
        await source.StopAsync();
        await overlay.EndAsync();
    }
}

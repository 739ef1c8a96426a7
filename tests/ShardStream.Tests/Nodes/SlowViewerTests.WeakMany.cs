using Microsoft.Extensions.Logging;
using ShardStream.Topology;

namespace ShardStream.Tests.Nodes;

/// <summary>Several relays whose uplinks carry far less than they declared, in one overlay, at once.</summary>
public sealed partial class SlowViewerTests
{
    /// <summary>
    /// The namespace case (16 viewers on 16 hosts, K = 4 striped, a 2 Mbit/s live stream, the
    /// default --upload everywhere, five of them behind 0.5 Mbit/s uplinks: 0 to 7 of 16 wrote the
    /// whole stream). Here: 16 viewers, K = 4 striped, four weak relays whose uplinks carry 1.8
    /// shard-streams for the two to four children each feeds, and home peers that give twice as
    /// much (the room that re-places those children; one in each stripe). The weak relays starve their children at the
    /// same time; the demotion spacing let one relief through at a time (event 905; across
    /// namespaces the eviction, the last resort, also counted each one's starving children as a
    /// busy machine's, event 920). The spacing is
    /// stretched to 60 s so that the rule, not how fast this machine is, decides: before, the last
    /// weak relay still fed its children when the 70 s source ended and a viewer was 35 s behind.
    /// Now every weak relay is relieved and every other viewer writes the whole stream.
    /// </summary>
    [Fact]
    public async Task Several_relays_whose_uplinks_do_not_carry_their_children_are_all_relieved_and_every_other_viewer_writes_the_whole_stream()
    {
        const int viewers = 16, rate = StripedRate;
        int shard = rate / 4;
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 4, configure: o => o with { Topology = TopologyKind.Striped, Upload = 1, DemotionSpacing = TimeSpan.FromSeconds(60) }, loggers: logs.Factory);
        // Every fourth joiner gives twice as much: the room that re-places a weak relay's children.
        for (int i = 1; i <= viewers; i++) await overlay.AddPeerAsync(upload: i % 4 == 0 ? 2 : 1);
        var nodes = overlay.Coordinator.Snapshot().Nodes;
        int ChildrenOf(int id, int s) => nodes.Count(n => n.Parents.Length > s && n.Parents[s] == id);
        // Four of the others (peer ids follow the joins) that feed two or more in a stripe, those that feed most first.
        var weakIds = new List<int>();
        foreach (var (id, _) in nodes.Where(n => n.Id != 0 && n.Id % 4 != 0).SelectMany(n => Enumerable.Range(0, 4).Where(s => ChildrenOf(n.Id, s) >= 2).Select(s => (n.Id, Children: ChildrenOf(n.Id, s))))
            .OrderByDescending(c => c.Children).ThenBy(c => c.Id))
        {
            if (weakIds.Count < 4 && !weakIds.Contains(id)) weakIds.Add(id);
        }
        Assert.True(weakIds.Count == 4, $"not the shape the test needs (four relays with two children or more, beside the home peers that give twice as much): {PlanOf(overlay)}");
        output.WriteLine($"plan: {PlanOf(overlay)}; weak: {string.Join(",", weakIds)}");
        var others = overlay.Peers.Select(p => p.Peer).Where(p => !weakIds.Contains(p.Id)).ToList();
        var weakAddresses = weakIds.Select(id => nodes.Single(n => n.Id == id).Address).ToHashSet();
        // Each carries 1.8 shard-streams; its children need two to four.
        foreach (int id in weakIds) overlay.Network.SetUploadRate(overlay.PeerById(id).Host, shard * 9 / 5);
        overlay.StartStreaming();
        await using var source = LiveSource.Start(overlay, rate, maxSeconds: 70, seed: 43);

        string Lags() => string.Join(", ", others.Select(p => $"peer {p.Id} {source.Lag(p).TotalSeconds:0.0} s"));
        // Weak viewers (or their rejoins, by address) that feed more than one shard-stream.
        IEnumerable<int> Unrelieved() => overlay.Coordinator.Snapshot().Nodes is var now
            ? now.Where(n => weakAddresses.Contains(n.Address) && now.Sum(c => c.Parents.Count(p => p == n.Id)) > 1).Select(n => n.Id)
            : [];
        try
        {
            await Overlay.WaitUntilAsync(() => source.Ended || !Unrelieved().Any(), "every weak relay is relieved", TimeSpan.FromSeconds(150));
            Assert.False(source.Ended, $"the source ended first, weak relays still feeding more than one shard-stream: {string.Join(",", Unrelieved())}; {Lags()}; {PlanOf(overlay)}");
            output.WriteLine($"relieved at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {PlanOf(overlay)}");
            await Overlay.WaitUntilAsync(() => source.Ended, "the source ends", TimeSpan.FromSeconds(150));
            await source.StopAsync();
            await overlay.EndAsync(TimeSpan.FromSeconds(120));
            foreach (var p in others)
            {
                await overlay.PeerById(p.Id).Run.WaitAsync(TimeSpan.FromSeconds(120));
                output.WriteLine($"peer {p.Id}: wrote {p.StartOffset + p.BytesWritten}, lost {p.LostBytes}");
            }
        }
        finally
        {
            foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Warning && l.Category == "coordinator")) output.WriteLine($"{source.At(l.Timestamp).TotalSeconds:0.0} {l.Category}: {l.Message}");
        }
        foreach (var p in others) await overlay.AssertIdenticalAsync(overlay.PeerById(p.Id));
    }
}

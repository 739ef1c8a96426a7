using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using Xunit.Abstractions;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A viewer with several parents (K &gt; 1) that reads one of them slowly on purpose, while its
/// other parents keep it fed: behind at that peer parent only (event 924), which the coordinator
/// took for that parent's upload failing it (704c54e).
/// </summary>
public sealed class OneParentSlowReaderTests(ITestOutputHelper output)
{
    /// <summary>
    /// K = 4, a coordinator with one slot a stripe, four viewers with --upload 1, each the only home
    /// of a stripe and feeding the three others there (<see cref="SlowViewerTests.FourStripeHomesAsync"/>).
    /// One of the last one's children reads its link from it at 0.6 of a shard-stream (above the
    /// trickle bound, so that nobody cuts it off), while that relay keeps its two other children
    /// fed. Found by a review of 704c54e: with no free slot to move the reader to, each of its
    /// findings demoted the honest relay (or made it shed, and, as the only child left, evict it
    /// and cap it to what it took for 10 minutes), and under each new parent in turn. The relay
    /// keeps its place and its budget, and every viewer but the reader writes the whole stream.
    /// </summary>
    [Fact]
    public async Task A_viewer_that_reads_one_parent_slowly_does_not_get_that_relay_demoted_shed_or_evicted()
    {
        int shard = SlowViewerTests.StripedRate / 4;
        var logs = new LogCapture();
        var (started, peers) = await SlowViewerTests.FourStripeHomesAsync(logs);
        await using var overlay = started;
        var relay = peers[^1];
        var reader = peers[0];
        var nodes = overlay.Coordinator.Snapshot().Nodes;
        int stripe = Enumerable.Range(0, 4).FirstOrDefault(s => nodes.Single(n => n.Id == reader.Id).Parents[s] == relay.Id, -1);
        var siblings = peers.Where(p => p != relay && p != reader && nodes.Single(n => n.Id == p.Id).Parents[stripe] == relay.Id).ToList();
        Assert.True(stripe >= 0 && siblings.Count > 0, $"not the shape the test needs (peer {reader.Id} and others under peer {relay.Id} in a stripe): {SlowViewerTests.PlanOf(overlay)}");
        int budget = nodes.Single(n => n.Id == relay.Id).Budget;
        output.WriteLine($"plan: {SlowViewerTests.PlanOf(overlay)}; peer {reader.Id} reads peer {relay.Id}'s link (shard {stripe}) at 0.6 shard-stream; its siblings there: {string.Join(",", siblings.Select(p => p.Id))}");
        overlay.Network.SetPathRate(overlay.PeerById(relay.Id).Host, overlay.PeerById(reader.Id).Host, shard * 3 / 5);
        overlay.StartStreaming();
        var source = LiveSource.Start(overlay, SlowViewerTests.StripedRate, maxSeconds: 50, seed: 47);
        // Demoted (902, 912), made to shed (918) or evicted (919, which caps it).
        bool Lost(string m) => m.StartsWith($"peer {relay.Id} demoted", StringComparison.Ordinal) || m.StartsWith($"peer {relay.Id} evicted", StringComparison.Ordinal)
            || (m.StartsWith($"peer {relay.Id} is not demoted", StringComparison.Ordinal) && m.Contains("its budget drops from", StringComparison.Ordinal));
        bool Harmed() => logs.Lines.Any(l => l.Level >= LogLevel.Warning && Lost(l.Message));
        // The reader was found behind at the relay for the whole grace (its findings reached the 924 path).
        string judged = $"peer {reader.Id}, judged as a leaf, is still slow";
        try
        {
            await Overlay.WaitUntilAsync(() => Harmed() || source.Ended, "the relay is demoted, shed or evicted, or the source ends", within: TimeSpan.FromSeconds(120));
            output.WriteLine($"at {source.Elapsed.TotalSeconds:0.0} s: {SlowViewerTests.PlanOf(overlay)}");
            Assert.True(logs.Has(LogLevel.Warning, judged), $"peer {reader.Id} was never judged behind at peer {relay.Id}: the test proves nothing");
            Assert.False(Harmed(), $"the honest relay, peer {relay.Id}, lost its place for the one child that reads it slowly: {string.Join(" | ", logs.Lines.Where(l => Lost(l.Message)).Select(l => l.Message))}");
            var after = overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == relay.Id);
            Assert.True(after is not null && after.Budget == budget, $"peer {relay.Id} has budget {after?.Budget} now, {budget} before: {SlowViewerTests.PlanOf(overlay)}");
            await source.StopAsync();
        }
        finally
        {
            foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Warning)) output.WriteLine($"{source.At(l.Timestamp).TotalSeconds:0.0} {l.Category}: {l.Message}");
            await source.DisposeAsync();
        }
        await overlay.EndAsync();
        foreach (var p in peers.Where(p => p != reader)) await overlay.AssertIdenticalAsync(overlay.PeerById(p.Id));
    }
}

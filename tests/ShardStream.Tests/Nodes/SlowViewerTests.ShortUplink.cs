using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>A fast viewer left under a relay whose uplink was found short is not judged on that relay's findings.</summary>
public sealed partial class SlowViewerTests
{
    /// <summary>
    /// Seen across network namespaces (run1: K = 4, 4 Mbit/s, a viewer behind a 1 Mbit/s uplink):
    /// the weak viewer's children were found slow together and it shed them, twice; a 50 Mbit/s
    /// viewer left under it was then found slow alone, judged as a leaf on that relay's word, and
    /// stopped with "your download is below the stream rate", the verdict meant for the viewer
    /// behind a 2 Mbit/s download. Here: a coordinator with two slots feeds the weak relay W
    /// (upload 2, uplink 0.8 of the stream) and a relay A (upload 3) with one free slot; W's two
    /// fast leaves are found slow together, W sheds one into A's slot and keeps the other, which
    /// its uplink still cannot carry, with no free slot left anywhere. That viewer is not stopped:
    /// W's findings count against W. Once a slot frees it moves, gets back to the live rate and
    /// writes every byte; a viewer whose own download is half the stream rate, placed under A
    /// afterwards, is still stopped there with its one-line reason.
    /// </summary>
    [Fact]
    public async Task A_fast_viewer_left_under_a_relay_whose_uplink_was_found_short_is_not_stopped_as_slow_and_a_slow_viewer_still_is()
    {
        Peer? lone = null;
        Peer? slow = null;
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 2 }, loggers: logs.Factory);
        var (weak, relay, fast, fillers) = await TwoRelaysAsync(overlay, r: 2, x: 3, underR: 2, underX: 2);
        int Parent(Peer p) => ParentOf(overlay, p);
        // Its uplink carries 0.8 of the stream: not even one child keeps up under it.
        overlay.Network.SetUploadRate(overlay.PeerById(weak.Id).Host, ShortUplinkRate * 8 / 10);
        overlay.StartStreaming();
        await using var source = LiveSource.Start(overlay, ShortUplinkRate, maxSeconds: 110, seed: 51);

        string Lags() => string.Join(", ", fast.Select(f => $"peer {f.Id} {source.Lag(f).TotalSeconds:0.0} s"));
        try
        {
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {weak.Id} is not demoted") && fast.Any(f => Parent(f) != weak.Id) || source.Ended,
                "the weak relay sheds one of its children", within: TimeSpan.FromSeconds(90));
            Assert.False(source.Ended, $"the weak relay shed none: {Lags()}; {PlanOf(overlay)}");
            lone = fast.Single(f => Parent(f) == weak.Id);
            var loneRun = overlay.PeerById(lone.Id).Run;
            output.WriteLine($"shed at {source.Elapsed.TotalSeconds:0.0} s, peer {lone.Id} left under W: {Lags()}; {PlanOf(overlay)}");
            // Found slow alone under W, where no slot is free: before, stopped as below the stream rate.
            string alone = $", under peer {weak.Id}, whose upload was found not to carry its children";
            bool FoundAlone() => logs.Lines.Any(l => l.Level == LogLevel.Warning && l.Message.StartsWith($"peer {lone.Id} is slow (", StringComparison.Ordinal) && l.Message.Contains(alone, StringComparison.Ordinal));
            await Overlay.WaitUntilAsync(() => FoundAlone() || loneRun.IsCompleted || source.Ended,
                "the viewer left under the weak relay is found slow there alone", within: TimeSpan.FromSeconds(90));
            Assert.False(loneRun.IsCompleted, $"peer {lone.Id}, a fast viewer left under a relay whose uplink was found short, ended: {loneRun.Exception?.InnerException?.Message}");
            Assert.False(source.Ended, $"the source ended first: {Lags()}; {PlanOf(overlay)}");
            output.WriteLine($"found slow alone at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {PlanOf(overlay)}");
            // A slot frees: W's finding moves the viewer there.
            await fillers[0].LeaveAsync(TimeSpan.FromSeconds(20));
            await Overlay.WaitUntilAsync(() => (Parent(lone) != weak.Id && source.Lag(lone) < ShortUplinkLagBound) || loneRun.IsCompleted || source.Ended,
                $"peer {lone.Id} is under another parent and within {ShortUplinkLagBound.TotalSeconds} s of the source", within: TimeSpan.FromSeconds(90));
            Assert.False(loneRun.IsCompleted, $"peer {lone.Id} ended: {loneRun.Exception?.InnerException?.Message}");
            Assert.False(source.Ended, $"the source ended first: {Lags()}; {PlanOf(overlay)}");
            output.WriteLine($"moved and caught up at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {PlanOf(overlay)}");

            // A viewer whose own download is half the stream rate takes the next free slot, under A.
            await fillers[1].LeaveAsync(TimeSpan.FromSeconds(20));
            overlay.Network.SetDownloadRate($"p{overlay.Peers.Count + 1}", ShortUplinkRate / 2);
            slow = await overlay.AddPeerAsync(upload: 0);
            output.WriteLine($"slow viewer, peer {slow.Id}, joined at {source.Elapsed.TotalSeconds:0.0} s: {PlanOf(overlay)}");
            var slowRun = overlay.PeerById(slow.Id).Run;
            await Overlay.WaitUntilAsync(() => slowRun.IsCompleted || source.Ended, "the slow viewer is stopped", within: TimeSpan.FromSeconds(90));
            Assert.False(source.Ended, $"the slow viewer was not stopped before the source ended: {PlanOf(overlay)}");
            var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => slowRun);
            output.WriteLine($"stopped at {source.Elapsed.TotalSeconds:0.0} s: {stopped.Message}");
            Assert.Matches(BelowRateMessage.Pattern(), stopped.Message);
            Assert.DoesNotContain('\n', stopped.Message);
        }
        finally
        {
            WriteWarnings(logs, source);
        }

        Assert.False(logs.Has(LogLevel.Warning, $"peer {lone.Id}, judged as a leaf, is still slow"), $"peer {lone.Id} was judged as a leaf on the weak relay's finding");
        await slow.DisposeAsync();
        await source.StopAsync();
        await overlay.EndAsync();
        foreach (var p in fast.Append(relay)) await overlay.AssertIdenticalAsync(overlay.PeerById(p.Id));
    }

    /// <summary>
    /// A relay whose own download is below the stream rate, found slow by its parent, that can be
    /// neither demoted (no room elsewhere for its children) nor exchanged with a child (they relay
    /// nothing): it received the stream too slowly to pass it on, so its children starved with it,
    /// and it kept its place and its slots for good (event 904 at each finding; its eviction held as
    /// its own parent found it slow). Here: a coordinator with two slots feeds the relay R (upload
    /// 2, download half the stream rate) and X (upload 1, one free slot); R's two leaves starve with
    /// it (they are not found slow: R sends them what it gets). R is judged as a leaf and stopped
    /// with its one-line reason; its children take the slots its leaving frees (its own and X's),
    /// get back to the live rate and write every byte.
    /// </summary>
    [Fact]
    public async Task A_relay_whose_own_download_is_below_the_stream_rate_and_that_nothing_can_demote_is_stopped_and_its_children_catch_up()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 2 }, loggers: logs.Factory);
        var (relay, other, children, _) = await TwoRelaysAsync(overlay, r: 2, x: 1, underR: 2, underX: 0);
        overlay.Network.SetDownloadRate(overlay.PeerById(relay.Id).Host, ShortUplinkRate / 2);
        var relayRun = overlay.PeerById(relay.Id).Run;
        overlay.StartStreaming();
        await using var source = LiveSource.Start(overlay, ShortUplinkRate, maxSeconds: 100, seed: 52);

        string Lags() => string.Join(", ", children.Select(c => $"peer {c.Id} {source.Lag(c).TotalSeconds:0.0} s"));
        try
        {
            await Overlay.WaitUntilAsync(() => relayRun.IsCompleted || source.Ended, "the relay whose download is below the stream rate is stopped", within: TimeSpan.FromSeconds(90));
            Assert.False(source.Ended, $"the relay was never stopped: {Lags()}; {PlanOf(overlay)}");
            output.WriteLine($"stopped at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {PlanOf(overlay)}");
            var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => relayRun);
            output.WriteLine(stopped.Message);
            Assert.Matches(BelowRateMessage.Pattern(), stopped.Message);
            Assert.DoesNotContain('\n', stopped.Message);
            await Overlay.WaitUntilAsync(() => children.All(c => source.Lag(c) < ShortUplinkLagBound) || source.Ended, $"its children are within {ShortUplinkLagBound.TotalSeconds} s of the source", within: TimeSpan.FromSeconds(90));
            Assert.False(source.Ended, $"the source ended first: {Lags()}; {PlanOf(overlay)}");
            output.WriteLine($"caught up at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {PlanOf(overlay)}");
        }
        finally
        {
            WriteWarnings(logs, source);
        }

        Assert.False(logs.Has(LogLevel.Warning, "evicted ("), "the relay was evicted as an uplink that failed");
        Assert.Equal(1, logs.Lines.Count(l => l.Level == LogLevel.Warning && l.Message.Contains("stopping it (", StringComparison.Ordinal)));
        await relay.DisposeAsync();
        await source.StopAsync();
        await overlay.EndAsync();
        foreach (var p in children.Append(other)) await overlay.AssertIdenticalAsync(overlay.PeerById(p.Id));
    }

    private const int ShortUplinkRate = 256 * 1024;     // 2.1 Mbit/s

    /// <summary>How near the source a viewer must be to count as back at the live rate.</summary>
    private static readonly TimeSpan ShortUplinkLagBound = TimeSpan.FromSeconds(1.5);

    /// <summary>
    /// Two relays under a coordinator with two slots, R (declared upload <paramref name="r"/>) and X
    /// (<paramref name="x"/>), then <paramref name="underR"/> leaves, which fill R, and
    /// <paramref name="underX"/> more, which go under X; the test fails unless that is the plan.
    /// </summary>
    private static async Task<(Peer R, Peer X, Peer[] UnderR, Peer[] UnderX)> TwoRelaysAsync(Overlay overlay, double r, double x, int underR, int underX)
    {
        var relayR = await overlay.AddPeerAsync(upload: r);
        var relayX = await overlay.AddPeerAsync(upload: x);
        var leaves = new List<Peer>();
        for (int i = 0; i < underR + underX; i++) leaves.Add(await overlay.AddPeerAsync(upload: 0));
        Peer[] inR = [.. leaves.Take(underR)], inX = [.. leaves.Skip(underR)];
        Assert.True(ParentOf(overlay, relayR) == 0 && ParentOf(overlay, relayX) == 0 && inR.All(p => ParentOf(overlay, p) == relayR.Id) && inX.All(p => ParentOf(overlay, p) == relayX.Id),
            $"not the shape the test needs (R {relayR.Id} and X {relayX.Id} under the coordinator, {string.Join(", ", inR.Select(p => p.Id))} under R, {string.Join(", ", inX.Select(p => p.Id))} under X): {PlanOf(overlay)}");
        return (relayR, relayX, inR, inX);
    }
}

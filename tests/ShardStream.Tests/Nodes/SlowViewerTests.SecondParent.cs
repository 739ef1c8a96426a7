using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>A leaf behind at one peer is moved once to another parent, which judges its download, before it can be stopped.</summary>
public sealed partial class SlowViewerTests
{
    private const int SecondParentRate = 256 * 1024;     // 2.1 Mbit/s

    /// <summary>
    /// Seen across network namespaces (scripts/netns-slow-relay.sh): a relay behind a 2 Mbit/s
    /// uplink fed two children of a 1.2 Mbit/s stream, TCP gave one of them all it needed, and the
    /// other, on an uncapped link, was demoted as slow on its own (a relay) and then stopped as a
    /// leaf with "your download is below the stream rate: 0.6 vs 1.2 Mbit/s": no sibling had been
    /// found slow, so nothing pointed to the parent. Here the relay's uplink gives one child 0.6 of
    /// the stream rate and the other all it needs. The child is moved to another parent instead of
    /// being stopped, gets back to the live rate there, and every peer writes the source's bytes.
    /// </summary>
    [Fact]
    public async Task A_child_held_back_by_its_parents_uplink_alone_is_moved_to_another_parent_and_not_stopped()
    {
        var logs = new LogCapture();
        await using var overlay = await SecondParentOverlayAsync(logs);
        var (relay, held, other) = await RelayHoldingBackOneChildAsync(overlay);
        var heldRun = overlay.PeerById(held.Id).Run;
        await using var source = LiveSource.Start(overlay, SecondParentRate, maxSeconds: 90, seed: 13);
        string Lags() => $"peer {held.Id} {source.Lag(held).TotalSeconds:0.0} s, peer {other.Id} {source.Lag(other).TotalSeconds:0.0} s behind";
        var lagBound = TimeSpan.FromSeconds(1.5);
        string moved = $"peer {held.Id}, judged as a leaf, is still slow: its oldest chunk queued at its parent, peer {relay.Id}";
        try
        {
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, moved) || heldRun.IsCompleted || source.Ended, "the held-back child is judged", within: TimeSpan.FromSeconds(90));
            output.WriteLine($"judged at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {Plan(overlay)}");
            await Overlay.WaitUntilAsync(() => (ParentOf(overlay, held) != relay.Id && source.Lag(held) < lagBound && source.Lag(other) < lagBound) || heldRun.IsCompleted || source.Ended,
                $"the held-back child is under another parent and both children within {lagBound.TotalSeconds} s of the source", within: TimeSpan.FromSeconds(90));
            output.WriteLine($"caught up at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {Plan(overlay)}");
        }
        finally
        {
            WriteWarnings(logs, source);
        }

        Assert.False(heldRun.IsCompleted, $"the child held back by its parent's uplink ended: {heldRun.Exception?.InnerException?.Message}");
        Assert.False(logs.Has(LogLevel.Warning, "stopping it ("), "someone was stopped");
        Assert.False(source.Ended, $"the source ended first: {Lags()}");
        Assert.True(logs.Has(LogLevel.Warning, $"{moved}") && logs.Has(LogLevel.Warning, $"not stopped: moved to peer {other.Id}"), "the child was not moved to the only free slot, under its sibling");
        await source.StopAsync();
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }

    /// <summary>
    /// The other side: a child whose own download is below the stream rate is moved once too, and
    /// its second parent finds it slow and it is stopped there, with the figures; the others write
    /// every byte. Its probation (it was demoted first, as a relay found slow) starts over at each
    /// finding there, so it never gets its budget back.
    /// </summary>
    [Fact]
    public async Task A_child_whose_own_download_is_below_the_stream_rate_is_stopped_once_its_second_parent_finds_it_slow_too()
    {
        var logs = new LogCapture();
        await using var overlay = await SecondParentOverlayAsync(logs);
        var (relay, slow, other) = await RelayWithTwoChildrenAsync(overlay);
        overlay.Network.SetDownloadRate(overlay.PeerById(slow.Id).Host, SecondParentRate / 2);
        var slowRun = overlay.PeerById(slow.Id).Run;
        var source = LiveSource.Start(overlay, SecondParentRate, maxSeconds: 90, seed: 14);
        try
        {
            await Overlay.WaitUntilAsync(() => slowRun.IsCompleted || source.Ended, "the slow child is stopped", within: TimeSpan.FromSeconds(90));
            output.WriteLine($"stopped at {source.Elapsed.TotalSeconds:0.0} s; {Plan(overlay)}");
        }
        finally
        {
            WriteWarnings(logs, source);
            await source.DisposeAsync();
        }

        var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => slowRun);
        Assert.Matches(BelowRateMessage.Pattern(), stopped.Message);
        await slow.DisposeAsync();
        // Moved once, from the relay to the only free slot, and stopped on its second parent's finding.
        var lines = logs.Lines.Where(l => l.Level == LogLevel.Warning).Select(l => l.Message).ToList();
        int movedAt = lines.FindIndex(l => l.StartsWith($"peer {slow.Id}, judged as a leaf, is still slow", StringComparison.Ordinal) && l.Contains($"not stopped: moved to peer {other.Id}", StringComparison.Ordinal));
        int stoppedAt = lines.FindIndex(l => l.StartsWith($"peer {slow.Id}, judged as a leaf, is still slow", StringComparison.Ordinal) && l.Contains("stopping it (", StringComparison.Ordinal));
        Assert.True(movedAt >= 0, $"peer {slow.Id} was not moved first");
        Assert.True(stoppedAt > movedAt, $"peer {slow.Id} was stopped before it was moved");
        Assert.Contains($"its parent, peer {other.Id},", lines[stoppedAt], StringComparison.Ordinal);
        Assert.True(logs.Has(LogLevel.Information, $"peer {slow.Id}, judged as a leaf and found slow by peer {other.Id}, is not moved to another parent first: peer {relay.Id} found it slow too"), "the second parent's finding did not say why it stops the child");
        Assert.Equal(1, lines.Count(l => l.StartsWith($"peer {slow.Id}, judged as a leaf,", StringComparison.Ordinal) && l.Contains("not stopped: moved to", StringComparison.Ordinal)));
        // Found slow at its second parent within the probation: never given its budget back.
        Assert.False(logs.Has(LogLevel.Information, $"peer {slow.Id} re-promoted"), $"peer {slow.Id}, whose own download is below the stream rate, was re-promoted");
        await overlay.EndAsync();
        foreach (var p in overlay.Peers.Where(p => p.Peer != slow)) await overlay.AssertIdenticalAsync(p);
    }

    /// <summary>The coordinator feeds one peer (--upload 1); the shard is one stream; re-promotion after <see cref="TestProbation"/>.</summary>
    private static Task<Overlay> SecondParentOverlayAsync(LogCapture logs) =>
        Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1, RepromotionProbation = TestProbation }, loggers: logs.Factory);

    /// <summary>A relay under the coordinator and two children that relay under it; then the stream starts.</summary>
    private static async Task<(Peer Relay, Peer First, Peer Second)> RelayWithTwoChildrenAsync(Overlay overlay)
    {
        var relay = await overlay.AddPeerAsync();
        var first = await overlay.AddPeerAsync();
        var second = await overlay.AddPeerAsync();
        Assert.True(ParentOf(overlay, first) == relay.Id && ParentOf(overlay, second) == relay.Id, Plan(overlay));
        overlay.StartStreaming();
        return (relay, first, second);
    }

    /// <summary>The same, the relay's uplink giving its first child 0.6 of the stream rate (its second all it needs).</summary>
    private static async Task<(Peer Relay, Peer Held, Peer Other)> RelayHoldingBackOneChildAsync(Overlay overlay)
    {
        var (relay, held, other) = await RelayWithTwoChildrenAsync(overlay);
        overlay.Network.SetPathRate(overlay.PeerById(relay.Id).Host, overlay.PeerById(held.Id).Host, SecondParentRate * 6 / 10);
        return (relay, held, other);
    }

    private static int ParentOf(Overlay overlay, Peer peer) => overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == peer.Id).Parents[0];

    private static string Plan(Overlay overlay) => string.Join(", ", overlay.Coordinator.Snapshot().Nodes.Select(n => $"{n.Id}<-{n.Parents[0]} ({n.Budget})"));

    private void WriteWarnings(LogCapture logs, LiveSource source)
    {
        foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Warning || l.Message.Contains("is not moved", StringComparison.Ordinal) || l.Message.Contains(" re-promoted: ", StringComparison.Ordinal)))
            output.WriteLine($"{source.At(l.Timestamp).TotalSeconds:0.0} {l.Category}: {l.Message}");
    }
}

using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>A peer demoted for being slow gets its budget back once it keeps up under another parent.</summary>
public sealed partial class SlowViewerTests
{
    /// <summary>The probation in these tests: shorter than the default 30 s, longer than a slow viewer takes to be found slow at a new parent.</summary>
    private static readonly TimeSpan TestProbation = TimeSpan.FromSeconds(8);

    /// <summary>
    /// The CI case of the slow-uplink test, forced: the relay's uplink gives one child 0.6 of the
    /// stream rate (the other all it needs), so that child, which relays, is found slow there and
    /// demoted (the relay's fault, not its own), then moved under its sibling (event 913), where it
    /// keeps up. Before, it kept budget 0 for good. Now, once it has kept up there for the
    /// probation, it gets its budget back (event 915) without anyone moving, and a viewer that
    /// joins when nobody else has a free slot is placed under it and gets every byte.
    /// </summary>
    [Fact]
    public async Task A_child_demoted_under_a_slow_uplink_gets_its_budget_back_after_keeping_up_under_another_parent_and_serves_a_joiner()
    {
        var logs = new LogCapture();
        await using var overlay = await SecondParentOverlayAsync(logs);
        var (relay, held, other) = await RelayHoldingBackOneChildAsync(overlay);
        var heldRun = overlay.PeerById(held.Id).Run;
        await using var source = LiveSource.Start(overlay, SecondParentRate, maxSeconds: 120, seed: 15);
        string demoted = $"peer {held.Id} demoted to a leaf (budget 0)";
        string moved = $"peer {held.Id}, judged as a leaf, is still slow: its oldest chunk queued at its parent, peer {relay.Id}";
        string repromoted = $"peer {held.Id} re-promoted: budget 2 again";
        int Budget(Peer p) => overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == p.Id).Budget;
        var joiners = new List<Peer>();
        try
        {
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Information, repromoted) || heldRun.IsCompleted || source.Ended, "the held-back child is re-promoted", within: TimeSpan.FromSeconds(100));
            output.WriteLine($"re-promoted at {source.Elapsed.TotalSeconds:0.0} s: {Plan(overlay)}");
            Assert.False(heldRun.IsCompleted || source.Ended, "the child ended, or the source did, before the child was re-promoted");
            Assert.Equal(2, Budget(held));

            // Viewers join (no upload) until one is placed under it: its slots are free slots again.
            for (int i = 0; i < 4 && joiners.All(j => ParentOf(overlay, j) != held.Id); i++) joiners.Add(await overlay.AddPeerAsync(upload: 0));
            output.WriteLine($"joined: {Plan(overlay)}");
            var served = joiners.Single(j => ParentOf(overlay, j) == held.Id);
            await Overlay.WaitUntilAsync(() => served.BytesWritten > 0 && source.Lag(served) < TimeSpan.FromSeconds(3) || source.Ended, "the viewer under the re-promoted child gets the stream");
            Assert.False(source.Ended, "the source ended before the viewer under the re-promoted child got the stream");
        }
        finally
        {
            WriteWarnings(logs, source);
        }

        var lines = logs.Lines;
        TimeSpan At(string text) => source.At(lines.First(l => l.Message.StartsWith(text, StringComparison.Ordinal)).Timestamp);
        string when = $"demoted at {At(demoted).TotalSeconds:0.0} s, moved at {At(moved).TotalSeconds:0.0} s, re-promoted at {At(repromoted).TotalSeconds:0.0} s";
        output.WriteLine(when);
        Assert.True(At(demoted) < At(moved) && At(moved) + TestProbation <= At(repromoted), when);
        Assert.False(logs.Has(LogLevel.Warning, "stopping it ("), "someone was stopped");
        await source.StopAsync();
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

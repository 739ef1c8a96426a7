using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A peer the coordinator demotes for being slow (moved to the leaves: it relays nothing from then
/// on) is told so, and why, with the figures: one line at info in its own log (event 917). Before,
/// only the coordinator's log said it, and the viewer's user never learned why the peer stopped
/// relaying.
/// </summary>
public sealed class DemotedNoticeTests(ITestOutputHelper output)
{
    private const string Moved = "the coordinator moved this peer to the leaves: it relays nothing from now on and still receives the whole stream";

    /// <summary>A relay whose parent finds it slow: its download did not keep up.</summary>
    [Fact]
    public async Task A_relay_demoted_for_its_download_is_told_why_with_its_parents_figures()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        for (int i = 0; i < 4; i++) await overlay.AddPeerAsync(upload: 4);
        var plan = overlay.Coordinator.Snapshot().Nodes;
        var node = plan.First(n => n.Id != 0 && n.Parents[0] > 0);
        var parent = overlay.PeerById(node.Parents[0]).Peer;

        ((IPeerParents)parent).SendToCoordinator(new SlowChild((ulong)node.Id, 2_200, (1_000, 2_000)).Write);
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {node.Id} demoted"), "the relay was demoted");
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Information, Moved), "the relay logged its demotion");
        var told = logs.Lines.Single(l => l.Category == "peer" && l.Message.StartsWith(Moved, StringComparison.Ordinal));
        output.WriteLine(told.Message);
        Assert.Equal(LogLevel.Information, told.Level);
        Assert.Contains($"as its download did not keep up (its parent, peer {parent.Id}, found its oldest queued chunk 2.2 s old, it took 1.0 Mbit/s while 2.0 were queued for it)", told.Message, StringComparison.Ordinal);
    }

    /// <summary>A relay two of whose children are found slow together: its upload did not carry them.</summary>
    [Fact]
    public async Task A_relay_demoted_for_its_upload_is_told_why()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        var relays = new[] { await overlay.AddPeerAsync(upload: 4), await overlay.AddPeerAsync(upload: 4), await overlay.AddPeerAsync(upload: 4) };
        var leaves = new List<Peer>();
        for (int i = 0; i < 4; i++) leaves.Add(await overlay.AddPeerAsync(upload: 0));
        int ParentOf(Peer p) => overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == p.Id).Parents[0];
        var relay = relays.First(r => leaves.Count(l => ParentOf(l) == r.Id) >= 2);
        var children = leaves.Where(l => ParentOf(l) == relay.Id).Take(2).ToList();

        // The second found slow for the grace: judged then, with its sibling found slow too.
        uint late = (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 300);
        ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)children[0].Id, 2_200, (100, 2_000)).Write);
        ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)children[1].Id, late, (100, 2_000)).Write);
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {relay.Id} demoted"), "the relay was demoted");
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Information, Moved), "the relay logged its demotion");
        var told = logs.Lines.Single(l => l.Category == "peer" && l.Message.StartsWith(Moved, StringComparison.Ordinal));
        output.WriteLine(told.Message);
        Assert.Contains("as its upload did not carry its children (2 of its children were found slow within", told.Message, StringComparison.Ordinal);
    }
}

using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A peer the coordinator took out of the overlay while its parents still reach it (only its path
/// to the coordinator broke) is dropped by those parents: the plan gave their slots to others.
/// </summary>
public sealed class RemovedChildTests
{
    private static async Task StreamAsync(Overlay overlay, int parts, int partSize, int seed)
    {
        for (int i = 0; i < parts; i++) await overlay.WriteAsync(Overlay.RandomBytes(partSize, seed * 1000 + i));
    }

    /// <summary>Every node that serves <paramref name="id"/> a shard now (its real child links).</summary>
    private static List<int> ServersOf(Overlay overlay, int id)
    {
        var servers = new List<int>();
        if (overlay.Coordinator.ChildIds().Any(c => c.Contains(id))) servers.Add(0);
        lock (overlay.Peers)
            servers.AddRange(overlay.Peers.Where(p => p.Peer.ChildIds().Any(c => c.Contains(id))).Select(p => p.Peer.Id));
        return servers;
    }

    /// <summary>The nodes of the plan that serve more child links than their budget, with the figures; empty when none.</summary>
    private static string OverBudget(Overlay overlay)
    {
        var budgets = overlay.Coordinator.Snapshot().Nodes.ToDictionary(n => n.Id, n => n.Budget);
        var over = new List<string>();
        if (overlay.Coordinator.ChildCount > budgets[0]) over.Add($"the coordinator serves {overlay.Coordinator.ChildCount}, budget {budgets[0]}");
        lock (overlay.Peers)
            foreach (var p in overlay.Peers)
            {
                int serving = p.Peer.ChildIds().Sum(c => c.Length);
                if (budgets.TryGetValue(p.Peer.Id, out int budget) && serving > budget) over.Add($"peer {p.Peer.Id} serves {serving}, budget {budget}");
            }
        return string.Join("; ", over);
    }

    /// <summary>How the peer loses the coordinator while it still reaches its parent.</summary>
    public enum Cutoff
    {
        /// <summary>Its control link is reset and it cannot connect again: the coordinator keeps its place for the rejoin grace, then removes it.</summary>
        Reset,

        /// <summary>Nothing moves between it and the coordinator: the coordinator takes its silent control link for dead at the heartbeat timeout.</summary>
        Silent,
    }

    [Theory]
    [InlineData(Cutoff.Reset)]
    [InlineData(Cutoff.Silent)]
    public async Task A_peer_removed_while_its_parent_still_reaches_it_is_dropped_by_that_parent_and_joins_again_with_no_byte_lost(Cutoff how)
    {
        // A chain: every node (the coordinator too) may send one shard-stream, so the removed
        // peer's slot under its parent is the only free one, and its own child is moved there.
        // The coordinator keeps the place of a peer whose control link broke (Reset) for 2 s, not 4
        // heartbeat timeouts: the test waits for the removal, nothing else depends on it.
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, minPeers: 3, configure: o => o with { Upload = 1, RejoinGrace = TimeSpan.FromSeconds(2) }, loggers: logs.Factory);
        for (int i = 0; i < 3; i++) await overlay.AddPeerAsync(upload: 1);
        overlay.StartStreaming();
        await StreamAsync(overlay, 2, 50_000, 61);
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 100_000), "every peer has the first part");

        // The middle of the chain: a peer under a peer, with a child of its own.
        var snapshot = overlay.Coordinator.Snapshot();
        var middle = snapshot.Nodes.Single(n => n.Id != 0 && n.Parents[0] != 0 && snapshot.Nodes.Any(c => c.Parents[0] == n.Id));
        int parentId = middle.Parents[0];
        var (peer, _, run, host) = overlay.PeerById(middle.Id);
        int first = peer.Id;
        Assert.Equal([parentId], ServersOf(overlay, first));

        // Only its path to the coordinator breaks; its parent and child links go on.
        if (how == Cutoff.Reset)
        {
            overlay.Network.Block(host, "coord");
            overlay.Network.Cut(host, "coord");
        }
        else overlay.Network.Freeze(host, "coord");
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != first), "the coordinator took the peer out");

        // Its parent stops serving it, and no node serves more than its budget once the moves are done.
        try
        {
            await Overlay.WaitUntilAsync(() => ServersOf(overlay, first).Count == 0 && OverBudget(overlay).Length == 0, "the removed peer's parent dropped it");
        }
        catch (TimeoutException)
        {
            Assert.Fail($"a minute after peer {first} was taken out, nodes [{string.Join(",", ServersOf(overlay, first))}] still serve it (its parent was {parentId}); over budget: {OverBudget(overlay)}");
        }
        // Routine for the parent, which logs it once (9307); the coordinator said why it took the
        // peer out. It also logged "closing: the coordinator took this peer out of the overlay" as
        // a warning for each link (across network namespaces, four parents of a viewer stopped as
        // too slow, K=4, each beside its own 9307 line).
        Assert.True(logs.Has(LogLevel.Information, $"the coordinator took child {first} out of the overlay: stopped serving it"), "the parent did not say it dropped the removed peer");
        var warned = logs.Lines.Where(l => l.Category == "peer" && l.Level >= LogLevel.Warning && l.Message.Contains(": closing: the coordinator took this peer out of the overlay", StringComparison.Ordinal)).Select(l => l.Message).ToList();
        Assert.True(warned.Count == 0, $"the parent warned of a drop the coordinator asked for: {string.Join("; ", warned)}");
        await StreamAsync(overlay, 2, 50_000, 62);

        // It can reach the coordinator again: it joins as a new peer and resumes from the windows.
        if (how == Cutoff.Reset) overlay.Network.Unblock(host, "coord");
        else overlay.Network.Thaw(host, "coord");
        await Overlay.WaitUntilAsync(() => peer.Id != first && overlay.Coordinator.Snapshot().Nodes.Any(n => n.Id == peer.Id), "the removed peer has joined again");
        await StreamAsync(overlay, 2, 50_000, 63);
        await overlay.EndAsync();
        await run.WaitAsync(Overlay.Deadline);

        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
        Assert.Equal(0, peer.LostBytes);
        Assert.Equal("", OverBudget(overlay));
    }

    /// <summary>
    /// A parent told to drop a child (DropChild) does not serve it again when it attaches with a
    /// ticket the coordinator gave it before (a move that crossed the child's slow link behind the
    /// drop). Across network namespaces a viewer stopped as too slow attached to a parent 0.4 s
    /// after that parent dropped it, and the parent found it slow there 12 s later (event 900 about
    /// a peer no longer in the overlay).
    /// </summary>
    [Fact]
    public async Task A_parent_refuses_a_child_it_was_told_to_drop_that_attaches_again_with_an_earlier_ticket()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, minPeers: 2, configure: o => o with { Upload = 1, RejoinGrace = TimeSpan.FromSeconds(2) }, loggers: logs.Factory);
        for (int i = 0; i < 2; i++) await overlay.AddPeerAsync(upload: 1);
        overlay.StartStreaming();
        var snapshot = overlay.Coordinator.Snapshot();
        var child = snapshot.Nodes.Single(n => n.Id != 0 && n.Parents[0] != 0);
        var parent = overlay.PeerById(child.Parents[0]).Peer;
        var host = overlay.PeerById(child.Id).Host;
        // Issued while the child is in the overlay, as a move's ticket is.
        byte[] ticket = overlay.Coordinator.IssueTicket(parentId: parent.Id, childId: child.Id, shards: 0);

        overlay.Network.Block(host, "coord");
        overlay.Network.Cut(host, "coord");
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Information, $"the coordinator took child {child.Id} out of the overlay: stopped serving it"), "the parent dropped the removed peer");

        var connection = await overlay.Network.Host("late-mover").ConnectAsync(parent.ListenAddress, CancellationToken.None);
        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Attach, (ulong)child.Id, 0, [new ShardStart(0, 0)], "late-mover:1", null, ticket).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        var (type, _) = await RawFrames.ReadAsync(connection.Pipe.Input);
        Assert.True(type == FrameType.Goodbye, $"the parent answered a dropped child's attach with {type}, not a goodbye; it serves [{string.Join(",", parent.ChildIds()[0])}]");
        Assert.DoesNotContain(child.Id, parent.ChildIds()[0]);
        Assert.True(logs.Has(LogLevel.Warning, $"the coordinator took peer {child.Id} out of the overlay"), "the parent did not say why it refused");
        // No end: the cut-off peer, which cannot reach the coordinator, would hold it.
    }
}

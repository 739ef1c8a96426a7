using Microsoft.Extensions.Logging;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// K = 2 with pure viewers: a relay's death leaves an orphan with no free slot in one tree, and
/// the planner moves a unit another node leaves unused in the other tree over to it
/// (docs/topology.md, step 5 of the general rule's Leave). The node that takes the orphan is
/// told nothing: it serves one child more in that shard than its budget's split gave it, on the
/// ticket of the orphan's Move, and nobody is evicted.
/// </summary>
public sealed class LendToStrandedNodeTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public async Task A_relay_death_among_pure_viewers_evicts_nobody_and_every_survivor_writes_every_byte()
    {
        // Five peers of the default budget (3 half-streams) and two viewers (0), joined in that
        // order, relay 1 killed: the plan then strands an orphan in one tree (the planner's
        // Pure_viewers_among_default_budgets_do_not_make_a_relay_death_evict_anyone, blind).
        var logs = new LogCapture();
        await using var overlay = await StartAsync(logs);
        var relay = overlay.PeerById(1);
        // The coordinator learns of the death from its control link before any child reports it.
        // A process death resets every connection at once, and which reset the coordinator takes
        // up first is a race: a child's report that comes first gets the child sent back to the
        // same parent (the coordinator still takes it for alive), and a second one, its attach
        // refused, takes the edge out of the plan before the relay leaves it. Then the plan that
        // the relay's leave repairs is another, with no stranded orphan: a CI run (ci160) had peer
        // 2 with one child in shard 1, not two. That order is the next test's. Here the relay's
        // control link breaks first (and its rejoin cannot reach the coordinator), then it dies.
        overlay.Network.Block(relay.Host, "coord");
        overlay.Network.Cut(relay.Host, "coord");
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Information, "peer 1: control link broken on its side"), "the coordinator saw relay 1's control link break");
        overlay.Network.Kill(relay.Host);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id == 0 || (n.Id != 1 && n.Parents.All(p => p != 1))),
            "the coordinator has re-placed relay 1's children");
        // Peer 2 (its budget split 2 / 1 at its join) took peer 3 in shard 1 on a unit moved over
        // from shard 0: two children there now, on the ticket of peer 3's Move, within its budget.
        var after = overlay.Coordinator.Snapshot();
        Assert.Equal(2, Children(after, 2, 1));
        Assert.All(after.Nodes, n => Assert.True(n.Used <= n.Budget, $"node {n.Id} sends {n.Used} half-streams, its budget is {n.Budget}"));

        await overlay.WriteAsync(Overlay.RandomBytes(1_000_000, 22));
        await overlay.EndAsync();
        foreach (var p in overlay.Peers.Where(p => p.Peer != relay.Peer))
        {
            await overlay.AssertIdenticalAsync(p);
            Assert.True(p.Peer.Rejoins == 0, $"peer {p.Host} joined again {p.Peer.Rejoins} time(s) (now peer {p.Peer.Id}): evicted when relay 1 died");
        }
    }

    /// <summary>
    /// The same death reported by the children first: each lost relay 1 while the coordinator's
    /// control link to it was still up, is sent back to it, cannot attach, and reports it again;
    /// the coordinator re-places what it can elsewhere (peer 2's shards; peer 3's shard 1 finds no
    /// free slot, so peer 3 is sent back to the relay every 2 s), and then the relay dies. Whatever
    /// the plan is then, nobody is evicted and every survivor writes every byte.
    /// </summary>
    [Fact]
    public async Task A_relay_death_its_children_report_first_evicts_nobody_and_every_survivor_writes_every_byte()
    {
        var logs = new LogCapture();
        await using var overlay = await StartAsync(logs);
        var relay = overlay.PeerById(1);
        var children = overlay.Coordinator.Snapshot().Nodes.Where(n => n.Id != 0 && n.Parents.Contains(1)).Select(n => n.Id).ToList();
        Assert.NotEmpty(children);
        foreach (var child in children)
        {
            overlay.Network.Block(overlay.PeerById(child).Host, relay.Host);
            overlay.Network.Cut(overlay.PeerById(child).Host, relay.Host);
        }
        try
        {
            await Overlay.WaitUntilAsync(() => children.All(c => logs.Has(LogLevel.Warning, $"peer {c} cannot connect to parent 1")), "the coordinator judged every child's second report");
        }
        finally
        {
            foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Information && l.Category == "coordinator")) output.WriteLine(l.Message);
        }
        Assert.Contains(overlay.Coordinator.Snapshot().Nodes, n => n.Id == 1);
        overlay.Network.Kill(relay.Host);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != 1), "relay 1 is out of the plan");
        Assert.All(overlay.Coordinator.Snapshot().Nodes, n => Assert.True(n.Used <= n.Budget, $"node {n.Id} sends {n.Used} half-streams, its budget is {n.Budget}"));

        await overlay.WriteAsync(Overlay.RandomBytes(1_000_000, 22));
        await overlay.EndAsync();
        foreach (var p in overlay.Peers.Where(p => p.Peer != relay.Peer))
        {
            await overlay.AssertIdenticalAsync(p);
            Assert.True(p.Peer.Rejoins == 0, $"peer {p.Host} joined again {p.Peer.Rejoins} time(s) (now peer {p.Peer.Id}): evicted when relay 1 died");
        }
    }

    /// <summary>
    /// Five peers of the default budget (3 half-streams) and two viewers (0), joined in that
    /// order, the first megabyte streamed; peer 2 has one child in shard 1.
    /// </summary>
    private static async Task<Overlay> StartAsync(LogCapture logs)
    {
        var overlay = await Overlay.StartAsync(shards: 2, minPeers: 7, loggers: logs.Factory);
        try
        {
            for (int i = 0; i < 5; i++) await overlay.AddPeerAsync();
            for (int i = 0; i < 2; i++) await overlay.AddPeerAsync(upload: 0);
            Assert.Equal([1, 2, 3, 4, 5, 6, 7], overlay.Peers.Select(p => p.Peer.Id));
            overlay.StartStreaming();
            await overlay.WriteAsync(Overlay.RandomBytes(1_000_000, 21));
            await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == 1_000_000, "streaming is under way");
            Assert.Equal(1, Children(overlay.Coordinator.Snapshot(), 2, 1));
            return overlay;
        }
        catch
        {
            await overlay.DisposeAsync();
            throw;
        }
    }

    /// <summary>How many children <paramref name="node"/> has in <paramref name="shard"/> in the plan.</summary>
    private static int Children(ShardStream.Nodes.OverlaySnapshot snapshot, int node, int shard) =>
        snapshot.Nodes.Count(n => n.Id != 0 && n.Parents[shard] == node);
}

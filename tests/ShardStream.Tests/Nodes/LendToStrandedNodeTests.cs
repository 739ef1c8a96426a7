namespace ShardStream.Tests.Nodes;

/// <summary>
/// K = 2 with pure viewers: a relay's death leaves an orphan with no free slot in one tree, and
/// the planner moves a unit another node leaves unused in the other tree over to it
/// (docs/topology.md, step 5 of the general rule's Leave). The node that takes the orphan is
/// told nothing: it serves one child more in that shard than its budget's split gave it, on the
/// ticket of the orphan's Move, and nobody is evicted.
/// </summary>
public sealed class LendToStrandedNodeTests
{
    [Fact]
    public async Task A_relay_death_among_pure_viewers_evicts_nobody_and_every_survivor_writes_every_byte()
    {
        // Five peers of the default budget (3 half-streams) and two viewers (0), joined in that
        // order, relay 1 killed: the plan then strands an orphan in one tree (the planner's
        // Pure_viewers_among_default_budgets_do_not_make_a_relay_death_evict_anyone, blind).
        await using var overlay = await Overlay.StartAsync(shards: 2, minPeers: 7);
        for (int i = 0; i < 5; i++) await overlay.AddPeerAsync();
        for (int i = 0; i < 2; i++) await overlay.AddPeerAsync(upload: 0);
        Assert.Equal([1, 2, 3, 4, 5, 6, 7], overlay.Peers.Select(p => p.Peer.Id));
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(1_000_000, 21));
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == 1_000_000, "streaming is under way");

        Assert.Equal(1, Children(overlay.Coordinator.Snapshot(), 2, 1));
        var relay = overlay.PeerById(1);
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

    /// <summary>How many children <paramref name="node"/> has in <paramref name="shard"/> in the plan.</summary>
    private static int Children(ShardStream.Nodes.OverlaySnapshot snapshot, int node, int shard) =>
        snapshot.Nodes.Count(n => n.Id != 0 && n.Parents[shard] == node);
}

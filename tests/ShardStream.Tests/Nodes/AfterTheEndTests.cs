namespace ShardStream.Tests.Nodes;

/// <summary>
/// After the source ends, peers finish and leave at their own pace; a peer that fails then still
/// has children that need the rest of the stream, and their repair must only pick nodes that are
/// still there.
/// </summary>
public sealed class AfterTheEndTests
{
    [Fact]
    public async Task A_repair_after_the_end_never_picks_a_peer_that_has_finished()
    {
        // Four relays, then four pure viewers: the viewers are leaves, so when a relay above two of
        // them fails, they need free slots elsewhere: the coordinator's and finished peers'.
        await using var overlay = await Overlay.StartAsync(1, minPeers: 8, heartbeatTimeout: TimeSpan.FromSeconds(5));
        for (int i = 0; i < 4; i++) await overlay.AddPeerAsync();
        for (int i = 0; i < 4; i++) await overlay.AddPeerAsync(upload: 0);
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 1));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 100_000), "every peer has the first part");

        // A direct child of the coordinator with a subtree freezes; the rest of the stream goes
        // past it, and everyone outside its subtree finishes and says goodbye.
        var snapshot = overlay.Coordinator.Snapshot();
        var victim = snapshot.Nodes.First(n => n.Id != 0 && n.Parents[0] == 0 && Descendants(snapshot, n.Id).Count > 0
                                                    && Descendants(snapshot, n.Id).All(d => snapshot.Nodes.Single(x => x.Id == d).Budget == 0));
        var below = Descendants(snapshot, victim.Id);
        overlay.Network.Freeze(overlay.PeerById(victim.Id).Host);
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, 2));
        // The coordinator's run waits for every peer to finish: awaited last.
        var ending = overlay.EndAsync();
        foreach (var p in overlay.Peers.Where(p => p.Peer.Id != victim.Id && !below.Contains(p.Peer.Id))) await overlay.AssertIdenticalAsync(p);

        // The frozen peer is taken for dead after the end; its subtree is moved to nodes that are
        // still there (the coordinator, each other) and gets the rest from their windows.
        foreach (int id in below) await overlay.AssertIdenticalAsync(overlay.PeerById(id));
        await ending;
    }

    private static HashSet<int> Descendants(ShardStream.Nodes.OverlaySnapshot snapshot, int id)
    {
        var found = new HashSet<int>();
        var todo = new Queue<int>([id]);
        while (todo.TryDequeue(out int n))
            foreach (var c in snapshot.Nodes.Where(c => c.Id != 0 && c.Parents[0] == n))
                if (found.Add(c.Id)) todo.Enqueue(c.Id);
        return found;
    }
}

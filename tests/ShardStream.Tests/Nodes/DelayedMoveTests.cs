namespace ShardStream.Tests.Nodes;

/// <summary>
/// A child that cannot attach to its parent twice, with no other room in the plan, is sent back
/// to it after a pause (event 9301): one delayed Move of its stranded shards. When one of those
/// shards is moved meanwhile (here a joiner takes the child's place in shard 1), that shard has
/// its own Move; the others still need theirs.
/// </summary>
public sealed class DelayedMoveTests
{
    [Fact]
    public async Task A_delayed_move_one_of_whose_shards_moved_meanwhile_still_sends_the_others()
    {
        var logs = new LogCapture();
        // K = 2: the coordinator sends 2 half-streams (the relay, in both shards), the relay 3
        // (the child in both, one slot free), the child none: no other room for the child.
        await using var overlay = await Overlay.StartAsync(2, minPeers: 2, configure: o => o with { Upload = 1 }, heartbeatTimeout: TimeSpan.FromSeconds(2), loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 1.5);
        var child = await overlay.AddPeerAsync(upload: 0);
        Assert.Equal([relay.Id, relay.Id], Parents(overlay, child.Id));
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 76_000));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 100_000), "every peer has the first part");

        // The delayed Move is held once due, while the plan changes.
        var due = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        overlay.Coordinator.MoveLaterDue = async id =>
        {
            if (id != child.Id || !due.TrySetResult()) return;
            await release.Task;
        };
        string childHost = overlay.PeerById(child.Id).Host, relayHost = overlay.PeerById(relay.Id).Host;
        overlay.Network.Block(childHost, relayHost);
        overlay.Network.Cut(childHost, relayHost);
        await due.Task.WaitAsync(Overlay.Deadline);
        Assert.Contains(logs.Lines, l => l.Message.StartsWith($"peer {child.Id}: no other node has room for shard(s) 0,1", StringComparison.Ordinal));

        // The path heals, and a joiner with one half-stream to give takes the child's place in
        // shard 1 (the child moves under it there): shard 0 still waits for the delayed Move.
        overlay.Network.Unblock(childHost, relayHost);
        var joiner = await overlay.AddPeerAsync(upload: 0.5);
        await Overlay.WaitUntilAsync(() => Parents(overlay, child.Id) is [var p0, var p1] && p0 == relay.Id && p1 == joiner.Id,
            $"the joiner took the child's place in shard 1 (the child's parents: {string.Join(",", Parents(overlay, child.Id))})");
        release.SetResult();

        // What a viewer checks: every byte of the source, while the stream runs; and the child
        // got shard 0 from the delayed Move, not by joining again for its unanswered report (1418).
        var rest = Overlay.RandomBytes(200_000, 76_001);
        await overlay.WriteAsync(rest);
        long total = overlay.Written.Length;
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.StartOffset + p.Peer.BytesWritten == total),
            $"every viewer writes the rest (the child's parents: {string.Join(",", child.ParentIds())})");
        Assert.DoesNotContain(logs.Lines, l => l.Message.Contains("and no Move came", StringComparison.Ordinal));
        Assert.Equal(0, child.Rejoins);
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }

    private static int[] Parents(Overlay overlay, int id) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents ?? [];
}

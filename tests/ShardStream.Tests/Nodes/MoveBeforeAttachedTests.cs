using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A joiner fed a shard by the coordinator on its control link, with seconds of stream queued
/// there (its join backlog, a slow download), whose other parent does not answer its attach: the
/// coordinator's answer to its report comes before the joiner's Attached for the Welcome, and must
/// not wait behind that stream either. Behind it, the Move came after the report's wait (a connect
/// timeout and two heartbeat timeouts), and the joiner joined again in its place for nothing
/// (event 1418; after 3 times, 1419).
/// </summary>
public sealed class MoveBeforeAttachedTests
{
    [Fact]
    public async Task A_move_answering_a_failed_welcome_attach_does_not_wait_behind_the_stream()
    {
        var logs = new LogCapture();
        // No slow-child demotion: the test is about the Move, not about the slow viewer's fate.
        // A join backlog of 20 s: the whole stream written so far is queued for the joiner at once.
        var lenient = TimeSpan.FromSeconds(120);
        // Heartbeat timeouts of 5 s (the default): the report waits 15 s for its Move (a connect timeout and two of them).
        await using var overlay = await Overlay.StartAsync(shards: 2, minPeers: 2, heartbeatTimeout: TimeSpan.FromSeconds(5), loggers: logs.Factory,
            configure: o => o with { SlowChildAge = lenient, JoinBacklog = TimeSpan.FromSeconds(20) });
        for (int i = 0; i < 2; i++) await overlay.AddPeerAsync(upload: 2, configure: o => o with { SlowChildAge = lenient });
        overlay.StartStreaming();
        const int total = 12_000_000;
        for (int i = 0; i < 12; i++) await overlay.WriteAsync(Overlay.RandomBytes(total / 12, 50 + i));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == total), "every peer has the stream so far");

        // The joiner reads 125 kB/s, and reaches no peer (its connects get no answer) until the
        // coordinator has read its report of the parent it could not reach.
        string host = $"p{overlay.Peers.Count + 1}";
        var hosts = overlay.Peers.Select(p => p.Host).ToList();
        foreach (var other in hosts) overlay.Network.Block(host, other, silently: true);
        overlay.Network.SetDownloadRate(host, 125_000);
        int lostShard = -1;
        overlay.Coordinator.ParentLostRead = (_, lost) =>
        {
            if (Interlocked.CompareExchange(ref lostShard, lost.Shards[0].Shard, -1) == -1)
                foreach (var other in hosts) overlay.Network.Unblock(host, other);
            return true;
        };
        // The third peer of this overlay takes one shard from the coordinator and the other from peer 1.
        var joiner = await overlay.AddPeerAsync(upload: 2, configure: o => o with { SlowChildAge = lenient });
        // Its report went before its Attached; the coordinator reads it a moment later.
        await Overlay.WaitUntilAsync(() => Volatile.Read(ref lostShard) >= 0, "the coordinator read the joiner's report of the parent it could not reach");
        Assert.True(overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == joiner.Id).Parents.Contains(0),
            $"setup: the joiner should be fed a shard by the coordinator\n{overlay.Coordinator.Snapshot().Render()}");

        await Overlay.WaitUntilAsync(() => joiner.ParentIds()[Volatile.Read(ref lostShard)] >= 0, "the joiner has a parent for the shard it reported", TimeSpan.FromSeconds(120));
        long received = joiner.Status().BytesReceived;
        int rejoins = joiner.Rejoins;
        // What a viewer sees: no needless rejoin, no warning. Applied at once it finds ~0.7 MB
        // received (the 5 s of its connect timeout); behind the queue, it joined again first (at 20 s).
        Assert.True(rejoins == 0 && received < 2_500_000,
            $"the Move waited behind the chunks queued on the control link: the joiner had received {received} bytes and joined again {rejoins} times when it had the shard again");
        Assert.DoesNotContain(logs.Lines, l => l.Level >= LogLevel.Warning && l.Message.Contains("no Move came", StringComparison.Ordinal));

        // Slow but alive: 1.5 MB more at 125 kB/s (12 s, over two heartbeat timeouts) while the coordinator's
        // side of its control link sends it only chunks (no heartbeat goes on a busy link), and
        // neither side takes the other for dead (that would make the joiner join again).
        await Overlay.WaitUntilAsync(() => joiner.Status().BytesReceived > received + 1_500_000, "the joiner reads on at its pace", TimeSpan.FromSeconds(120));
        Assert.Equal(0, joiner.Rejoins);
        Assert.Contains(overlay.Coordinator.Snapshot().Nodes, n => n.Id == joiner.Id);

        overlay.Network.SetDownloadRate(host, 0);
        await overlay.WriteAsync(Overlay.RandomBytes(500_000, 70));
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;

namespace ShardStream.Tests.Trust;

/// <summary>
/// During a move a peer has two parents for a shard for a moment: the old one's chunk still in
/// flight, and the new one replaying from this peer's next chunk. Both copies of that chunk come
/// from honest parents; neither may be accused, and neither may be lost.
/// </summary>
public sealed class MoveRaceTests
{
    [Fact]
    public async Task The_old_parents_chunk_in_flight_during_a_move_is_a_duplicate_not_a_lie()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, heartbeatTimeout: TimeSpan.FromSeconds(30), loggers: logs.Factory);
        for (int i = 0; i < 3; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        using var stop = new CancellationTokenSource();
        var writing = Task.Run(async () =>
        {
            for (int i = 0; !stop.IsCancellationRequested; i++)
            {
                await overlay.WriteAsync(Overlay.RandomBytes(64 * 1024, 7000 + i));
                await Task.Delay(20);
            }
        });
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed >= 1 << 20, "the stream flows");

        // A peer fed by another peer; that parent leaves, so the coordinator moves the peer.
        var node = overlay.Coordinator.Snapshot().Nodes.First(n => n.Id != 0 && n.Parents[0] != 0);
        var child = overlay.PeerById(node.Id).Peer;
        int oldParent = node.Parents[0];
        // The old parent's next chunk is held just before its check, as a busy machine holds a
        // thread, until the new parent's copy of it has been kept, or 2 s after the move.
        int held = 0;
        child.ChunkDue = (link, seq) =>
        {
            if (link.Role is not ParentRole role || role.ParentId != oldParent || Interlocked.Exchange(ref held, 1) != 0) return;
            var until = DateTime.UtcNow + Overlay.Deadline;
            while (DateTime.UtcNow < until && child.NextSeqOf(0) <= seq)
            {
                if (child.ParentIds()[0] != oldParent) until = Min(until, DateTime.UtcNow + TimeSpan.FromSeconds(2));
                Thread.Sleep(10);
            }
        };
        await Overlay.WaitUntilAsync(() => Volatile.Read(ref held) == 1, "a chunk of the old parent is held");
        var leaving = overlay.PeerById(oldParent).Peer.LeaveAsync(TimeSpan.FromSeconds(60));
        await leaving.WaitAsync(Overlay.Deadline);
        await Overlay.WaitUntilAsync(() => child.ParentIds()[0] != oldParent && child.BytesWritten > overlay.Coordinator.BytesStreamed - (2 << 20), "the moved peer streams from its new parent");
        await stop.CancelAsync();
        await writing;
        await overlay.EndAsync();

        var accusations = logs.Lines.Where(l => l.Message.Contains("without a signed hash", StringComparison.Ordinal) || l.Message.Contains("cut off parent", StringComparison.Ordinal)).ToList();
        Assert.True(accusations.Count == 0, "an honest parent accused:\n" + string.Join("\n", accusations.Take(5).Select(l => l.Message)));
        Assert.DoesNotContain(logs.Lines, l => l.Level == LogLevel.Error && l.Message.StartsWith("lost bytes", StringComparison.Ordinal));
        foreach (var p in overlay.Peers.Where(p => p.Peer.Id != oldParent)) await overlay.AssertIdenticalAsync(p);
    }

    private static DateTime Min(DateTime a, DateTime b) => a < b ? a : b;
}

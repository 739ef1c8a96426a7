using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A parent that sends its child a frame the child cannot even read (a bad frame header) or a
/// malformed ping breaks the protocol before the peer's frame handler sees the frame: the read
/// loop throws and closes the link. It is cut off and reported like a parent that sent a forged
/// chunk, also when a move gave its shards another parent before the child handled the close.
/// </summary>
public class MalformedFrameTests
{
    /// <summary>What the relay sends its child in place of its first chunk.</summary>
    public enum Garbage
    {
        /// <summary>The chunk with a frame type no version defines (the header is refused).</summary>
        UnknownFrameType,

        /// <summary>A ping of 3 bytes (a ping's token takes 8).</summary>
        ShortPing,
    }

    /// <summary>
    /// The relay has the whole stream, so it leaves once its child closed, and the coordinator
    /// moves the child; the child's handling of the close (on the thread pool) is held until that
    /// move is applied, as a busy machine holds it. Before, only violations raised in the frame
    /// handler noted the liar's shards for the report: here the report found no shard and said
    /// nothing, and the coordinator never refused the relay.
    /// </summary>
    [Theory]
    [InlineData(Garbage.UnknownFrameType, "unknown frame type 238")]
    [InlineData(Garbage.ShortPing, "malformed ping frame")]
    public async Task A_parent_that_sends_what_the_read_loop_refuses_is_reported_even_when_a_move_took_its_shards_before_its_close_was_handled(Garbage garbage, string violation)
    {
        var log = new LogCapture();
        // The coordinator feeds one child: the relay; the viewer can only go under it.
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 2, configure: o => o with { Upload = 1 }, loggers: log.Factory);
        int sent = 0;
        var lying = new TamperingTransport(overlay.Network.Host("liar"), (type, frame) =>
        {
            if (type != FrameType.Chunk || Interlocked.Exchange(ref sent, 1) != 0) return [frame];
            if (garbage == Garbage.ShortPing) return [[0, 0, 0, 4, (byte)FrameType.Ping, 1, 2, 3]];
            byte[] bad = frame.ToArray();
            bad[4] = 238;
            return [bad];
        }) { Active = true };
        await using var relay = new Peer(new PeerOptions
        {
            JoinAddress = overlay.Coordinator.ListenAddress,
            ListenAddress = "liar:1",
            HeartbeatTimeout = TimeSpan.FromSeconds(10),
            HeartbeatInterval = TimeSpan.FromSeconds(2),
        }, lying, log.Factory);
        await relay.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline);
        _ = Task.Run(() => relay.RunAsync(Stream.Null, CancellationToken.None));
        var viewer = await overlay.AddPeerAsync();
        Assert.Equal([relay.Id], viewer.ParentIds());
        int held = 0;
        bool movedWhileHeld = false;
        viewer.ParentClosedHandling = link =>
        {
            if (link.Role is not ParentRole role || role.ParentId != relay.Id || Interlocked.Exchange(ref held, 1) != 0) return;
            var until = DateTime.UtcNow + Overlay.Deadline;
            while (DateTime.UtcNow < until && viewer.ParentIds().Contains(relay.Id)) Thread.Sleep(10);
            movedWhileHeld = !viewer.ParentIds().Contains(relay.Id);
        };
        await overlay.WriteAsync(Overlay.RandomBytes(24 * Protocol.MaxChunkLength, seed: 3));
        overlay.StartStreaming();
        await overlay.EndAsync();

        Assert.Equal(1, lying.Rewritten);
        Assert.True(movedWhileHeld, "the viewer was not moved while the relay's close waited");
        // No byte lost: the viewer wrote the whole stream from its new parent.
        await overlay.AssertIdenticalAsync(overlay.Peers.Single());
        // It cut the relay off with the reason, and the coordinator cut it off (and refuses it) as any forger.
        Assert.True(log.Lines.Any(l => l.Level == LogLevel.Error && l.Message.Contains($"cut off parent {relay.Id}", StringComparison.Ordinal)
            && l.Message.Contains(violation, StringComparison.Ordinal)), Dump(log));
        Assert.True(log.Has(LogLevel.Warning, $"peer {relay.Id} (liar:1) is cut off: its child {viewer.Id} reports"), Dump(log));
    }

    private static string Dump(LogCapture log) => string.Join("\n", log.Lines.Select(l => $"{l.Category} {l.Level}: {l.Message}"));
}

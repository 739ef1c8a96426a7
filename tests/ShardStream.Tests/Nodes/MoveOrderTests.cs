using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Moves reach a peer in the order the coordinator sent them (the later Move of a shard wins at
/// the peer, so an order changed on the way leaves the peer where the plan no longer has it), and
/// after its Welcome, also when they go ahead of the stream queued on its control link.
/// </summary>
public sealed class MoveOrderTests
{
    [Fact]
    public async Task Moves_sent_before_the_welcome_went_out_follow_it_in_order_ahead_of_the_stream()
    {
        var network = new VirtualNetwork();
        await using var listener = await network.Host("coord").ListenAsync("coord:1", CancellationToken.None);
        var peerSide = await network.Host("p").ConnectAsync("coord:1", CancellationToken.None);
        var coordinatorSide = (await listener.AcceptAsync(CancellationToken.None))!;
        var options = new TestOptions().LinkOptions;
        await using var control = new Link(coordinatorSide, "peer 1", options, NullLogger.Instance, TimeProvider.System);
        await using var fromCoordinator = new Link(peerSide, "coordinator", options, NullLogger.Instance, TimeProvider.System);
        // What the peer reads, in order: "welcome", "chunk", and the parent each Move names.
        var read = new ConcurrentQueue<string>();
        fromCoordinator.Start((_, type, body) =>
        {
            var reader = new SequenceReader<byte>(body);
            if (type == FrameType.Move && Move.TryRead(ref reader, out var move)) read.Enqueue($"move {move.Shards[0].ParentId}");
            else if (type == FrameType.Welcome) read.Enqueue("welcome");
            else if (type == FrameType.Chunk) read.Enqueue("chunk");
        });
        var session = new PeerSession(1, "p:1", control);

        // As Admission does: the Welcome, then the stream of a shard served on the control link,
        // queued before the link's writer runs; the peer reads slowly (a second of stream waits).
        network.SetDownloadRate("p", 100_000);
        session.SendWelcome(control, [FrameWriting.ToArray(new Welcome(Protocol.Version, 1, 1, 0, 0, []).Write)]);
        for (int seq = 0; seq < 10; seq++)
        {
            var chunk = Chunk.Copy(0, seq, seq * 10_000, new ReadOnlySequence<byte>(new byte[10_000]));
            control.TrySend(chunk);
            chunk.Release();
        }
        // A Move before the Welcome went out is held (never ahead of it), and goes ahead of the
        // stream once it has; the next Move does not pass it.
        session.SendMove(MoveTo(11));
        control.Start((_, _, _) => { });
        session.SendMove(MoveTo(12));

        await Overlay.WaitUntilAsync(() => read.Count(r => r.StartsWith("move", StringComparison.Ordinal)) == 2, "both moves came");
        var order = read.ToArray();
        Assert.Equal(["move 11", "move 12"], order.Where(r => r.StartsWith("move", StringComparison.Ordinal)));
        // The Welcome first, and the first Move right behind it: its writer's next send.
        Assert.Equal(["welcome", "move 11"], order.Take(2));
    }

    private sealed record TestOptions : NodeOptions;

    private static Move MoveTo(ulong parent) => new([new ShardAssignment(0, AssignmentKind.Redirect, parent, 0, $"p{parent}:1")]);
}

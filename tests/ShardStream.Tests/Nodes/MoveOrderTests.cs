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
/// the peer, so an order changed on the way leaves the peer where the plan no longer has it), also
/// when the first ones went behind the stream queued on its control link and the later ones go
/// ahead of it.
/// </summary>
public sealed class MoveOrderTests
{
    [Fact]
    public async Task A_move_sent_ahead_of_the_stream_does_not_pass_a_move_still_queued_behind_it()
    {
        var network = new VirtualNetwork();
        await using var listener = await network.Host("coord").ListenAsync("coord:1", CancellationToken.None);
        var peerSide = await network.Host("p").ConnectAsync("coord:1", CancellationToken.None);
        var coordinatorSide = (await listener.AcceptAsync(CancellationToken.None))!;
        var options = new TestOptions().LinkOptions;
        await using var control = new Link(coordinatorSide, "peer 1", options, NullLogger.Instance, TimeProvider.System);
        await using var fromCoordinator = new Link(peerSide, "coordinator", options, NullLogger.Instance, TimeProvider.System);
        var moves = new ConcurrentQueue<ulong>();
        control.Start((_, _, _) => { });
        fromCoordinator.Start((_, type, body) =>
        {
            var reader = new SequenceReader<byte>(body);
            if (type == FrameType.Move && Move.TryRead(ref reader, out var move)) moves.Enqueue(move.Shards[0].ParentId);
        });
        var session = new PeerSession(1, "p:1", control);

        // The peer reads slowly: a second of stream waits in the control link's queue.
        network.SetDownloadRate("p", 100_000);
        for (int seq = 0; seq < 10; seq++)
        {
            var chunk = Chunk.Copy(0, seq, seq * 10_000, new ReadOnlySequence<byte>(new byte[10_000]));
            control.TrySend(chunk);
            chunk.Release();
        }
        // A Move before the peer reported Attached goes behind that stream (never ahead of the Welcome)...
        session.SendMove(MoveTo(11));
        // ...then the peer reports Attached (its Welcome's attaches are done) and the next Move is sent.
        session.ReportedAttached(control);
        session.SendMove(MoveTo(12));

        await Overlay.WaitUntilAsync(() => moves.Count == 2, "both moves came");
        Assert.Equal([11UL, 12UL], moves.ToArray());
    }

    private sealed record TestOptions : NodeOptions;

    private static Move MoveTo(ulong parent) => new([new ShardAssignment(0, AssignmentKind.Redirect, parent, 0, $"p{parent}:1")]);
}

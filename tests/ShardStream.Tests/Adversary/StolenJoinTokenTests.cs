using System.Buffers;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A node that learned a joiner's join token (security.md, "A peer's join token in other hands":
/// the node the joiner goes through reads it in its Join) joins first with it and says it attached:
/// the coordinator lists it under that token. The joiner's own first join is then refused as
/// another node's; it must not end there, but join again under a token of its own.
/// </summary>
public sealed class StolenJoinTokenTests
{
    /// <summary>
    /// "mallory:1", where the viewer is told to join: it reads the first joiner's Join, joins the
    /// coordinator first with that Join's token (and says it attached: it read its Welcome), then
    /// redirects the joiner to the coordinator, as an honest peer would; later joins it only
    /// redirects. <paramref name="stolen"/> gets the impostor's control link.
    /// </summary>
    private static async Task RedirectAndStealAsync(Overlay overlay, IConnectionListener listener, LogCapture logs, TaskCompletionSource<StrangerControlLink> stolen)
    {
        try
        {
            while (await listener.AcceptAsync(CancellationToken.None) is { } connection)
            {
                var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
                var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
                if (type != FrameType.Hello || !Hello.TryRead(ref reader, out var hello)) throw new IOException($"mallory read a {type} frame, not a Hello");
                if (!stolen.Task.IsCompleted)
                {
                    var impostor = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "mallory", token: hello.PeerId);
                    await impostor.SendAsync(o => new Attached((ulong)impostor.Id).Write(o));
                    int id = impostor.Id;
                    await Overlay.WaitUntilAsync(() => logs.Has(Microsoft.Extensions.Logging.LogLevel.Debug, $"peer {id} attached to all its parents"), "the coordinator heard the impostor's Attached");
                    stolen.SetResult(impostor);
                }
                new Welcome(Protocol.Negotiate(hello), 0, 1, 0, 0, [new ShardAssignment(0, AssignmentKind.Redirect, 0, 0, overlay.Coordinator.ListenAddress)]).Write(connection.Pipe.Output);
                await connection.Pipe.Output.FlushAsync();
                await connection.Pipe.Output.CompleteAsync();
            }
        }
        catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException)
        {
            // The test is over.
        }
        catch (Exception e)
        {
            stolen.TrySetException(e);
        }
    }

    [Fact]
    public async Task A_viewer_whose_token_the_node_it_joined_through_joined_with_first_is_placed_under_a_token_of_its_own()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, loggers: logs.Factory);
        await using var listener = await overlay.Network.Host("mallory").ListenAsync("mallory:1", CancellationToken.None);
        var stolen = new TaskCompletionSource<StrangerControlLink>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = RedirectAndStealAsync(overlay, listener, logs, stolen);

        var peer = await overlay.AddPeerAsync(joinAddress: "mallory:1", upload: 0, loggers: logs.Factory);
        await using var impostor = await stolen.Task.WaitAsync(Overlay.Deadline);

        var listed = overlay.Coordinator.Snapshot().Nodes.Where(n => n.Id != 0).Select(n => n.Id).Order().ToList();
        Assert.True(peer.Id != impostor.Id, $"the viewer was given the impostor's id {impostor.Id}");
        Assert.Equal([impostor.Id, peer.Id], listed);
        Assert.Contains(logs.Lines, l => l.Message.Contains("joining again as new with a join token of its own", StringComparison.Ordinal));

        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 96));
        await Overlay.WaitUntilAsync(() => peer.BytesWritten == 100_000, "the viewer has the stream");
    }

    /// <summary>
    /// The node a joiner went through redirects it, then joins first with its token while the
    /// joiner's own Join waits on an older connection (measuring, or probed): the coordinator takes
    /// the joiner's Join for a stale one of the token's peer, and must still tell it that the token
    /// is taken (Goodbye code TokenTaken, which has it join again with a token of its own), not
    /// refuse it outright.
    /// </summary>
    [Fact]
    public async Task A_join_older_than_the_session_its_token_placed_is_told_the_token_is_taken()
    {
        await using var overlay = await Overlay.StartAsync(1);
        ulong token = 0x5eed;
        var joiner = await overlay.Network.Host("p1").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
        await using var impostor = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "mallory", token: token);

        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, token, 0, [], "p1:1", new byte[Protocol.NonceLength]).Write(joiner.Pipe.Output);
        await joiner.Pipe.Output.FlushAsync();
        var (type, body) = await RawFrames.ReadAsync(joiner.Pipe.Input);
        joiner.Abort();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.Equal(FrameType.Goodbye, type);
        Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
        Assert.True(goodbye.Code == GoodbyeCode.TokenTaken, $"refused with {goodbye.Code}: {goodbye.Reason}");
        Assert.Contains($"placed peer {impostor.Id} on a later connection", goodbye.Reason);
    }
}

using System.Buffers;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// security.md, "An impostor coordinator": "It cannot replay a proof either: the nonce is fresh for
/// every join." An impostor that joined the real coordinator itself keeps the Welcome it got (the
/// real key, run and signature, over its own nonce) and answers a viewer's join with it: the
/// viewer, given the real stream's address, must refuse it.
/// </summary>
public class ReplayedProofTests
{
    [Fact]
    public async Task A_viewer_refuses_a_welcome_whose_proof_was_made_for_another_join()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1);
        var net = overlay.Network;

        // The impostor joins the real coordinator and keeps its Welcome.
        var own = await net.Host("impostor").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0, 0, [], "impostor:1", new byte[Protocol.NonceLength]).Write(own.Pipe.Output);
        await own.Pipe.Output.FlushAsync();
        var (type, body) = await RawFrames.ReadAsync(own.Pipe.Input);
        Assert.Equal(FrameType.Welcome, type);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.True(Welcome.TryRead(ref reader, out var recorded));

        // It listens where the viewer joins, and answers the viewer's Hello with that Welcome.
        await using var listener = await net.Host("impostor").ListenAsync("impostor:2", CancellationToken.None);
        var answering = Task.Run(async () =>
        {
            var victim = (await listener.AcceptAsync(CancellationToken.None))!;
            var (hello, _) = await RawFrames.ReadAsync(victim.Pipe.Input);
            Assert.Equal(FrameType.Hello, hello);
            recorded.Write(victim.Pipe.Output);
            await victim.Pipe.Output.FlushAsync();
            return victim;
        });
        var key = overlay.Coordinator.StreamKey;
        await using var viewer = new Peer(new PeerOptions { JoinAddress = "impostor:2", ListenAddress = "v:1", Stream = key, RejoinFor = TimeSpan.Zero }, net.Host("v"), Overlay.Loggers);
        var refused = await Assert.ThrowsAsync<ProtocolException>(() => viewer.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline));
        Assert.Contains($"impostor:2 did not prove it holds the key of stream {key.Address}", refused.Message);
        (await answering).Abort();
        own.Abort();
    }
}

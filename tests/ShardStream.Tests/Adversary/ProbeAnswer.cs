using System.Buffers;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>A test's own end of the coordinator's reachability probe (the dial-back before a joiner is placed).</summary>
internal static class ProbeAnswer
{
    /// <summary>
    /// Answers one probe at <paramref name="listener"/> as a peer whose join token is
    /// <paramref name="token"/> does: with the proof of it over the probe's nonce (protocol
    /// version 16). With <paramref name="inClear"/>, as a version-15 peer did instead: the token in
    /// the Welcome's peer id, no proof. With <paramref name="untilClosed"/>, returns only once the
    /// prober closed the connection.
    /// </summary>
    public static async Task AnswerAsync(IConnectionListener listener, ulong token, bool untilClosed = false, bool inClear = false)
    {
        using var timeout = new CancellationTokenSource(Overlay.Deadline);
        var connection = await listener.AcceptAsync(timeout.Token) ?? throw new IOException("the listener closed before the probe");
        var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
        Assert.Equal(FrameType.Hello, type);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.True(Hello.TryRead(ref reader, out var hello), "a malformed probe");
        var answer = inClear ? new Welcome(Protocol.Negotiate(hello), token, 1, 0, 0, [])
            : new Welcome(Protocol.Negotiate(hello), 0, 1, 0, 0, [], ProbeProof: ProbeProof.Compute(token, hello.Nonce ?? new byte[Protocol.NonceLength]));
        answer.Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync(timeout.Token);
        while (untilClosed)
        {
            var result = await connection.Pipe.Input.ReadAsync(timeout.Token);
            connection.Pipe.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted) return;
        }
    }
}

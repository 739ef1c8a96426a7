using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>A test's own end of the coordinator's reachability probe (the dial-back before a joiner is placed).</summary>
internal static class ProbeAnswer
{
    /// <summary>
    /// Answers one probe at <paramref name="listener"/> with <paramref name="token"/>, as a peer
    /// does; with <paramref name="untilClosed"/>, returns only once the prober closed the connection.
    /// </summary>
    public static async Task AnswerAsync(IConnectionListener listener, ulong token, bool untilClosed = false)
    {
        using var timeout = new CancellationTokenSource(Overlay.Deadline);
        var connection = await listener.AcceptAsync(timeout.Token) ?? throw new IOException("the listener closed before the probe");
        var (type, _) = await RawFrames.ReadAsync(connection.Pipe.Input);
        Assert.Equal(FrameType.Hello, type);
        new Welcome(Protocol.Version, token, 1, 0, 0, []).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync(timeout.Token);
        while (untilClosed)
        {
            var result = await connection.Pipe.Input.ReadAsync(timeout.Token);
            connection.Pipe.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted) return;
        }
    }
}

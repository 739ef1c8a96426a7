using System.Buffers;
using System.IO.Pipelines;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>Reading frames off a raw connection, for tests that speak the wire protocol themselves (a stranger, an adversary).</summary>
internal static class RawFrames
{
    /// <summary>The next whole frame on <paramref name="input"/> (its body copied), within <see cref="Overlay.Deadline"/>; an <see cref="IOException"/> if the input ends first.</summary>
    public static async Task<(FrameType Type, byte[] Body)> ReadAsync(PipeReader input)
    {
        using var timeout = new CancellationTokenSource(Overlay.Deadline);
        while (true)
        {
            var result = await input.ReadAsync(timeout.Token);
            var buffer = result.Buffer;
            if (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
            {
                var copy = body.ToArray();
                input.AdvanceTo(buffer.Start);
                return (type, copy);
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) throw new IOException("closed without a frame");
        }
    }

    /// <summary>Reads frames until a Goodbye, and returns it; <paramref name="each"/> sees the type of every frame before it.</summary>
    public static async Task<Goodbye> ReadUntilGoodbyeAsync(PipeReader input, Action<FrameType>? each = null)
    {
        while (true)
        {
            var (type, body) = await ReadAsync(input);
            each?.Invoke(type);
            if (type != FrameType.Goodbye) continue;
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
            Assert.True(Goodbye.TryRead(ref reader, out var goodbye), "a malformed goodbye");
            return goodbye;
        }
    }
}

using System.Buffers;
using System.IO.Pipelines;
using ShardStream.Wire;

namespace ShardStream.Transport;

/// <summary>
/// The first frame of a connection, read before its loops start: a stranger's hello, or the
/// answer to ours. The length field is checked before the body is buffered, so a first frame
/// costs at most its limit in memory.
/// </summary>
internal static class FirstFrame
{
    /// <summary>
    /// Reads exactly one frame before the loops start (the hello or the welcome), skipping
    /// heartbeats. A frame whose length field is over <paramref name="maxLength"/> is refused before
    /// it is buffered, so a stranger's first frame costs at most that much memory.
    /// </summary>
    public static async Task<(FrameType Type, byte[] Body)> ReadAsync(PipeReader input, int maxLength, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await input.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            bool found;
            FrameType type;
            ReadOnlySequence<byte> body;
            try
            {
                if (buffer.Length >= 4 && FrameCodec.PeekLength(buffer) is var length && length > maxLength)
                    throw new ProtocolException($"a first frame of {length} bytes is over the limit of {maxLength}");
                found = FrameCodec.TryReadFrame(ref buffer, out type, out body);
            }
            catch (ProtocolException)
            {
                // Leave the reader usable so that a goodbye can still be sent and the close drained.
                input.AdvanceTo(result.Buffer.End);
                throw;
            }
            if (found && type == FrameType.Heartbeat)
            {
                input.AdvanceTo(buffer.Start);
                continue;
            }
            if (found)
            {
                var copy = body.ToArray();
                input.AdvanceTo(buffer.Start);
                return (type, copy);
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) throw new IOException("connection closed before a frame arrived");
        }
    }
}

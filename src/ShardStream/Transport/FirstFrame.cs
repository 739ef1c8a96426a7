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
                {
                    string? text = TextAt(buffer);
                    throw new ProtocolException($"a first frame of {length} bytes is over the limit of {maxLength}{(text is null ? "" : $" (it begins with text: \"{text}\")")}") { Text = text };
                }
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

    /// <summary>
    /// Another protocol's first line (an HTTP server's answer, a request sent to the overlay port)
    /// reads as a length far over the limit: its first printable bytes, up to the line's end, say
    /// what answered. Null when the bytes are not text.
    /// </summary>
    private static string? TextAt(ReadOnlySequence<byte> buffer)
    {
        Span<byte> head = stackalloc byte[48];
        var bytes = head[..(int)Math.Min(head.Length, buffer.Length)];
        buffer.Slice(0, bytes.Length).CopyTo(bytes);
        int end = bytes.IndexOfAny((byte)'\r', (byte)'\n');
        if (end >= 0) bytes = bytes[..end];
        foreach (byte b in bytes)
            if (b is < 0x20 or > 0x7E) return null;
        return System.Text.Encoding.ASCII.GetString(bytes);
    }
}

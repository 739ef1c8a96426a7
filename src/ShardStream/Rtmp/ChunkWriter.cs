using System.Buffers;
using System.Buffers.Binary;

namespace ShardStream.Rtmp;

/// <summary>
/// Cuts messages into chunks (RTMP specification, section 5.3): a type-0 chunk with the absolute
/// timestamp, then type-3 chunks, each repeating the extended timestamp when the timestamp does not
/// fit 24 bits. Chunk stream ids of any of the three basic-header forms. Pure: no I/O.
/// </summary>
public sealed class ChunkWriter
{
    /// <summary>Our chunk size (128 until we send Set Chunk Size and call <see cref="SetChunkSize"/>).</summary>
    public int ChunkSize { get; private set; } = 128;

    public void SetChunkSize(int size)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, 0xFFFFFF);
        ChunkSize = size;
    }

    /// <summary>Writes one message as chunks.</summary>
    public void Write(IBufferWriter<byte> output, int chunkStreamId, uint timestamp, RtmpMessageType type, uint streamId, ReadOnlySpan<byte> payload)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkStreamId, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(chunkStreamId, 65599);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(payload.Length, 0xFFFFFF);
        bool extended = timestamp >= 0xFFFFFF;
        int offset = 0;
        bool first = true;
        do
        {
            int n = Math.Min(ChunkSize, payload.Length - offset);
            var span = output.GetSpan(ChunkReader.MaxHeaderLength + n);
            int pos = WriteBasicHeader(span, first ? 0 : 3, chunkStreamId);
            if (first)
            {
                WriteUInt24(span[pos..], extended ? 0xFFFFFF : timestamp);
                WriteUInt24(span[(pos + 3)..], (uint)payload.Length);
                span[pos + 6] = (byte)type;
                BinaryPrimitives.WriteUInt32LittleEndian(span[(pos + 7)..], streamId);
                pos += 11;
            }
            if (extended)
            {
                BinaryPrimitives.WriteUInt32BigEndian(span[pos..], timestamp);
                pos += 4;
            }
            payload.Slice(offset, n).CopyTo(span[pos..]);
            output.Advance(pos + n);
            offset += n;
            first = false;
        }
        while (offset < payload.Length);
    }

    /// <summary>Writes the basic header (section 5.3.1.1); returns its length (1, 2 or 3).</summary>
    public static int WriteBasicHeader(Span<byte> span, int fmt, int chunkStreamId)
    {
        if (chunkStreamId < 64)
        {
            span[0] = (byte)(fmt << 6 | chunkStreamId);
            return 1;
        }
        if (chunkStreamId < 320)
        {
            span[0] = (byte)(fmt << 6);
            span[1] = (byte)(chunkStreamId - 64);
            return 2;
        }
        span[0] = (byte)(fmt << 6 | 1);
        span[1] = (byte)((chunkStreamId - 64) & 0xFF);
        span[2] = (byte)((chunkStreamId - 64) >> 8);
        return 3;
    }

    private static void WriteUInt24(Span<byte> b, uint v)
    {
        b[0] = (byte)(v >> 16);
        b[1] = (byte)(v >> 8);
        b[2] = (byte)v;
    }
}

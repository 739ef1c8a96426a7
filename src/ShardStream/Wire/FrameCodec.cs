using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace ShardStream.Wire;

/// <summary>
/// Frame boundaries: <c>u32 length (big-endian) | u8 type | body</c>, where length counts the type
/// byte and the body. The length is checked against <see cref="Protocol.MaxFrameLength"/> before
/// anything is buffered.
/// </summary>
public static class FrameCodec
{
    /// <summary>
    /// Takes one complete frame off the front of <paramref name="buffer"/>. Returns false when the
    /// buffer does not hold a whole frame yet. Throws <see cref="ProtocolException"/> for a length
    /// that is zero or over the limit, or an unknown type.
    /// </summary>
    public static bool TryReadFrame(ref ReadOnlySequence<byte> buffer, out FrameType type, out ReadOnlySequence<byte> body)
    {
        type = default;
        body = default;
        if (buffer.Length < Protocol.FrameHeaderLength)
        {
            // Even four bytes are enough to reject an oversized length early.
            if (buffer.Length >= 4) CheckLength(ReadLength(buffer));
            return false;
        }

        uint length = ReadLength(buffer);
        CheckLength(length);
        if (buffer.Length < 4 + length) return false;

        byte typeByte = buffer.Slice(4, 1).FirstSpan[0];
        if (typeByte is 0 or > (byte)FrameType.DropChild)
            throw new ProtocolException($"unknown frame type {typeByte}");
        type = (FrameType)typeByte;
        body = buffer.Slice(Protocol.FrameHeaderLength, length - 1);
        buffer = buffer.Slice(4 + length);
        return true;
    }

    /// <summary>The length field of the frame at the front of <paramref name="buffer"/> (which holds at least 4 bytes).</summary>
    public static uint PeekLength(ReadOnlySequence<byte> buffer) => ReadLength(buffer);

    private static uint ReadLength(ReadOnlySequence<byte> buffer)
    {
        Span<byte> header = stackalloc byte[4];
        buffer.Slice(0, 4).CopyTo(header);
        return BinaryPrimitives.ReadUInt32BigEndian(header);
    }

    private static void CheckLength(uint length)
    {
        if (length == 0) throw new ProtocolException("frame with length 0");
        if (length > Protocol.MaxFrameLength)
            throw new ProtocolException($"frame of {length} bytes is over the limit of {Protocol.MaxFrameLength}");
    }

    /// <summary>Writes a frame header for a body of <paramref name="bodyLength"/> bytes.</summary>
    public static void WriteHeader(IBufferWriter<byte> writer, FrameType type, int bodyLength)
    {
        var span = writer.GetSpan(Protocol.FrameHeaderLength);
        BinaryPrimitives.WriteUInt32BigEndian(span, (uint)(bodyLength + 1));
        span[4] = (byte)type;
        writer.Advance(Protocol.FrameHeaderLength);
    }

    internal static void WriteString(ref SpanWriter w, string value)
    {
        int byteCount = Encoding.UTF8.GetByteCount(value);
        if (byteCount > Protocol.MaxStringLength) throw new ArgumentException($"string of {byteCount} bytes is over the limit of {Protocol.MaxStringLength}");
        w.WriteUInt16((ushort)byteCount);
        w.WriteUtf8(value, byteCount);
    }

    /// <summary>Writes a u8 length and the bytes (null: length 0).</summary>
    internal static void WriteBytes8(ref SpanWriter w, byte[]? value)
    {
        value ??= [];
        if (value.Length > byte.MaxValue) throw new ArgumentException($"a field of {value.Length} bytes is over the limit of 255");
        w.WriteByte((byte)value.Length);
        w.WriteBytes(value);
    }

    /// <summary>Writes exactly <paramref name="length"/> bytes: the value, or zeros when it is null.</summary>
    internal static void WriteFixed(ref SpanWriter w, byte[]? value, int length)
    {
        if (value is not null && value.Length != length) throw new ArgumentException($"a field of {value.Length} bytes where {length} are needed");
        w.WriteBytes(value ?? new byte[length]);
    }

    /// <summary>Reads exactly <paramref name="length"/> bytes (what <see cref="WriteFixed"/> wrote); false when fewer remain.</summary>
    internal static bool TryReadFixed(ref SequenceReader<byte> reader, int length, out byte[] value)
    {
        value = new byte[length];
        if (!reader.TryCopyTo(value)) return false;
        reader.Advance(length);
        return true;
    }

    internal static bool TryReadBytes8(ref SequenceReader<byte> reader, int maxLength, out byte[] value)
    {
        value = [];
        if (!reader.TryRead(out byte length) || length > maxLength || reader.Remaining < length) return false;
        if (length == 0) return true;
        value = new byte[length];
        reader.TryCopyTo(value);
        reader.Advance(length);
        return true;
    }

    internal static int StringSize(string value) => 2 + Encoding.UTF8.GetByteCount(value);

    /// <summary>UTF-8 that throws on invalid bytes instead of decoding them to U+FFFD (three bytes each when encoded again).</summary>
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Reads a string; false when it is truncated, over the limit, or not valid UTF-8.</summary>
    internal static bool TryReadString(ref SequenceReader<byte> reader, out string value)
    {
        value = "";
        if (!reader.TryReadBigEndian(out short len)) return false;
        int length = (ushort)len;
        if (length > Protocol.MaxStringLength || reader.Remaining < length) return false;
        if (length == 0) return true;
        var slice = reader.Sequence.Slice(reader.Position, length);
        try
        {
            value = StrictUtf8.GetString(slice);
        }
        catch (DecoderFallbackException)
        {
            return false;
        }
        reader.Advance(length);
        return true;
    }

    internal static bool TryReadUInt64(ref SequenceReader<byte> reader, out ulong value)
    {
        bool ok = reader.TryReadBigEndian(out long v);
        value = (ulong)v;
        return ok;
    }

    internal static bool TryReadUInt16(ref SequenceReader<byte> reader, out ushort value)
    {
        bool ok = reader.TryReadBigEndian(out short v);
        value = (ushort)v;
        return ok;
    }

    internal static bool TryReadUInt32(ref SequenceReader<byte> reader, out uint value)
    {
        bool ok = reader.TryReadBigEndian(out int v);
        value = (uint)v;
        return ok;
    }
}

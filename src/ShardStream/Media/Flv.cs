using System.Buffers.Binary;

namespace ShardStream.Media;

/// <summary>
/// Reads and writes the FLV byte layout (FLV specification v10.1, annex E): the 9-byte file
/// header, then PreviousTagSize0 (0), then tags, each followed by its PreviousTagSize (11 + data size).
/// </summary>
public static class Flv
{
    /// <summary>Bytes of the FLV file header as written here (DataOffset 9).</summary>
    public const int FileHeaderLength = 9;

    /// <summary>The file header and PreviousTagSize0: where the first tag starts.</summary>
    public const int PreambleLength = FileHeaderLength + 4;

    /// <summary>TypeFlags bit: the file has audio tags.</summary>
    public const byte HasAudio = 0x04;

    /// <summary>TypeFlags bit: the file has video tags.</summary>
    public const byte HasVideo = 0x01;

    /// <summary>The largest DataOffset accepted when reading (the header may grow in later versions).</summary>
    public const int MaxDataOffset = 1024;

    /// <summary>Whether <paramref name="data"/> starts with the FLV signature and version 1.</summary>
    public static bool HasSignature(ReadOnlySpan<byte> data) => data.Length >= 4 && data[0] == 'F' && data[1] == 'L' && data[2] == 'V' && data[3] == 1;

    /// <summary>Writes the file header and PreviousTagSize0 (13 bytes) with these TypeFlags.</summary>
    public static int WritePreamble(Span<byte> destination, byte typeFlags)
    {
        "FLV"u8.CopyTo(destination);
        destination[3] = 1;
        destination[4] = (byte)(typeFlags & (HasAudio | HasVideo));
        BinaryPrimitives.WriteUInt32BigEndian(destination[5..], FileHeaderLength);
        BinaryPrimitives.WriteUInt32BigEndian(destination[9..], 0);
        return PreambleLength;
    }

    /// <summary>Bytes a tag with this body takes on the wire: header, body, PreviousTagSize.</summary>
    public static int TagLength(int bodyLength) => FlvTag.HeaderLength + bodyLength + FlvTag.TrailerLength;

    /// <summary>Writes one tag with its header and PreviousTagSize; returns the bytes written.</summary>
    public static int WriteTag(Span<byte> destination, FlvTagType type, uint timestamp, ReadOnlySpan<byte> body)
    {
        WriteTagHeader(destination, type, timestamp, body.Length);
        body.CopyTo(destination[FlvTag.HeaderLength..]);
        WriteTagTrailer(destination[(FlvTag.HeaderLength + body.Length)..], body.Length);
        return TagLength(body.Length);
    }

    /// <summary>Writes a tag's 11-byte header (type, data size, timestamp and its extension, stream id 0); the body follows it.</summary>
    public static int WriteTagHeader(Span<byte> destination, FlvTagType type, uint timestamp, int bodyLength)
    {
        if (bodyLength > FlvTag.MaxBodyLength) throw new ArgumentException($"an FLV tag body holds at most {FlvTag.MaxBodyLength} bytes, not {bodyLength}");
        destination[0] = (byte)type;
        WriteUInt24(destination[1..], bodyLength);
        WriteUInt24(destination[4..], (int)(timestamp & 0xFFFFFF));
        destination[7] = (byte)(timestamp >> 24);
        WriteUInt24(destination[8..], 0);
        return FlvTag.HeaderLength;
    }

    /// <summary>Writes the PreviousTagSize that follows a tag with a body of <paramref name="bodyLength"/> bytes.</summary>
    public static int WriteTagTrailer(Span<byte> destination, int bodyLength)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)(FlvTag.HeaderLength + bodyLength));
        return FlvTag.TrailerLength;
    }

    /// <summary>A tag as a new array (header, body, PreviousTagSize).</summary>
    public static byte[] TagBytes(FlvTagType type, uint timestamp, ReadOnlySpan<byte> body)
    {
        var bytes = new byte[TagLength(body.Length)];
        WriteTag(bytes, type, timestamp, body);
        return bytes;
    }

    /// <summary>
    /// Reads the file header: its TypeFlags and the bytes up to the first tag (DataOffset + 4).
    /// False when more bytes are needed; throws <see cref="InvalidDataException"/> when the bytes are not an FLV header.
    /// </summary>
    public static bool TryReadPreamble(ReadOnlySpan<byte> data, out byte typeFlags, out int length)
    {
        typeFlags = 0;
        length = 0;
        if (data.Length < FileHeaderLength) return false;
        if (!HasSignature(data)) throw new InvalidDataException("not an FLV file header (no \"FLV\" signature and version 1)");
        uint dataOffset = BinaryPrimitives.ReadUInt32BigEndian(data[5..]);
        if (dataOffset is < FileHeaderLength or > MaxDataOffset) throw new InvalidDataException($"FLV header with a DataOffset of {dataOffset} (9..{MaxDataOffset} accepted)");
        if (data.Length < dataOffset + 4) return false;
        typeFlags = data[4];
        length = (int)dataOffset + 4;
        return true;
    }

    /// <summary>
    /// Reads one tag (header, body, PreviousTagSize) from the start of <paramref name="data"/>.
    /// False when more bytes are needed (<paramref name="length"/> then says how many the tag
    /// takes once its header is in, else 0); throws <see cref="InvalidDataException"/> on a tag
    /// type that is not audio, video or script data, or a stream id that is not 0.
    /// </summary>
    public static bool TryReadTag(ReadOnlySpan<byte> data, out FlvTagType type, out uint timestamp, out int bodyLength, out int length)
    {
        type = 0;
        timestamp = 0;
        bodyLength = 0;
        length = 0;
        if (data.Length < FlvTag.HeaderLength) return false;
        int rawType = data[0] & 0x1F;
        if ((data[0] & 0x20) != 0) throw new InvalidDataException("an encrypted FLV tag (Filter bit set) is not supported");
        if (rawType is not ((int)FlvTagType.Audio or (int)FlvTagType.Video or (int)FlvTagType.Script))
            throw new InvalidDataException($"FLV tag of type {rawType} (8, 9 or 18 expected)");
        if (ReadUInt24(data[8..]) != 0) throw new InvalidDataException("FLV tag with a stream id other than 0");
        type = (FlvTagType)rawType;
        bodyLength = ReadUInt24(data[1..]);
        timestamp = (uint)ReadUInt24(data[4..]) | ((uint)data[7] << 24);
        length = TagLength(bodyLength);
        return data.Length >= length;
    }

    private static int ReadUInt24(ReadOnlySpan<byte> s) => (s[0] << 16) | (s[1] << 8) | s[2];

    private static void WriteUInt24(Span<byte> s, int value)
    {
        s[0] = (byte)(value >> 16);
        s[1] = (byte)(value >> 8);
        s[2] = (byte)value;
    }
}

using System.Buffers.Binary;
using System.Text;

namespace ShardStream.Wire;

/// <summary>Big-endian writes into a span that is known to be large enough.</summary>
internal ref struct SpanWriter(Span<byte> span)
{
    private readonly Span<byte> _span = span;
    private int _position;

    public readonly int Position => _position;

    public void WriteByte(byte value) => _span[_position++] = value;

    public void WriteUInt16(ushort value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(_span[_position..], value);
        _position += 2;
    }

    public void WriteUInt32(uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(_span[_position..], value);
        _position += 4;
    }

    public void WriteUInt64(ulong value)
    {
        BinaryPrimitives.WriteUInt64BigEndian(_span[_position..], value);
        _position += 8;
    }

    public void WriteBytes(ReadOnlySpan<byte> value)
    {
        value.CopyTo(_span[_position..]);
        _position += value.Length;
    }

    public void WriteUtf8(string value, int byteCount)
    {
        Encoding.UTF8.GetBytes(value, _span.Slice(_position, byteCount));
        _position += byteCount;
    }
}

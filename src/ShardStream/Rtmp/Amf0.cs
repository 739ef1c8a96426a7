using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace ShardStream.Rtmp;

/// <summary>AMF0 type markers (AMF0 File Format Specification, Adobe, section 2.1).</summary>
public enum Amf0Marker : byte
{
    Number = 0x00,
    Boolean = 0x01,
    String = 0x02,
    Object = 0x03,
    MovieClip = 0x04,
    Null = 0x05,
    Undefined = 0x06,
    Reference = 0x07,
    EcmaArray = 0x08,
    ObjectEnd = 0x09,
    StrictArray = 0x0A,
    Date = 0x0B,
    LongString = 0x0C,
    Unsupported = 0x0D,
    RecordSet = 0x0E,
    XmlDocument = 0x0F,
    TypedObject = 0x10,
    AvmPlus = 0x11,
}

/// <summary>The AMF0 undefined value (null is AMF0 null).</summary>
public sealed class AmfUndefined
{
    public static readonly AmfUndefined Value = new();

    private AmfUndefined() { }

    public override string ToString() => "undefined";
}

/// <summary>
/// An AMF0 anonymous object, ECMA array or typed object: properties in wire order. Values are
/// double, bool, string, null, <see cref="AmfUndefined"/>, <see cref="AmfObject"/>, object?[]
/// (strict array) or <see cref="DateTime"/> (UTC).
/// </summary>
public sealed class AmfObject : List<KeyValuePair<string, object?>>
{
    public bool IsEcmaArray { get; init; }

    public string? ClassName { get; init; }

    public void Add(string key, object? value) => Add(new KeyValuePair<string, object?>(key, value));

    /// <summary>The first property named <paramref name="key"/>, or null.</summary>
    public object? Get(string key)
    {
        foreach (var (k, v) in this) if (k == key) return v;
        return null;
    }
}

/// <summary>Decodes AMF0 values from a message payload, with a nesting limit.</summary>
public ref struct Amf0Reader(ReadOnlySpan<byte> data, int maxDepth)
{
    private readonly ReadOnlySpan<byte> _data = data;
    private int _depth;

    public int Position { get; private set; }

    public readonly bool End => Position >= _data.Length;

    /// <summary>Reads every value up to the end of the payload.</summary>
    public List<object?> ReadAll()
    {
        var values = new List<object?>();
        while (!End) values.Add(ReadValue());
        return values;
    }

    public object? ReadValue()
    {
        var marker = (Amf0Marker)Take(1)[0];
        switch (marker)
        {
            case Amf0Marker.Number: return BinaryPrimitives.ReadDoubleBigEndian(Take(8));
            case Amf0Marker.Boolean: return Take(1)[0] != 0;
            case Amf0Marker.String: return ReadUtf8(BinaryPrimitives.ReadUInt16BigEndian(Take(2)));
            case Amf0Marker.LongString or Amf0Marker.XmlDocument: return ReadUtf8(BinaryPrimitives.ReadUInt32BigEndian(Take(4)));
            case Amf0Marker.Null: return null;
            case Amf0Marker.Undefined or Amf0Marker.Unsupported: return AmfUndefined.Value;
            case Amf0Marker.Object: return ReadProperties(new AmfObject());
            case Amf0Marker.TypedObject: return ReadProperties(new AmfObject { ClassName = ReadUtf8(BinaryPrimitives.ReadUInt16BigEndian(Take(2))) });
            case Amf0Marker.EcmaArray:
                Take(4); // the count is a hint; the properties end with the object-end marker
                return ReadProperties(new AmfObject { IsEcmaArray = true });
            case Amf0Marker.StrictArray:
            {
                uint count = BinaryPrimitives.ReadUInt32BigEndian(Take(4));
                if (count > (uint)(_data.Length - Position)) throw new RtmpProtocolException($"AMF0 strict array of {count} items in {_data.Length - Position} bytes");
                Enter();
                var items = new object?[count];
                for (int i = 0; i < items.Length; i++) items[i] = ReadValue();
                _depth--;
                return items;
            }
            case Amf0Marker.Date:
            {
                double ms = BinaryPrimitives.ReadDoubleBigEndian(Take(8));
                Take(2); // time zone: reserved, should be 0
                if (!double.IsFinite(ms) || Math.Abs(ms) > 8.64e15) throw new RtmpProtocolException("AMF0 date out of range");
                return DateTime.UnixEpoch.AddMilliseconds(ms);
            }
            default:
                throw new RtmpProtocolException($"AMF0 marker 0x{(byte)marker:x2} not supported at byte {Position - 1}");
        }
    }

    private AmfObject ReadProperties(AmfObject target)
    {
        Enter();
        while (true)
        {
            string key = ReadUtf8(BinaryPrimitives.ReadUInt16BigEndian(Take(2)));
            if (key.Length == 0 && Position < _data.Length && _data[Position] == (byte)Amf0Marker.ObjectEnd)
            {
                Position++;
                break;
            }
            target.Add(key, ReadValue());
        }
        _depth--;
        return target;
    }

    private void Enter()
    {
        if (++_depth > maxDepth) throw new RtmpProtocolException($"AMF0 nesting deeper than {maxDepth}");
    }

    private string ReadUtf8(uint length)
    {
        var bytes = Take(length);
        try
        {
            return new UTF8Encoding(false, true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new RtmpProtocolException($"AMF0 string of invalid UTF-8 at byte {Position - length}");
        }
    }

    private ReadOnlySpan<byte> Take(uint length)
    {
        if (length > (uint)(_data.Length - Position)) throw new RtmpProtocolException($"AMF0 value cut short at byte {Position} (needs {length} more, {_data.Length - Position} left)");
        var span = _data.Slice(Position, (int)length);
        Position += (int)length;
        return span;
    }
}

/// <summary>Encodes AMF0 values.</summary>
public static class Amf0Writer
{
    public static void WriteValue(IBufferWriter<byte> w, object? value)
    {
        switch (value)
        {
            case null: WriteMarker(w, Amf0Marker.Null); break;
            case AmfUndefined: WriteMarker(w, Amf0Marker.Undefined); break;
            case double d: WriteNumber(w, d); break;
            case int i: WriteNumber(w, i); break;
            case uint u: WriteNumber(w, u); break;
            case long l: WriteNumber(w, l); break;
            case bool b: WriteBoolean(w, b); break;
            case string s: WriteString(w, s); break;
            case AmfObject o: WriteObject(w, o); break;
            case object?[] items:
                WriteMarker(w, Amf0Marker.StrictArray);
                BinaryPrimitives.WriteUInt32BigEndian(w.GetSpan(4), (uint)items.Length);
                w.Advance(4);
                foreach (var item in items) WriteValue(w, item);
                break;
            case DateTime t:
                WriteMarker(w, Amf0Marker.Date);
                var span = w.GetSpan(10);
                BinaryPrimitives.WriteDoubleBigEndian(span, (t.ToUniversalTime() - DateTime.UnixEpoch).TotalMilliseconds);
                span[8] = span[9] = 0;
                w.Advance(10);
                break;
            default: throw new ArgumentException($"no AMF0 encoding for {value.GetType().Name}", nameof(value));
        }
    }

    public static void WriteNumber(IBufferWriter<byte> w, double value)
    {
        var span = w.GetSpan(9);
        span[0] = (byte)Amf0Marker.Number;
        BinaryPrimitives.WriteDoubleBigEndian(span[1..], value);
        w.Advance(9);
    }

    public static void WriteBoolean(IBufferWriter<byte> w, bool value)
    {
        var span = w.GetSpan(2);
        span[0] = (byte)Amf0Marker.Boolean;
        span[1] = value ? (byte)1 : (byte)0;
        w.Advance(2);
    }

    /// <summary>A string, or a long string when its UTF-8 is over 65535 bytes.</summary>
    public static void WriteString(IBufferWriter<byte> w, string value)
    {
        int length = Encoding.UTF8.GetByteCount(value);
        bool isLong = length > ushort.MaxValue;
        WriteMarker(w, isLong ? Amf0Marker.LongString : Amf0Marker.String);
        WriteUtf8(w, value, length, isLong);
    }

    public static void WriteObject(IBufferWriter<byte> w, AmfObject value)
    {
        if (value.IsEcmaArray)
        {
            WriteMarker(w, Amf0Marker.EcmaArray);
            BinaryPrimitives.WriteUInt32BigEndian(w.GetSpan(4), (uint)value.Count);
            w.Advance(4);
        }
        else if (value.ClassName is { } name)
        {
            WriteMarker(w, Amf0Marker.TypedObject);
            WriteUtf8(w, name, Encoding.UTF8.GetByteCount(name), false);
        }
        else WriteMarker(w, Amf0Marker.Object);
        foreach (var (key, v) in value)
        {
            WriteUtf8(w, key, Encoding.UTF8.GetByteCount(key), false);
            WriteValue(w, v);
        }
        var end = w.GetSpan(3);
        end[0] = 0;
        end[1] = 0;
        end[2] = (byte)Amf0Marker.ObjectEnd;
        w.Advance(3);
    }

    /// <summary>Encodes <paramref name="values"/> one after the other into a new array.</summary>
    public static byte[] Encode(params object?[] values)
    {
        var w = new ArrayBufferWriter<byte>();
        foreach (var v in values) WriteValue(w, v);
        return w.WrittenSpan.ToArray();
    }

    private static void WriteMarker(IBufferWriter<byte> w, Amf0Marker marker)
    {
        w.GetSpan(1)[0] = (byte)marker;
        w.Advance(1);
    }

    private static void WriteUtf8(IBufferWriter<byte> w, string value, int length, bool isLong)
    {
        if (!isLong && length > ushort.MaxValue) throw new ArgumentException("AMF0 key or class name over 65535 bytes", nameof(value));
        int prefix = isLong ? 4 : 2;
        var span = w.GetSpan(prefix + length);
        if (isLong) BinaryPrimitives.WriteUInt32BigEndian(span, (uint)length);
        else BinaryPrimitives.WriteUInt16BigEndian(span, (ushort)length);
        Encoding.UTF8.GetBytes(value, span[prefix..]);
        w.Advance(prefix + length);
    }
}

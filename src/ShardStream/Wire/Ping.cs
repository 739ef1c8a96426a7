using System.Buffers;
using System.Buffers.Binary;

namespace ShardStream.Wire;

/// <summary>
/// A Vivaldi network coordinate as it travels (version 6): plane X and Y, height and the sender's
/// own relative error, each a big-endian IEEE 754 single. Values that are not finite, a negative
/// height and an error outside 0..1 make the enclosing frame malformed.
/// </summary>
public readonly record struct WireCoordinate(float X, float Y, float Height, float Error)
{
    /// <summary>Bytes of a coordinate on the wire.</summary>
    public const int Length = 16;

    /// <summary>The coordinate of a node that has measured nothing (error 1: the receiver ignores it).</summary>
    public static WireCoordinate Unknown => new(0, 0, 0, 1);

    /// <summary>True when the sender knows nothing of where it is.</summary>
    public bool IsUnknown => Error >= 1;

    internal void Write(ref SpanWriter w)
    {
        w.WriteUInt32(BitConverter.SingleToUInt32Bits(X));
        w.WriteUInt32(BitConverter.SingleToUInt32Bits(Y));
        w.WriteUInt32(BitConverter.SingleToUInt32Bits(Height));
        w.WriteUInt32(BitConverter.SingleToUInt32Bits(Error));
    }

    internal static bool TryRead(ref SequenceReader<byte> r, out WireCoordinate value)
    {
        value = default;
        Span<byte> bytes = stackalloc byte[Length];
        if (!r.TryCopyTo(bytes)) return false;
        r.Advance(Length);
        float x = BinaryPrimitives.ReadSingleBigEndian(bytes), y = BinaryPrimitives.ReadSingleBigEndian(bytes[4..]);
        float h = BinaryPrimitives.ReadSingleBigEndian(bytes[8..]), e = BinaryPrimitives.ReadSingleBigEndian(bytes[12..]);
        if (!float.IsFinite(x) || !float.IsFinite(y) || !float.IsFinite(h) || !float.IsFinite(e) || h < 0 || e is < 0 or > 1) return false;
        value = new WireCoordinate(x, y, h, e);
        return true;
    }
}

/// <summary>Either side, version 6: asks the other side to answer with a <see cref="Pong"/> carrying <paramref name="Token"/>, to measure the round-trip time.</summary>
public readonly record struct Ping(ulong Token)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.WriteUInt64Frame(writer, FrameType.Ping, Token);

    /// <summary>Reads a ping body (exactly 8 bytes).</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Ping value) => FrameWriting.TryReadUInt64Body(ref r, static token => new Ping(token), out value);
}

/// <summary>
/// The answer to a <see cref="Ping"/> (version 6): its token, how long the answer waited at the
/// answering side before it was sent (<paramref name="HoldMicros"/>, which the pinger subtracts, as
/// QUIC's ack delay, RFC 9000 section 19.3: up to <see cref="Protocol.MaxPongHold"/>, and never
/// below the least round trip it measured), and the answering side's network coordinate.
/// </summary>
public readonly record struct Pong(ulong Token, uint HoldMicros, WireCoordinate Coordinate)
{
    /// <summary>Bytes of a pong body.</summary>
    public const int BodyLength = 8 + 4 + WireCoordinate.Length;

    /// <summary>Offset of <see cref="HoldMicros"/> in the whole frame (after the 5-byte header and the token): the sender fills it in as the frame goes out.</summary>
    public const int HoldOffsetInFrame = Protocol.FrameHeaderLength + 8;

    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.Pong, BodyLength, in this, static (in Pong m, ref SpanWriter w) =>
    {
        w.WriteUInt64(m.Token);
        w.WriteUInt32(m.HoldMicros);
        m.Coordinate.Write(ref w);
    });

    /// <summary>Reads a pong body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Pong value)
    {
        value = default;
        if (!FrameCodec.TryReadUInt64(ref r, out ulong token) || !FrameCodec.TryReadUInt32(ref r, out uint hold)
            || !WireCoordinate.TryRead(ref r, out var coordinate) || !r.End) return false;
        value = new Pong(token, hold, coordinate);
        return true;
    }
}

/// <summary>One node a joiner should measure: its id in the overlay (0 = the coordinator), address and coordinate.</summary>
public readonly record struct Landmark(ulong Id, string Address, WireCoordinate Coordinate)
{
    internal int Size => 8 + FrameCodec.StringSize(Address) + WireCoordinate.Length;
}

/// <summary>
/// Coordinator to joiner (version 6), in answer to a Join whose coordinate is unknown: measure the
/// round-trip time to these nodes, then join again with the coordinate they give. At most
/// <see cref="Protocol.MaxShards"/> entries; the first is the coordinator itself. Version 10 adds
/// <paramref name="Version"/> after the nodes, sent only to a joiner that speaks 10 or more: the
/// coordinator keeps the connection and reads the joiner's next Join on it; without it (0, a
/// version-9 coordinator or joiner) the coordinator closes and the joiner connects again.
/// </summary>
public readonly record struct Landmarks(Landmark[] Nodes, ushort Version = 0)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer)
    {
        int size = 1 + (Version >= Protocol.OneConnectionVersion ? 2 : 0);
        foreach (var n in Nodes) size += n.Size;
        FrameWriting.Write(writer, FrameType.Landmarks, size, in this, static (in Landmarks m, ref SpanWriter w) =>
        {
            w.WriteByte((byte)m.Nodes.Length);
            foreach (var n in m.Nodes)
            {
                w.WriteUInt64(n.Id);
                FrameCodec.WriteString(ref w, n.Address);
                n.Coordinate.Write(ref w);
            }
            if (m.Version >= Protocol.OneConnectionVersion) w.WriteUInt16(m.Version);
        });
    }

    /// <summary>Reads a landmarks body (version 6 to 9: the nodes only; version 10: then the version, at least 10).</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Landmarks value)
    {
        value = default;
        if (!r.TryRead(out byte count) || count is 0 or > Protocol.MaxShards) return false;
        var nodes = new Landmark[count];
        for (int i = 0; i < count; i++)
        {
            if (!FrameCodec.TryReadUInt64(ref r, out ulong id) || !FrameCodec.TryReadString(ref r, out string address)
                || !WireCoordinate.TryRead(ref r, out var coordinate)) return false;
            nodes[i] = new Landmark(id, address, coordinate);
        }
        ushort version = 0;
        if (!r.End && (!FrameCodec.TryReadUInt16(ref r, out version) || version < Protocol.OneConnectionVersion)) return false;
        if (!r.End) return false;
        value = new Landmarks(nodes, version);
        return true;
    }
}

/// <summary>A round-trip time a joiner measured to node <paramref name="NodeId"/> (0 = the coordinator), in microseconds.</summary>
public readonly record struct MeasuredRtt(ulong NodeId, uint RttMicros)
{
    /// <summary>Bytes of one entry.</summary>
    public const int Length = 12;

    internal static void WriteList(ref SpanWriter w, MeasuredRtt[]? list)
    {
        w.WriteByte((byte)(list?.Length ?? 0));
        foreach (var m in list ?? [])
        {
            w.WriteUInt64(m.NodeId);
            w.WriteUInt32(m.RttMicros);
        }
    }

    /// <summary>A u8 count (at most <see cref="Protocol.MaxShards"/>) and the entries; an empty list reads as null.</summary>
    internal static bool TryReadList(ref SequenceReader<byte> r, out MeasuredRtt[]? list)
    {
        list = null;
        if (!r.TryRead(out byte count) || count > Protocol.MaxShards) return false;
        if (count == 0) return true;
        var entries = new MeasuredRtt[count];
        for (int i = 0; i < count; i++)
        {
            if (!FrameCodec.TryReadUInt64(ref r, out ulong id) || !FrameCodec.TryReadUInt32(ref r, out uint rtt)) return false;
            entries[i] = new MeasuredRtt(id, rtt);
        }
        list = entries;
        return true;
    }
}

/// <summary>
/// Version 11: the RTT a peer measured on its link to parent <paramref name="NodeId"/> (0 = the
/// coordinator), as it keeps it (RFC 6298, docs/protocol.md section 17): the smoothed RTT, the least
/// sample, and how many samples were taken (at most 65,535 are counted).
/// </summary>
public readonly record struct ParentRtt(ulong NodeId, uint SmoothedMicros, uint MinMicros, ushort Samples)
{
    /// <summary>Bytes of one entry.</summary>
    public const int Length = 18;

    internal static void WriteList(ref SpanWriter w, ParentRtt[] list)
    {
        w.WriteByte((byte)list.Length);
        foreach (var m in list)
        {
            w.WriteUInt64(m.NodeId);
            w.WriteUInt32(m.SmoothedMicros);
            w.WriteUInt32(m.MinMicros);
            w.WriteUInt16(m.Samples);
        }
    }

    /// <summary>A u8 count (at most <see cref="Protocol.MaxShards"/>) and the entries.</summary>
    internal static bool TryReadList(ref SequenceReader<byte> r, out ParentRtt[] list)
    {
        list = [];
        if (!r.TryRead(out byte count) || count > Protocol.MaxShards) return false;
        var entries = new ParentRtt[count];
        for (int i = 0; i < count; i++)
        {
            if (!FrameCodec.TryReadUInt64(ref r, out ulong id) || !FrameCodec.TryReadUInt32(ref r, out uint smoothed)
                || !FrameCodec.TryReadUInt32(ref r, out uint min) || !FrameCodec.TryReadUInt16(ref r, out ushort samples)) return false;
            entries[i] = new ParentRtt(id, smoothed, min, samples);
        }
        list = entries;
        return true;
    }
}

using System.Buffers;

namespace ShardStream.Wire;

/// <summary>
/// Coordinator to peer on the control link, version 5: the media header (docs/media.md) that a
/// peer joining an FLV or MPEG-TS stream after its start writes before its first chunk, signed
/// with the stream's key. <see cref="Bytes"/> is empty when the peer needs none (a raw stream, or a
/// join at offset 0, where the stream's own first bytes are the header).
/// </summary>
/// <param name="Format">0 raw, 1 FLV, 2 MPEG-TS.</param>
/// <param name="Generation">Grows each time the publisher's headers change.</param>
/// <param name="FromSeq">The chunk the peer starts at, which the header goes before.</param>
/// <param name="Bytes">The header bytes, written as they are.</param>
/// <param name="Signature">The coordinator's signature (docs/protocol.md section 16).</param>
public readonly record struct StreamHeader(byte Format, uint Generation, ulong FromSeq, byte[] Bytes, byte[] Signature)
{
    /// <summary>Bytes of the body before the header bytes: format, generation, from_seq, signature.</summary>
    public const int FixedLength = 1 + 4 + 8 + Protocol.SignatureLength;

    /// <summary>The longest header that fits in one frame.</summary>
    public const int MaxBytes = Protocol.MaxFrameLength - 1 - FixedLength;

    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.StreamHeader, FixedLength + Bytes.Length, in this, static (in StreamHeader m, ref SpanWriter w) =>
    {
        w.WriteByte(m.Format);
        w.WriteUInt32(m.Generation);
        w.WriteUInt64(m.FromSeq);
        w.WriteBytes(m.Signature);
        w.WriteBytes(m.Bytes);
    });

    /// <summary>Reads a stream header body: the header bytes are the rest of the frame.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out StreamHeader value)
    {
        value = default;
        if (!r.TryRead(out byte format) || !FrameCodec.TryReadUInt32(ref r, out uint generation) || !FrameCodec.TryReadUInt64(ref r, out ulong fromSeq)) return false;
        var signature = new byte[Protocol.SignatureLength];
        if (!r.TryCopyTo(signature)) return false;
        r.Advance(signature.Length);
        var bytes = r.UnreadSequence.ToArray();
        r.AdvanceToEnd();
        value = new StreamHeader(format, generation, fromSeq, bytes, signature);
        return true;
    }
}

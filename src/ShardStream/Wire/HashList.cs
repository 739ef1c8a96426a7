using System.Buffers;

namespace ShardStream.Wire;

/// <summary>
/// The coordinator's signed hashes of consecutive chunks of one shard: chunk <c>FirstSeq + i·K</c>
/// has hash <c>i</c>. A receiver checks the signature once for the list, then each chunk against
/// its hash, and forwards nothing it has not checked (docs/protocol.md, "Signed hash lists").
/// </summary>
/// <param name="Shard">The shard.</param>
/// <param name="FirstSeq">The sequence number of the first chunk listed.</param>
/// <param name="Hashes">Count × 32 bytes: BLAKE3 of each chunk body (shard, seq, offset, payload).</param>
/// <param name="Signature">The coordinator's Ed25519 signature (see <c>StreamSigner.SignHashList</c>).</param>
public readonly record struct HashList(byte Shard, ulong FirstSeq, byte[] Hashes, byte[] Signature)
{
    /// <summary>How many chunks the list covers.</summary>
    public int Count => Hashes.Length / Protocol.HashLength;

    /// <summary>Bytes of the whole frame.</summary>
    public int FrameLength => Protocol.FrameHeaderLength + 1 + 8 + 1 + Hashes.Length + Protocol.SignatureLength;

    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) =>
        FrameWriting.Write(writer, FrameType.Hashes, 1 + 8 + 1 + Hashes.Length + Protocol.SignatureLength, in this, static (in HashList m, ref SpanWriter w) =>
        {
            w.WriteByte(m.Shard);
            w.WriteUInt64(m.FirstSeq);
            w.WriteByte((byte)m.Count);
            w.WriteBytes(m.Hashes);
            w.WriteBytes(m.Signature);
        });

    /// <summary>Reads a hash-list body; false when it is truncated, empty, too long or has bytes left over.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out HashList value)
    {
        value = default;
        if (!r.TryRead(out byte shard) || !FrameCodec.TryReadUInt64(ref r, out ulong first) || !r.TryRead(out byte count)) return false;
        if (count is 0 or > Protocol.MaxHashesPerList || r.Remaining != count * Protocol.HashLength + Protocol.SignatureLength) return false;
        var hashes = new byte[count * Protocol.HashLength];
        var signature = new byte[Protocol.SignatureLength];
        r.TryCopyTo(hashes);
        r.Advance(hashes.Length);
        r.TryCopyTo(signature);
        r.Advance(signature.Length);
        value = new HashList(shard, first, hashes, signature);
        return true;
    }
}

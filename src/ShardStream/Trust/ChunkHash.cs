using System.Buffers;
using System.Buffers.Binary;
using ShardStream.Wire;

namespace ShardStream.Trust;

/// <summary>
/// The hash a signed hash list holds for a chunk: BLAKE3 of the chunk frame's body as it is on the
/// wire (shard u8, seq u64, offset u64, then the payload), so a chunk's place in the stream is
/// covered as much as its bytes. BLAKE3 was measured against SHA-256 (bench <c>integrity</c>,
/// docs/performance.md).
/// </summary>
internal static class ChunkHash
{
    public static void Compute(byte shard, ulong seq, ulong offset, in ReadOnlySequence<byte> payload, Span<byte> hash)
    {
        using var hasher = Blake3.Hasher.New();
        Span<byte> header = stackalloc byte[Protocol.ChunkHeaderLength];
        header[0] = shard;
        BinaryPrimitives.WriteUInt64BigEndian(header[1..], seq);
        BinaryPrimitives.WriteUInt64BigEndian(header[9..], offset);
        hasher.Update(header);
        if (payload.IsSingleSegment) hasher.Update(payload.FirstSpan);
        else
            foreach (var segment in payload) hasher.Update(segment.Span);
        hasher.Finalize(hash);
    }

    public static void Compute(byte shard, ulong seq, ulong offset, ReadOnlySpan<byte> payload, Span<byte> hash)
    {
        using var hasher = Blake3.Hasher.New();
        Span<byte> header = stackalloc byte[Protocol.ChunkHeaderLength];
        header[0] = shard;
        BinaryPrimitives.WriteUInt64BigEndian(header[1..], seq);
        BinaryPrimitives.WriteUInt64BigEndian(header[9..], offset);
        hasher.Update(header);
        hasher.Update(payload);
        hasher.Finalize(hash);
    }
}

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
/// <remarks>
/// The body is always hashed in one call over contiguous bytes. The managed BLAKE3's incremental
/// hasher takes its 16-way SIMD path only while its input starts on a 16 KiB boundary of the
/// message; fed the 17-byte header and then the payload, it hashed almost every 1 KiB block of a
/// 64 KiB chunk one at a time, 2–4 times slower than one call over the same bytes
/// (docs/performance.md, "Where the extra CPU went").
/// </remarks>
internal static class ChunkHash
{
    /// <summary>Hashes a chunk body that is contiguous in memory: header fields, then payload.</summary>
    public static void ComputeBody(ReadOnlySpan<byte> body, Span<byte> hash) => Blake3.Hasher.Hash(body, hash);

    public static void Compute(byte shard, ulong seq, ulong offset, in ReadOnlySequence<byte> payload, Span<byte> hash)
    {
        int length = Protocol.ChunkHeaderLength + (int)payload.Length;
        byte[] body = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            WriteHeader(body, shard, seq, offset);
            payload.CopyTo(body.AsSpan(Protocol.ChunkHeaderLength));
            ComputeBody(body.AsSpan(0, length), hash);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(body);
        }
    }

    public static void Compute(byte shard, ulong seq, ulong offset, ReadOnlySpan<byte> payload, Span<byte> hash)
    {
        int length = Protocol.ChunkHeaderLength + payload.Length;
        byte[] body = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            WriteHeader(body, shard, seq, offset);
            payload.CopyTo(body.AsSpan(Protocol.ChunkHeaderLength));
            ComputeBody(body.AsSpan(0, length), hash);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(body);
        }
    }

    private static void WriteHeader(Span<byte> header, byte shard, ulong seq, ulong offset)
    {
        header[0] = shard;
        BinaryPrimitives.WriteUInt64BigEndian(header[1..], seq);
        BinaryPrimitives.WriteUInt64BigEndian(header[9..], offset);
    }
}

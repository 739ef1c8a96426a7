using System.Buffers;
using System.Buffers.Binary;
using ShardStream.Trust.Hashing;
using ShardStream.Wire;

namespace ShardStream.Trust;

/// <summary>
/// The hash a signed hash list holds for a chunk: BLAKE3 of the chunk frame's body as it is on the
/// wire (shard u8, seq u64, offset u64, then the payload), so a chunk's place in the stream is
/// covered as much as its bytes. BLAKE3 was measured against SHA-256 (bench <c>integrity</c>,
/// docs/performance.md).
/// </summary>
/// <remarks>
/// Two implementations of the same function, chosen by the body's length as measured (bench
/// <c>integrity --sizes --sweep</c>, docs/performance.md): our own (<see cref="Blake3Hash"/>),
/// which compresses all the chunks of a body side by side whatever their number, and the Blake3
/// package, whose wide path is faster by up to ~15% on bodies of whole groups of 8 KiB from 16 KiB up (a
/// 64 KiB chunk's 65,553 bytes) but applies to nothing else: below, it cost 1.5–1.8 ns/B (a 4 KiB
/// chunk 7 µs, against 2 µs for ours). On a CPU where ours has no AVX2 (its SSE kernels were slower
/// than the package there, <see cref="PackageIsFaster(int, Blake3Kernels)"/>), or if it failed its
/// check at start, the package hashes every body. The body is always hashed in one call over contiguous bytes: the package's
/// incremental hasher fed the 17-byte header and then the payload missed its wide path
/// (docs/performance.md, "Where the extra CPU went").
/// </remarks>
internal static class ChunkHash
{
    /// <summary>Hashes a chunk body that is contiguous in memory: header fields, then payload.</summary>
    public static void ComputeBody(ReadOnlySpan<byte> body, Span<byte> hash)
    {
        if (PackageIsFaster(body.Length)) Blake3.Hasher.Hash(body, hash);
        else Blake3Hash.Hash(body, hash);
    }

    /// <summary>
    /// Whether the Blake3 package hashes <paramref name="length"/> bytes faster than
    /// <see cref="Blake3Hash"/> on this CPU (or ours failed its check at start).
    /// </summary>
    internal static bool PackageIsFaster(int length) => !OursAgrees || PackageIsFaster(length, Blake3Hash.Best);

    /// <summary>
    /// The rule as measured (bench <c>integrity --sizes</c>, docs/performance.md): with AVX-512,
    /// ours except for whole groups of 8 KiB from 16 KiB up; with AVX2, ours from 2 KiB up; with SSE only (a CPU without
    /// AVX2, or the native AOT build, which targets x64's baseline) the package, which then
    /// compresses 4 chunks side by side too and was faster at every size but 2 KiB (ours 0.62–0.95×:
    /// 1,267 bytes 3.7 µs against 2.6), and on a CPU where ours has no vector code.
    /// </summary>
    /// <remarks>
    /// With AVX2 but not AVX-512 (DOTNET_EnableAVX512=0 on this CPU, so the package lost its
    /// AVX-512 path too; two runs, load 11–15): ours was faster from 2 KiB up, 64 KiB chunks
    /// included (65,553 bytes 23.5 and 28.9 µs against 32.6 and 30.0), and slower below (1,041 bytes
    /// 2.7 µs against 2.2, 1,267 bytes 2.9 against 2.6).
    /// </remarks>
    internal static bool PackageIsFaster(int length, Blake3Kernels kernels)
    {
        int chunks = length / Blake3Hash.ChunkLength;
        return kernels switch
        {
            Blake3Kernels.Avx512 => chunks >= 16 && chunks % 8 == 0,
            Blake3Kernels.Avx2 => chunks < 2,
            _ => true,
        };
    }

    /// <summary>
    /// Why ours failed its check at start (every node logs it as a warning, NodeLog 1608), or null
    /// if it passed or was not tried (a CPU where ours has no AVX2, so the package hashes everything).
    /// </summary>
    internal static string? CheckFailure { get; } = Blake3Hash.Best >= Blake3Kernels.Avx2 ? Check(Blake3Hash.Hash) : null;

    /// <summary>
    /// Ours is used only on a CPU where it has AVX2 or AVX-512 code, and only if it gave the package's hash
    /// at start for sizes that take each of its paths there (one chunk; a short last chunk beside
    /// full ones, or alone; 4, 8 and 16 chunks side by side; a tree of 18 chunks): a hash that is
    /// wrong on some CPU or build would make every peer refuse every chunk.
    /// </summary>
    private static readonly bool OursAgrees = Blake3Hash.Best >= Blake3Kernels.Avx2 && CheckFailure is null;

    internal delegate void HashFunction(ReadOnlySpan<byte> input, Span<byte> output);

    /// <summary>
    /// Null if <paramref name="ours"/> gives the package's hash for each size of the check, else
    /// what went wrong; an exception it throws is a failure too (not the type's initialiser failing,
    /// which would make every chunk hash throw).
    /// </summary>
    internal static string? Check(HashFunction ours)
    {
        byte[] input = new byte[17 * 1024 + 17];
        for (int i = 0; i < input.Length; i++) input[i] = (byte)(i % 251);
        byte[] hash = new byte[Protocol.HashLength];
        byte[] package = new byte[Protocol.HashLength];
        foreach (int length in (ReadOnlySpan<int>)[0, 1000, 1041, 4113, 6161, 9233, 17425])
        {
            Blake3.Hasher.Hash(input.AsSpan(0, length), package);
            try
            {
                ours(input.AsSpan(0, length), hash);
            }
            catch (Exception e)
            {
                return $"{Blake3Hash.Best} kernels, {length} bytes: {e.GetType().Name}: {e.Message}";
            }
            if (!hash.AsSpan().SequenceEqual(package))
                return $"{Blake3Hash.Best} kernels, {length} bytes: {Convert.ToHexStringLower(hash)}, the package's {Convert.ToHexStringLower(package)}";
        }
        return null;
    }

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

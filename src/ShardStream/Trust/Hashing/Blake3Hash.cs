using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ShardStream.Trust.Hashing;

/// <summary>Which compression code <see cref="Blake3Hash"/> runs; each level uses those below it too.</summary>
internal enum Blake3Kernels
{
    /// <summary>Scalar code only: any CPU, either byte order.</summary>
    Portable,

    /// <summary>x86 SSSE3: one block in 128-bit rows, and up to 4 chunks side by side; rotations by shifts and byte shuffles.</summary>
    Sse,

    /// <summary>x86 AVX2: as <see cref="Sse"/>, and up to 8 chunks side by side in 256-bit vectors.</summary>
    Avx2,

    /// <summary>x86 AVX-512 F and VL: rotations in one instruction, the message schedule by one permutation, and up to 16 chunks side by side.</summary>
    Avx512,
}

/// <summary>
/// BLAKE3 (the unkeyed hash, 32 bytes of output), written from the specification ("BLAKE3: one
/// function, fast everywhere", O'Connor, Aumasson, Neves, Wilcox-O'Hearn) for the sizes a stream's
/// chunks have. The input is cut into 1 KiB chunks, each chunk's 64-byte blocks are compressed in a
/// chain into the chunk's chaining value, and the chaining values are merged in pairs by parent
/// nodes into a left-complete binary tree whose root gives the hash.
/// </summary>
/// <remarks>
/// Why not the Blake3 package alone: its wide path (16 chunks side by side) applies only to whole
/// 16 KiB groups, and below that it compresses one block at a time, ~135 ns each, so a 4 KiB chunk
/// cost 1.5 ns/B against 0.22 from 16 KiB up (docs/performance.md). Here the full chunks of any
/// input are compressed side by side, one chunk per vector lane in the narrowest vector that holds
/// them (<see cref="Blake3Lanes{TV, TOps}"/>), each level of parent nodes likewise, and a lone chunk
/// or parent by one compression with the state's rows in 128-bit vectors
/// (<see cref="Blake3Compression"/>).
/// </remarks>
internal static unsafe class Blake3Hash
{
    public const int OutputLength = 32;
    internal const int ChunkLength = 1024;
    internal const int BlockLength = 64;

    // Domain flags (specification, table 3); the keyed and derive-key flags are not used here.
    internal const uint ChunkStart = 1;
    internal const uint ChunkEnd = 2;
    internal const uint Parent = 4;
    internal const uint Root = 8;

    // The initialisation vector, SHA-256's (specification, table 1).
    internal const uint IV0 = 0x6A09E667, IV1 = 0xBB67AE85, IV2 = 0x3C6EF372, IV3 = 0xA54FF53A;
    internal const uint IV4 = 0x510E527F, IV5 = 0x9B05688C, IV6 = 0x1F83D9AB, IV7 = 0x5BE0CD19;

    /// <summary>Chaining values kept on the stack up to this many chunks (a 64 KiB chunk body has 65).</summary>
    private const int StackChunks = 128;

    /// <summary>The fastest kernels this CPU runs.</summary>
    public static Blake3Kernels Best { get; } = Detect();

    public static bool IsSupported(Blake3Kernels kernels) => kernels <= Best;

    /// <summary>BLAKE3 of <paramref name="input"/> into the first 32 bytes of <paramref name="output"/>.</summary>
    public static void Hash(ReadOnlySpan<byte> input, Span<byte> output) => Hash(input, output, Best);

    /// <summary>As <see cref="Hash(ReadOnlySpan{byte}, Span{byte})"/> with the given kernels (tests run each one).</summary>
    /// <remarks>
    /// Compiled fully optimised at once (as the kernels are): at the JIT's first tier the kernels'
    /// vector helpers are calls, tens of times slower, and a node hashes its first chunks there.
    /// </remarks>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Hash(ReadOnlySpan<byte> input, Span<byte> output, Blake3Kernels kernels)
    {
        if (output.Length < OutputLength) throw new ArgumentException($"the output needs {OutputLength} bytes", nameof(output));
        if (!IsSupported(kernels)) throw new PlatformNotSupportedException($"this CPU does not run the {kernels} kernels");
        fixed (byte* data = input)
        fixed (byte* hash = output)
        {
            if (input.Length <= ChunkLength)
            {
                ChunkValue(kernels, data, input.Length, 0, Root, hash);
                return;
            }
            int chunks = (input.Length + ChunkLength - 1) / ChunkLength;
            int lastLength = input.Length - (chunks - 1) * ChunkLength;
            byte[]? rented = null;
            Span<byte> values = chunks <= StackChunks
                ? stackalloc byte[StackChunks * OutputLength]
                : (rented = ArrayPool<byte>.Shared.Rent(chunks * OutputLength));
            fixed (byte* cv = values)
            {
                ChunkValues(kernels, data, chunks, lastLength, cv);
                MergeToRoot(kernels, cv, chunks, hash);
            }
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private static Blake3Kernels Detect()
    {
        if (!BitConverter.IsLittleEndian) return Blake3Kernels.Portable;
        if (Avx512F.IsSupported && Avx512F.VL.IsSupported) return Blake3Kernels.Avx512;
        if (Avx2.IsSupported) return Blake3Kernels.Avx2;
        if (Ssse3.IsSupported) return Blake3Kernels.Sse;
        return Blake3Kernels.Portable;
    }

    /// <summary>The chaining values of <paramref name="count"/> chunks, all full but the last (<paramref name="lastLength"/> bytes), into 32 bytes each at <paramref name="cv"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChunkValues(Blake3Kernels kernels, byte* data, int count, int lastLength, byte* cv)
    {
        for (int done = 0; done < count;)
        {
            int n = Side(kernels, count - done, data + (long)done * ChunkLength, ChunkLength, lastLength, (ulong)done, perLaneCounter: true, 0, ChunkStart, ChunkEnd, cv + done * OutputLength);
            if (n == 0)
            {
                ChunkValue(kernels, data + (long)done * ChunkLength, done == count - 1 ? lastLength : ChunkLength, (ulong)done, 0, cv + done * OutputLength);
                n = 1;
            }
            done += n;
        }
    }

    /// <summary>
    /// Merges <paramref name="count"/> ≥ 2 chaining values at <paramref name="cv"/> level by level,
    /// pairs left to right with an odd last one carried up as it is, which gives the specification's
    /// tree (the left subtree holds the largest power of 2 of chunks that leaves at least one to the right).
    /// Each level is written over the start of the one below.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MergeToRoot(Blake3Kernels kernels, byte* cv, int count, byte* hash)
    {
        while (count > 2)
        {
            int pairs = count / 2;
            for (int done = 0; done < pairs;)
            {
                // Parent i reads bytes [64i, 64i + 64) and writes [32i, 32i + 32): a batch reads all of its blocks before it writes.
                int n = Side(kernels, pairs - done, cv + done * BlockLength, BlockLength, BlockLength, 0, perLaneCounter: false, Parent, 0, 0, cv + done * OutputLength);
                if (n == 0)
                {
                    ParentValue(kernels, cv + done * BlockLength, Parent, cv + done * OutputLength);
                    n = 1;
                }
                done += n;
            }
            if ((count & 1) != 0) Buffer.MemoryCopy(cv + (count - 1) * OutputLength, cv + pairs * OutputLength, OutputLength, OutputLength);
            count = pairs + (count & 1);
        }
        ParentValue(kernels, cv, Parent | Root, hash);
    }

    /// <summary>
    /// Compresses up to <paramref name="available"/> ≥ 2 inputs side by side in one vector pass (the
    /// narrowest that holds them, at most 16), the last of them <paramref name="lastLength"/> bytes
    /// long, and returns how many; 0 for one input, or when the kernels have no vectors.
    /// </summary>
    private static int Side(Blake3Kernels kernels, int available, byte* input, int stride, int lastLength, ulong counter, bool perLaneCounter,
        uint always, uint start, uint end, byte* output)
    {
        if (available < 2 || kernels == Blake3Kernels.Portable) return 0;
        // The width is chosen for the full inputs: a short last one joins them if there is room,
        // else it is compressed alone (a 16-lane step costs ~1.3 times an 8-lane one here).
        int full = lastLength == stride ? available : available - 1;
        int width = kernels switch
        {
            Blake3Kernels.Avx512 => full > 8 ? 16 : full > 4 ? 8 : 4,
            Blake3Kernels.Avx2 => full > 4 ? 8 : 4,
            _ => 4,
        };
        int lanes = Math.Min(available, width);
        int last = lanes == available ? lastLength : stride;
        return (kernels, width) switch
        {
            (Blake3Kernels.Avx512, 16) => Blake3Lanes<Vector512<uint>, Lanes512>.Compress(input, stride, lanes, last, counter, perLaneCounter, always, start, end, output),
            (Blake3Kernels.Avx512, 8) => Blake3Lanes<Vector256<uint>, Lanes256Vl>.Compress(input, stride, lanes, last, counter, perLaneCounter, always, start, end, output),
            (Blake3Kernels.Avx512, _) => Blake3Lanes<Vector128<uint>, Lanes128Vl>.Compress(input, stride, lanes, last, counter, perLaneCounter, always, start, end, output),
            (Blake3Kernels.Avx2, 8) => Blake3Lanes<Vector256<uint>, Lanes256>.Compress(input, stride, lanes, last, counter, perLaneCounter, always, start, end, output),
            _ => Blake3Lanes<Vector128<uint>, Lanes128>.Compress(input, stride, lanes, last, counter, perLaneCounter, always, start, end, output),
        };
    }

    /// <summary>The chaining value of one chunk of 0–1024 bytes (with <see cref="Root"/>: the hash of an input of one chunk).</summary>
    private static void ChunkValue(Blake3Kernels kernels, byte* chunk, int length, ulong counter, uint root, byte* output)
    {
        switch (kernels)
        {
            case Blake3Kernels.Avx512:
                Blake3Compression.ChunkRows<Lanes128Vl>(chunk, length, counter, root, output);
                break;
            case Blake3Kernels.Avx2:
            case Blake3Kernels.Sse:
                Blake3Compression.ChunkRows<Lanes128>(chunk, length, counter, root, output);
                break;
            default:
                Blake3Compression.ChunkScalar(chunk, length, counter, root, output);
                break;
        }
    }

    /// <summary>The chaining value of the parent of the two 32-byte values at <paramref name="children"/>.</summary>
    private static void ParentValue(Blake3Kernels kernels, byte* children, uint flags, byte* output)
    {
        switch (kernels)
        {
            case Blake3Kernels.Avx512:
                Blake3Compression.ParentRows<Lanes128Vl>(children, flags, output);
                break;
            case Blake3Kernels.Avx2:
            case Blake3Kernels.Sse:
                Blake3Compression.ParentRows<Lanes128>(children, flags, output);
                break;
            default:
                Blake3Compression.ParentScalar(children, flags, output);
                break;
        }
    }
}

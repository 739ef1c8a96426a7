using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static ShardStream.Trust.Hashing.Blake3Hash;

namespace ShardStream.Trust.Hashing;

/// <summary>
/// One BLAKE3 compression at a time: the chain of blocks of a lone chunk, and a lone parent node.
/// Two forms: scalar (any CPU), and the state's four rows of four words in 128-bit vectors, where
/// the column step works on whole rows and the diagonal step on rows turned by 1, 2 and 3 words.
/// </summary>
internal static unsafe class Blake3Compression
{
    /// <summary>
    /// The message word order of each of the 7 rounds: round r + 1 takes round r's words through the
    /// specification's permutation (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8).
    /// </summary>
    internal static ReadOnlySpan<byte> Schedule =>
    [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8,
        3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1,
        10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6,
        12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4,
        9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7,
        11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13,
    ];

    /// <summary>
    /// For the row form, each round's words in the order the rows take them: the column step's
    /// first words (message words 0, 2, 4, 6 of the round), its second words (1, 3, 5, 7), then the
    /// diagonal step's (8, 10, 12, 14 and 9, 11, 13, 15).
    /// </summary>
    /// <remarks>In native memory, so the loops read them with no pinning (a pinned array made the JIT keep the rows in memory).</remarks>
    private static readonly uint* RowOrder = BuildRowOrder();

    /// <summary><see cref="RowOrder"/> as one permutation vector per round.</summary>
    private static readonly Vector512<uint>* RowPermutations = BuildRowPermutations();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ChunkScalar(byte* chunk, int length, ulong counter, uint root, byte* output)
    {
        Span<uint> cv = [IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7];
        byte* padded = stackalloc byte[BlockLength];
        int blocks = Math.Max(1, (length + BlockLength - 1) / BlockLength);
        for (int b = 0; b < blocks; b++)
        {
            byte* block = Block(chunk, length, b, blocks, padded, out uint blockLength, out uint flags);
            CompressScalar(cv, block, counter, blockLength, flags | (b == blocks - 1 ? root : 0));
        }
        for (int i = 0; i < 8; i++) BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(output + 4 * i, 4), cv[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ParentScalar(byte* children, uint flags, byte* output)
    {
        Span<uint> cv = [IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7];
        CompressScalar(cv, children, 0, BlockLength, flags);
        for (int i = 0; i < 8; i++) BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(output + 4 * i, 4), cv[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ChunkRows<TOps>(byte* chunk, int length, ulong counter, uint root, byte* output)
        where TOps : struct, ILaneOps<Vector128<uint>>
    {
        var cv = Vector256.Create(IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7);
        byte* padded = stackalloc byte[BlockLength];
        int blocks = Math.Max(1, (length + BlockLength - 1) / BlockLength);
        for (int b = 0; b < blocks; b++)
        {
            byte* block = Block(chunk, length, b, blocks, padded, out uint blockLength, out uint flags);
            cv = CompressRows<TOps>(cv, block, counter, blockLength, flags | (b == blocks - 1 ? root : 0));
        }
        Vector256.Store(cv, (uint*)output);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ParentRows<TOps>(byte* children, uint flags, byte* output)
        where TOps : struct, ILaneOps<Vector128<uint>>
    {
        var cv = CompressRows<TOps>(Vector256.Create(IV0, IV1, IV2, IV3, IV4, IV5, IV6, IV7), children, 0, BlockLength, flags);
        Vector256.Store(cv, (uint*)output);
    }

    /// <summary>Block <paramref name="b"/> of a chunk of <paramref name="length"/> bytes: in place when full, else copied and padded with zeros.</summary>
    private static byte* Block(byte* chunk, int length, int b, int blocks, byte* padded, out uint blockLength, out uint flags)
    {
        int offset = b * BlockLength;
        int bytes = Math.Min(BlockLength, length - offset);
        blockLength = (uint)bytes;
        flags = (b == 0 ? ChunkStart : 0) | (b == blocks - 1 ? ChunkEnd : 0);
        if (bytes == BlockLength) return chunk + offset;
        new Span<byte>(padded, BlockLength).Clear();
        if (bytes > 0) Buffer.MemoryCopy(chunk + offset, padded, BlockLength, bytes);
        return padded;
    }

    /// <summary>The compression function on 8 chaining words in place (only the first half of the output: a chaining value, or a 32-byte hash).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CompressScalar(Span<uint> cv, byte* block, ulong counter, uint blockLength, uint flags)
    {
        Span<uint> m = stackalloc uint[16];
        for (int i = 0; i < 16; i++) m[i] = BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(block + 4 * i, 4));
        uint v0 = cv[0], v1 = cv[1], v2 = cv[2], v3 = cv[3], v4 = cv[4], v5 = cv[5], v6 = cv[6], v7 = cv[7];
        uint v8 = IV0, v9 = IV1, v10 = IV2, v11 = IV3;
        uint v12 = (uint)counter, v13 = (uint)(counter >> 32), v14 = blockLength, v15 = flags;
        ReadOnlySpan<byte> schedule = Schedule;
        for (int r = 0; r < 7; r++)
        {
            ReadOnlySpan<byte> s = schedule.Slice(16 * r, 16);
            G(ref v0, ref v4, ref v8, ref v12, m[s[0]], m[s[1]]);
            G(ref v1, ref v5, ref v9, ref v13, m[s[2]], m[s[3]]);
            G(ref v2, ref v6, ref v10, ref v14, m[s[4]], m[s[5]]);
            G(ref v3, ref v7, ref v11, ref v15, m[s[6]], m[s[7]]);
            G(ref v0, ref v5, ref v10, ref v15, m[s[8]], m[s[9]]);
            G(ref v1, ref v6, ref v11, ref v12, m[s[10]], m[s[11]]);
            G(ref v2, ref v7, ref v8, ref v13, m[s[12]], m[s[13]]);
            G(ref v3, ref v4, ref v9, ref v14, m[s[14]], m[s[15]]);
        }
        cv[0] = v0 ^ v8;
        cv[1] = v1 ^ v9;
        cv[2] = v2 ^ v10;
        cv[3] = v3 ^ v11;
        cv[4] = v4 ^ v12;
        cv[5] = v5 ^ v13;
        cv[6] = v6 ^ v14;
        cv[7] = v7 ^ v15;
    }

    /// <summary>The mixing function G (specification, §2.2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void G(ref uint a, ref uint b, ref uint c, ref uint d, uint mx, uint my)
    {
        a = a + b + mx;
        d = BitOperations.RotateRight(d ^ a, 16);
        c += d;
        b = BitOperations.RotateRight(b ^ c, 12);
        a = a + b + my;
        d = BitOperations.RotateRight(d ^ a, 8);
        c += d;
        b = BitOperations.RotateRight(b ^ c, 7);
    }

    /// <summary>
    /// The compression function with the state's rows in vectors (chaining words 0–3 and 4–7 in the
    /// halves of <paramref name="cv"/>; returns the first half of the output likewise).
    /// </summary>
    /// <remarks>
    /// One compression is a chain of dependent steps, so what counts is its latency: the 7 rounds
    /// are written out (as a loop, the JIT kept the rows in memory from one round to the next), and
    /// the message word is added to <c>a</c> before <c>b</c>, which is the last to be ready.
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector256<uint> CompressRows<TOps>(Vector256<uint> cv, byte* block, ulong counter, uint blockLength, uint flags)
        where TOps : struct, ILaneOps<Vector128<uint>>
    {
        var a = cv.GetLower();
        var b = cv.GetUpper();
        var c = Vector128.Create(IV0, IV1, IV2, IV3);
        var d = Vector128.Create((uint)counter, (uint)(counter >> 32), blockLength, flags);
        var words = TOps.HasAvx512 ? Vector512.Load((uint*)block) : default;
        Round<TOps>(ref a, ref b, ref c, ref d, words, (uint*)block, 0);
        Round<TOps>(ref a, ref b, ref c, ref d, words, (uint*)block, 1);
        Round<TOps>(ref a, ref b, ref c, ref d, words, (uint*)block, 2);
        Round<TOps>(ref a, ref b, ref c, ref d, words, (uint*)block, 3);
        Round<TOps>(ref a, ref b, ref c, ref d, words, (uint*)block, 4);
        Round<TOps>(ref a, ref b, ref c, ref d, words, (uint*)block, 5);
        Round<TOps>(ref a, ref b, ref c, ref d, words, (uint*)block, 6);
        return Vector256.Create(a ^ c, b ^ d);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Round<TOps>(ref Vector128<uint> a, ref Vector128<uint> b, ref Vector128<uint> c, ref Vector128<uint> d, Vector512<uint> words, uint* w, int r)
        where TOps : struct, ILaneOps<Vector128<uint>>
    {
        Vector128<uint> columnX, columnY, diagonalX, diagonalY;
        if (TOps.HasAvx512)
        {
            // The whole block in one register; the round's four message vectors by one permutation of it.
            var m = Avx512F.PermuteVar16x32(words, RowPermutations[r]);
            columnX = m.GetLower().GetLower();
            columnY = Avx512F.ExtractVector128(m, 1);
            diagonalX = Avx512F.ExtractVector128(m, 2);
            diagonalY = Avx512F.ExtractVector128(m, 3);
        }
        else
        {
            uint* o = RowOrder + 16 * r;
            columnX = Vector128.Create(w[o[0]], w[o[1]], w[o[2]], w[o[3]]);
            columnY = Vector128.Create(w[o[4]], w[o[5]], w[o[6]], w[o[7]]);
            diagonalX = Vector128.Create(w[o[8]], w[o[9]], w[o[10]], w[o[11]]);
            diagonalY = Vector128.Create(w[o[12]], w[o[13]], w[o[14]], w[o[15]]);
        }
        // G on the four columns.
        a = (a + columnX) + b;
        d = TOps.RotateRight16(d ^ a);
        c += d;
        b = TOps.RotateRight12(b ^ c);
        a = (a + columnY) + b;
        d = TOps.RotateRight8(d ^ a);
        c += d;
        b = TOps.RotateRight7(b ^ c);
        // Rows 1, 2, 3 turned left by 1, 2, 3 words: the columns are now the diagonals (0,5,10,15), (1,6,11,12), (2,7,8,13), (3,4,9,14).
        b = Sse2.Shuffle(b, 0b00_11_10_01);
        c = Sse2.Shuffle(c, 0b01_00_11_10);
        d = Sse2.Shuffle(d, 0b10_01_00_11);
        a = (a + diagonalX) + b;
        d = TOps.RotateRight16(d ^ a);
        c += d;
        b = TOps.RotateRight12(b ^ c);
        a = (a + diagonalY) + b;
        d = TOps.RotateRight8(d ^ a);
        c += d;
        b = TOps.RotateRight7(b ^ c);
        b = Sse2.Shuffle(b, 0b10_01_00_11);
        c = Sse2.Shuffle(c, 0b01_00_11_10);
        d = Sse2.Shuffle(d, 0b00_11_10_01);
    }

    private static uint* BuildRowOrder()
    {
        var order = (uint*)NativeMemory.AlignedAlloc(7 * 16 * sizeof(uint), 64);
        ReadOnlySpan<byte> schedule = Schedule;
        for (int r = 0; r < 7; r++)
        {
            for (int i = 0; i < 4; i++)
            {
                order[16 * r + i] = schedule[16 * r + 2 * i];
                order[16 * r + 4 + i] = schedule[16 * r + 2 * i + 1];
                order[16 * r + 8 + i] = schedule[16 * r + 8 + 2 * i];
                order[16 * r + 12 + i] = schedule[16 * r + 8 + 2 * i + 1];
            }
        }
        return order;
    }

    private static Vector512<uint>* BuildRowPermutations()
    {
        var permutations = (Vector512<uint>*)NativeMemory.AlignedAlloc(7 * 64, 64);
        for (int r = 0; r < 7; r++) permutations[r] = Vector512.Load(RowOrder + 16 * r);
        return permutations;
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ShardStream.Trust.Hashing;

/// <summary>
/// What the BLAKE3 kernels need of a vector of 32-bit words: arithmetic, the four rotations of G,
/// and moving 64-byte blocks in and 32-byte chaining values out, one input per lane. One struct per
/// vector width and instruction set, so that each kernel is compiled for it (and a test can run a
/// narrower one on a wider CPU).
/// </summary>
internal unsafe interface ILaneOps<TV>
    where TV : unmanaged
{
    /// <summary>Lanes (32-bit words) per vector.</summary>
    static abstract int Width { get; }

    /// <summary>Whether AVX-512 F and VL may be used beside this width's own instructions.</summary>
    static abstract bool HasAvx512 { get; }

    static abstract TV Add(TV a, TV b);

    static abstract TV Xor(TV a, TV b);

    static abstract TV RotateRight16(TV x);

    static abstract TV RotateRight12(TV x);

    static abstract TV RotateRight8(TV x);

    static abstract TV RotateRight7(TV x);

    static abstract TV Broadcast(uint x);

    /// <summary><c>Width</c> words from <paramref name="words"/>.</summary>
    static abstract TV Load(uint* words);

    /// <summary>Word i of the block at <paramref name="sources"/>[j] + <paramref name="offset"/> into lane j of <paramref name="m"/>[i], for i &lt; 16.</summary>
    static abstract void LoadTransposed(byte** sources, int offset, TV* m);

    /// <summary>Lane j of <paramref name="values"/>[0..8] as 8 words at <paramref name="output"/> + 32·j, for every lane.</summary>
    static abstract void StoreTransposed(TV* values, byte* output);
}

/// <summary>4 lanes of SSE2/SSSE3: rotations by 16 and 8 as byte shuffles, by 12 and 7 as two shifts.</summary>
internal readonly unsafe struct Lanes128 : ILaneOps<Vector128<uint>>
{
    public static int Width => 4;

    public static bool HasAvx512 => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Add(Vector128<uint> a, Vector128<uint> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Xor(Vector128<uint> a, Vector128<uint> b) => a ^ b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> RotateRight16(Vector128<uint> x) =>
        Ssse3.Shuffle(x.AsByte(), Vector128.Create((byte)2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)).AsUInt32();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> RotateRight12(Vector128<uint> x) => Sse2.ShiftRightLogical(x, 12) | Sse2.ShiftLeftLogical(x, 20);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> RotateRight8(Vector128<uint> x) =>
        Ssse3.Shuffle(x.AsByte(), Vector128.Create((byte)1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12)).AsUInt32();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> RotateRight7(Vector128<uint> x) => Sse2.ShiftRightLogical(x, 7) | Sse2.ShiftLeftLogical(x, 25);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Broadcast(uint x) => Vector128.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Load(uint* words) => Vector128.Load(words);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void LoadTransposed(byte** sources, int offset, Vector128<uint>* m)
    {
        byte* s0 = sources[0] + offset, s1 = sources[1] + offset, s2 = sources[2] + offset, s3 = sources[3] + offset;
        for (int q = 0; q < 4; q++)
        {
            Transpose(Vector128.Load((uint*)(s0 + 16 * q)), Vector128.Load((uint*)(s1 + 16 * q)), Vector128.Load((uint*)(s2 + 16 * q)), Vector128.Load((uint*)(s3 + 16 * q)),
                out m[4 * q], out m[4 * q + 1], out m[4 * q + 2], out m[4 * q + 3]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void StoreTransposed(Vector128<uint>* values, byte* output)
    {
        for (int h = 0; h < 2; h++)
        {
            Transpose(values[4 * h], values[4 * h + 1], values[4 * h + 2], values[4 * h + 3], out var l0, out var l1, out var l2, out var l3);
            Vector128.Store(l0, (uint*)(output + 16 * h));
            Vector128.Store(l1, (uint*)(output + 32 + 16 * h));
            Vector128.Store(l2, (uint*)(output + 64 + 16 * h));
            Vector128.Store(l3, (uint*)(output + 96 + 16 * h));
        }
    }

    /// <summary>A 4×4 transpose of words: out i holds word i of each of r0..r3.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose(Vector128<uint> r0, Vector128<uint> r1, Vector128<uint> r2, Vector128<uint> r3,
        out Vector128<uint> o0, out Vector128<uint> o1, out Vector128<uint> o2, out Vector128<uint> o3)
    {
        var t0 = Sse2.UnpackLow(r0, r1).AsUInt64(); // r0w0 r1w0 r0w1 r1w1
        var t1 = Sse2.UnpackLow(r2, r3).AsUInt64(); // r2w0 r3w0 r2w1 r3w1
        var t2 = Sse2.UnpackHigh(r0, r1).AsUInt64(); // r0w2 r1w2 r0w3 r1w3
        var t3 = Sse2.UnpackHigh(r2, r3).AsUInt64(); // r2w2 r3w2 r2w3 r3w3
        o0 = Sse2.UnpackLow(t0, t1).AsUInt32();
        o1 = Sse2.UnpackHigh(t0, t1).AsUInt32();
        o2 = Sse2.UnpackLow(t2, t3).AsUInt32();
        o3 = Sse2.UnpackHigh(t2, t3).AsUInt32();
    }
}

/// <summary>4 lanes, with AVX-512 VL's rotate instruction.</summary>
internal readonly unsafe struct Lanes128Vl : ILaneOps<Vector128<uint>>
{
    public static int Width => 4;

    public static bool HasAvx512 => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Add(Vector128<uint> a, Vector128<uint> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Xor(Vector128<uint> a, Vector128<uint> b) => a ^ b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> RotateRight16(Vector128<uint> x) => Avx512F.VL.RotateRight(x, 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> RotateRight12(Vector128<uint> x) => Avx512F.VL.RotateRight(x, 12);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> RotateRight8(Vector128<uint> x) => Avx512F.VL.RotateRight(x, 8);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> RotateRight7(Vector128<uint> x) => Avx512F.VL.RotateRight(x, 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Broadcast(uint x) => Vector128.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Load(uint* words) => Vector128.Load(words);

    public static void LoadTransposed(byte** sources, int offset, Vector128<uint>* m) => Lanes128.LoadTransposed(sources, offset, m);

    public static void StoreTransposed(Vector128<uint>* values, byte* output) => Lanes128.StoreTransposed(values, output);
}

/// <summary>8 lanes of AVX2: rotations by 16 and 8 as byte shuffles, by 12 and 7 as two shifts.</summary>
internal readonly unsafe struct Lanes256 : ILaneOps<Vector256<uint>>
{
    public static int Width => 8;

    public static bool HasAvx512 => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Add(Vector256<uint> a, Vector256<uint> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Xor(Vector256<uint> a, Vector256<uint> b) => a ^ b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> RotateRight16(Vector256<uint> x) =>
        Avx2.Shuffle(x.AsByte(), Vector256.Create((byte)2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)).AsUInt32();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> RotateRight12(Vector256<uint> x) => Avx2.ShiftRightLogical(x, 12) | Avx2.ShiftLeftLogical(x, 20);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> RotateRight8(Vector256<uint> x) =>
        Avx2.Shuffle(x.AsByte(), Vector256.Create((byte)1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12)).AsUInt32();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> RotateRight7(Vector256<uint> x) => Avx2.ShiftRightLogical(x, 7) | Avx2.ShiftLeftLogical(x, 25);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Broadcast(uint x) => Vector256.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Load(uint* words) => Vector256.Load(words);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void LoadTransposed(byte** sources, int offset, Vector256<uint>* m)
    {
        for (int h = 0; h < 2; h++)
        {
            int at = offset + 32 * h;
            Transpose(
                Vector256.Load((uint*)(sources[0] + at)), Vector256.Load((uint*)(sources[1] + at)),
                Vector256.Load((uint*)(sources[2] + at)), Vector256.Load((uint*)(sources[3] + at)),
                Vector256.Load((uint*)(sources[4] + at)), Vector256.Load((uint*)(sources[5] + at)),
                Vector256.Load((uint*)(sources[6] + at)), Vector256.Load((uint*)(sources[7] + at)),
                m + 8 * h);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void StoreTransposed(Vector256<uint>* values, byte* output)
    {
        Vector256<uint>* lanes = stackalloc Vector256<uint>[8];
        Transpose(values[0], values[1], values[2], values[3], values[4], values[5], values[6], values[7], lanes);
        for (int j = 0; j < 8; j++) Vector256.Store(lanes[j], (uint*)(output + 32 * j));
    }

    /// <summary>An 8×8 transpose of words: <paramref name="o"/>[i] holds word i of each of r0..r7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose(Vector256<uint> r0, Vector256<uint> r1, Vector256<uint> r2, Vector256<uint> r3,
        Vector256<uint> r4, Vector256<uint> r5, Vector256<uint> r6, Vector256<uint> r7, Vector256<uint>* o)
    {
        // Within each 128-bit half (words 0–3, then 4–7): pairs of rows interleaved by words, then by word pairs.
        var t0 = Avx2.UnpackLow(r0, r1).AsUInt64();
        var t1 = Avx2.UnpackHigh(r0, r1).AsUInt64();
        var t2 = Avx2.UnpackLow(r2, r3).AsUInt64();
        var t3 = Avx2.UnpackHigh(r2, r3).AsUInt64();
        var t4 = Avx2.UnpackLow(r4, r5).AsUInt64();
        var t5 = Avx2.UnpackHigh(r4, r5).AsUInt64();
        var t6 = Avx2.UnpackLow(r6, r7).AsUInt64();
        var t7 = Avx2.UnpackHigh(r6, r7).AsUInt64();
        // u_k: word k (low half) and word 4 + k (high half) of rows 0–3; w_k the same of rows 4–7.
        var u0 = Avx2.UnpackLow(t0, t2).AsUInt32();
        var u1 = Avx2.UnpackHigh(t0, t2).AsUInt32();
        var u2 = Avx2.UnpackLow(t1, t3).AsUInt32();
        var u3 = Avx2.UnpackHigh(t1, t3).AsUInt32();
        var w0 = Avx2.UnpackLow(t4, t6).AsUInt32();
        var w1 = Avx2.UnpackHigh(t4, t6).AsUInt32();
        var w2 = Avx2.UnpackLow(t5, t7).AsUInt32();
        var w3 = Avx2.UnpackHigh(t5, t7).AsUInt32();
        o[0] = Avx2.Permute2x128(u0, w0, 0x20);
        o[1] = Avx2.Permute2x128(u1, w1, 0x20);
        o[2] = Avx2.Permute2x128(u2, w2, 0x20);
        o[3] = Avx2.Permute2x128(u3, w3, 0x20);
        o[4] = Avx2.Permute2x128(u0, w0, 0x31);
        o[5] = Avx2.Permute2x128(u1, w1, 0x31);
        o[6] = Avx2.Permute2x128(u2, w2, 0x31);
        o[7] = Avx2.Permute2x128(u3, w3, 0x31);
    }
}

/// <summary>8 lanes, with AVX-512 VL's rotate instruction.</summary>
internal readonly unsafe struct Lanes256Vl : ILaneOps<Vector256<uint>>
{
    public static int Width => 8;

    public static bool HasAvx512 => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Add(Vector256<uint> a, Vector256<uint> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Xor(Vector256<uint> a, Vector256<uint> b) => a ^ b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> RotateRight16(Vector256<uint> x) => Avx512F.VL.RotateRight(x, 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> RotateRight12(Vector256<uint> x) => Avx512F.VL.RotateRight(x, 12);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> RotateRight8(Vector256<uint> x) => Avx512F.VL.RotateRight(x, 8);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> RotateRight7(Vector256<uint> x) => Avx512F.VL.RotateRight(x, 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Broadcast(uint x) => Vector256.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Load(uint* words) => Vector256.Load(words);

    public static void LoadTransposed(byte** sources, int offset, Vector256<uint>* m) => Lanes256.LoadTransposed(sources, offset, m);

    public static void StoreTransposed(Vector256<uint>* values, byte* output) => Lanes256.StoreTransposed(values, output);
}

/// <summary>16 lanes of AVX-512 F.</summary>
internal readonly unsafe struct Lanes512 : ILaneOps<Vector512<uint>>
{
    public static int Width => 16;

    public static bool HasAvx512 => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> Add(Vector512<uint> a, Vector512<uint> b) => a + b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> Xor(Vector512<uint> a, Vector512<uint> b) => a ^ b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> RotateRight16(Vector512<uint> x) => Avx512F.RotateRight(x, 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> RotateRight12(Vector512<uint> x) => Avx512F.RotateRight(x, 12);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> RotateRight8(Vector512<uint> x) => Avx512F.RotateRight(x, 8);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> RotateRight7(Vector512<uint> x) => Avx512F.RotateRight(x, 7);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> Broadcast(uint x) => Vector512.Create(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> Load(uint* words) => Vector512.Load(words);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void LoadTransposed(byte** sources, int offset, Vector512<uint>* m)
    {
        // Rows j, j + 1 interleaved by words, then by word pairs, within each 128-bit quarter:
        // v[4g + i] holds, in quarter q, word 4q + i of rows 4g .. 4g + 3.
        Vector512<uint>* v = stackalloc Vector512<uint>[16];
        for (int g = 0; g < 4; g++)
        {
            var r0 = Vector512.Load((uint*)(sources[4 * g] + offset));
            var r1 = Vector512.Load((uint*)(sources[4 * g + 1] + offset));
            var r2 = Vector512.Load((uint*)(sources[4 * g + 2] + offset));
            var r3 = Vector512.Load((uint*)(sources[4 * g + 3] + offset));
            var t0 = Avx512F.UnpackLow(r0, r1).AsUInt64();
            var t1 = Avx512F.UnpackHigh(r0, r1).AsUInt64();
            var t2 = Avx512F.UnpackLow(r2, r3).AsUInt64();
            var t3 = Avx512F.UnpackHigh(r2, r3).AsUInt64();
            v[4 * g] = Avx512F.UnpackLow(t0, t2).AsUInt32();
            v[4 * g + 1] = Avx512F.UnpackHigh(t0, t2).AsUInt32();
            v[4 * g + 2] = Avx512F.UnpackLow(t1, t3).AsUInt32();
            v[4 * g + 3] = Avx512F.UnpackHigh(t1, t3).AsUInt32();
        }
        // A 4×4 transpose of 128-bit quarters: word 4q + i of all rows comes from quarter q of v[i], v[4 + i], v[8 + i], v[12 + i].
        for (int i = 0; i < 4; i++)
        {
            var a = Avx512F.Shuffle4x128(v[i], v[4 + i], 0x44); // v[i].q0 v[i].q1 v[4+i].q0 v[4+i].q1
            var b = Avx512F.Shuffle4x128(v[i], v[4 + i], 0xEE); // v[i].q2 v[i].q3 v[4+i].q2 v[4+i].q3
            var c = Avx512F.Shuffle4x128(v[8 + i], v[12 + i], 0x44);
            var d = Avx512F.Shuffle4x128(v[8 + i], v[12 + i], 0xEE);
            m[i] = Avx512F.Shuffle4x128(a, c, 0x88);
            m[4 + i] = Avx512F.Shuffle4x128(a, c, 0xDD);
            m[8 + i] = Avx512F.Shuffle4x128(b, d, 0x88);
            m[12 + i] = Avx512F.Shuffle4x128(b, d, 0xDD);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void StoreTransposed(Vector512<uint>* values, byte* output)
    {
        Vector256<uint>* lanes = stackalloc Vector256<uint>[8];
        for (int h = 0; h < 2; h++)
        {
            Lanes256.Transpose(
                Half(values[0], h), Half(values[1], h), Half(values[2], h), Half(values[3], h),
                Half(values[4], h), Half(values[5], h), Half(values[6], h), Half(values[7], h), lanes);
            for (int j = 0; j < 8; j++) Vector256.Store(lanes[j], (uint*)(output + 32 * (8 * h + j)));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Half(Vector512<uint> x, int h) => h == 0 ? x.GetLower() : x.GetUpper();
}

using System.Runtime.CompilerServices;
using static ShardStream.Trust.Hashing.Blake3Hash;

namespace ShardStream.Trust.Hashing;

/// <summary>
/// Several BLAKE3 inputs compressed side by side, one per vector lane: state word i of every input
/// in vector i (the transposed state), so G runs on all of them with the same instructions and no
/// shuffles between steps. Used for the chunks of an input and for each level of parent nodes.
/// The inputs lie at the same distance from each other and have the same length, but the last one
/// may be shorter (the input's last chunk).
/// </summary>
internal static unsafe class Blake3Lanes<TV, TOps>
    where TV : unmanaged
    where TOps : struct, ILaneOps<TV>
{
    /// <summary>
    /// Compresses <paramref name="lanes"/> ≤ <c>TOps.Width</c> inputs, input j at
    /// <paramref name="input"/> + j·<paramref name="stride"/> and <paramref name="stride"/> bytes
    /// long (a whole number of blocks), except the last, <paramref name="lastLength"/> bytes (1 to
    /// <paramref name="stride"/>); each from the IV, and writes their 32-byte chaining values one
    /// after the other at <paramref name="output"/>. Input j's counter is <paramref name="counter"/>
    /// (+ j when <paramref name="perLaneCounter"/>); every block has the flags
    /// <paramref name="always"/>, an input's first also <paramref name="start"/>, its last also
    /// <paramref name="end"/>. Returns <paramref name="lanes"/>.
    /// </summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int Compress(byte* input, int stride, int lanes, int lastLength, ulong counter, bool perLaneCounter, uint always, uint start, uint end, byte* output)
    {
        int width = TOps.Width;
        // Unused lanes read input 0's blocks, which must then be whole: a lone input must be full.
        if (lanes < 1 || lanes > width || lastLength < 1 || lastLength > stride || (lanes == 1 && lastLength < stride)) throw new ArgumentOutOfRangeException(nameof(lanes));
        int last = lanes - 1;
        int lastBlocks = (lastLength + BlockLength - 1) / BlockLength;
        int lastBytes = lastLength - (lastBlocks - 1) * BlockLength;
        int steps = lanes > 1 ? stride / BlockLength : lastBlocks;
        // Unused lanes repeat input 0, and the last input does once it has ended; their results are not kept.
        byte** sources = stackalloc byte*[width];
        uint* low = stackalloc uint[width];
        uint* high = stackalloc uint[width];
        for (int j = 0; j < width; j++)
        {
            sources[j] = input + (j < lanes ? (long)j * stride : 0);
            ulong c = counter + (perLaneCounter ? (ulong)j : 0);
            low[j] = (uint)c;
            high[j] = (uint)(c >> 32);
        }
        byte* lastInput = sources[last];
        byte* padded = stackalloc byte[BlockLength];
        if (lastBytes < BlockLength)
        {
            new Span<byte>(padded, BlockLength).Clear();
            Buffer.MemoryCopy(lastInput + (lastBlocks - 1) * BlockLength, padded, BlockLength, lastBytes);
        }
        byte* space = stackalloc byte[40 * sizeof(TV) + 64];
        TV* m = (TV*)(((nuint)space + 63) & ~(nuint)63);
        TV* next = m + 16;
        TV* values = m + 32;
        TV counterLow = TOps.Load(low), counterHigh = TOps.Load(high);
        TV cv0 = TOps.Broadcast(IV0), cv1 = TOps.Broadcast(IV1), cv2 = TOps.Broadcast(IV2), cv3 = TOps.Broadcast(IV3);
        TV cv4 = TOps.Broadcast(IV4), cv5 = TOps.Broadcast(IV5), cv6 = TOps.Broadcast(IV6), cv7 = TOps.Broadcast(IV7);
        uint* lengths = stackalloc uint[width];
        uint* laneFlags = stackalloc uint[width];
        byte* schedule = stackalloc byte[7 * 16];
        Blake3Compression.Schedule.CopyTo(new Span<byte>(schedule, 7 * 16));
        Load(sources, 0, last, lastBlocks, lastBytes, lastInput, padded, m);
        for (int b = 0; b < steps; b++)
        {
            // The next block's words are loaded and transposed now, to be ready when this one is done.
            if (b + 1 < steps) Load(sources, b + 1, last, lastBlocks, lastBytes, lastInput, padded, next);
            uint flags = always | (b == 0 ? start : 0) | (b == steps - 1 ? end : 0);
            TV v0 = cv0, v1 = cv1, v2 = cv2, v3 = cv3, v4 = cv4, v5 = cv5, v6 = cv6, v7 = cv7;
            TV v8 = TOps.Broadcast(IV0), v9 = TOps.Broadcast(IV1), v10 = TOps.Broadcast(IV2), v11 = TOps.Broadcast(IV3);
            TV v12 = counterLow, v13 = counterHigh, v14, v15;
            bool lastEnds = b == lastBlocks - 1;
            if (lastEnds && (lastBlocks < steps || lastBytes < BlockLength))
            {
                // The last input's last block: its own length and end flag.
                for (int j = 0; j < width; j++)
                {
                    lengths[j] = j == last ? (uint)lastBytes : BlockLength;
                    laneFlags[j] = j == last ? always | (b == 0 ? start : 0) | end : flags;
                }
                v14 = TOps.Load(lengths);
                v15 = TOps.Load(laneFlags);
            }
            else
            {
                v14 = TOps.Broadcast(BlockLength);
                v15 = TOps.Broadcast(flags);
            }
            // The 7 rounds, each with its message order (Blake3Compression.Schedule): columns, then diagonals.
            // A loop rather than 56 written-out calls of G, which made the method too big for the JIT to inline them.
            for (byte* s = schedule; s < schedule + 7 * 16; s += 16)
            {
                G(ref v0, ref v4, ref v8, ref v12, m[s[0]], m[s[1]]);
                G(ref v1, ref v5, ref v9, ref v13, m[s[2]], m[s[3]]);
                G(ref v2, ref v6, ref v10, ref v14, m[s[4]], m[s[5]]);
                G(ref v3, ref v7, ref v11, ref v15, m[s[6]], m[s[7]]);
                G(ref v0, ref v5, ref v10, ref v15, m[s[8]], m[s[9]]);
                G(ref v1, ref v6, ref v11, ref v12, m[s[10]], m[s[11]]);
                G(ref v2, ref v7, ref v8, ref v13, m[s[12]], m[s[13]]);
                G(ref v3, ref v4, ref v9, ref v14, m[s[14]], m[s[15]]);
            }
            cv0 = TOps.Xor(v0, v8);
            cv1 = TOps.Xor(v1, v9);
            cv2 = TOps.Xor(v2, v10);
            cv3 = TOps.Xor(v3, v11);
            cv4 = TOps.Xor(v4, v12);
            cv5 = TOps.Xor(v5, v13);
            cv6 = TOps.Xor(v6, v14);
            cv7 = TOps.Xor(v7, v15);
            TV* swap = m;
            m = next;
            next = swap;
            if (lastEnds && b < steps - 1)
            {
                // The last input has ended before the others: keep its chaining value now.
                StoreAll(values, cv0, cv1, cv2, cv3, cv4, cv5, cv6, cv7, width, lastValue: output + last * OutputLength, last);
            }
        }
        values[0] = cv0;
        values[1] = cv1;
        values[2] = cv2;
        values[3] = cv3;
        values[4] = cv4;
        values[5] = cv5;
        values[6] = cv6;
        values[7] = cv7;
        int kept = lastBlocks < steps ? last : lanes;
        if (kept == width)
        {
            TOps.StoreTransposed(values, output);
        }
        else
        {
            byte* all = stackalloc byte[width * OutputLength];
            TOps.StoreTransposed(values, all);
            Buffer.MemoryCopy(all, output, kept * OutputLength, kept * OutputLength);
        }
        return lanes;
    }

    /// <summary>Block <paramref name="b"/> of every lane, transposed into <paramref name="m"/>; the last input's blocks from its padded copy or, once it has ended, from input 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Load(byte** sources, int b, int last, int lastBlocks, int lastBytes, byte* lastInput, byte* padded, TV* m)
    {
        int offset = b * BlockLength;
        if (b < lastBlocks - 1 || (b == lastBlocks - 1 && lastBytes == BlockLength)) sources[last] = lastInput;
        else if (b == lastBlocks - 1) sources[last] = padded - offset;
        else sources[last] = sources[0];
        TOps.LoadTransposed(sources, offset, m);
    }

    /// <summary>The chaining value of lane <paramref name="lane"/> only, to <paramref name="lastValue"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void StoreAll(TV* values, TV cv0, TV cv1, TV cv2, TV cv3, TV cv4, TV cv5, TV cv6, TV cv7, int width, byte* lastValue, int lane)
    {
        values[0] = cv0;
        values[1] = cv1;
        values[2] = cv2;
        values[3] = cv3;
        values[4] = cv4;
        values[5] = cv5;
        values[6] = cv6;
        values[7] = cv7;
        byte* all = stackalloc byte[width * OutputLength];
        TOps.StoreTransposed(values, all);
        Buffer.MemoryCopy(all + lane * OutputLength, lastValue, OutputLength, OutputLength);
    }

    /// <summary>The mixing function G (specification, §2.2) on every lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void G(ref TV a, ref TV b, ref TV c, ref TV d, TV mx, TV my)
    {
        // The message word first: b is the last input to be ready.
        a = TOps.Add(TOps.Add(a, mx), b);
        d = TOps.RotateRight16(TOps.Xor(d, a));
        c = TOps.Add(c, d);
        b = TOps.RotateRight12(TOps.Xor(b, c));
        a = TOps.Add(TOps.Add(a, my), b);
        d = TOps.RotateRight8(TOps.Xor(d, a));
        c = TOps.Add(c, d);
        b = TOps.RotateRight7(TOps.Xor(b, c));
    }
}

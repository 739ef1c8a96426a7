using System.Collections.Concurrent;

namespace ShardStream.Streaming;

/// <summary>
/// Payload buffers for chunks, in four size classes (1, 4, 16 and 64 KiB). Unlike the shared
/// ArrayPool, it keeps what the replay window returns (up to a bound per class), and it allocates on
/// the pinned object heap: a window of tens of MiB that turns over every few seconds would otherwise
/// be copied from gen0 to gen2 by the GC again and again (measured: docs/performance.md).
/// </summary>
internal static class ChunkBufferPool
{
    private static readonly int[] Sizes = [1024, 4 * 1024, 16 * 1024, 64 * 1024];
    private const long MaxIdleBytesPerClass = 128L * 1024 * 1024;
    private static readonly ConcurrentStack<byte[]>[] Idle = Sizes.Select(_ => new ConcurrentStack<byte[]>()).ToArray();
    private static readonly int[] IdleCounts = new int[Sizes.Length];

    /// <summary>A buffer of at least <paramref name="length"/> bytes (at most 64 KiB).</summary>
    public static byte[] Rent(int length)
    {
        int cls = ClassOf(length);
        if (Idle[cls].TryPop(out var buffer))
        {
            Interlocked.Decrement(ref IdleCounts[cls]);
            return buffer;
        }
        return GC.AllocateUninitializedArray<byte>(Sizes[cls], pinned: true);
    }

    /// <summary>Takes a buffer back; beyond the idle bound it is left to the GC.</summary>
    public static void Return(byte[] buffer)
    {
        int cls = Array.IndexOf(Sizes, buffer.Length);
        if (cls < 0) return;
        if (Interlocked.Increment(ref IdleCounts[cls]) * (long)Sizes[cls] > MaxIdleBytesPerClass)
        {
            Interlocked.Decrement(ref IdleCounts[cls]);
            return;
        }
        Idle[cls].Push(buffer);
    }

    private static int ClassOf(int length)
    {
        for (int i = 0; i < Sizes.Length; i++)
            if (length <= Sizes[i]) return i;
        throw new ArgumentOutOfRangeException(nameof(length), $"a chunk holds at most {Sizes[^1]} bytes, not {length}");
    }
}

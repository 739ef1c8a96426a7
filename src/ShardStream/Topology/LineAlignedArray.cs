using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace ShardStream.Topology;

/// <summary>
/// Elements in a pinned array (never moved by the collector), the first on a 64-byte cache-line
/// boundary, so that an element of 64 bytes (or 32, from an aligned start) is one line to read: the
/// planner reads them at random among millions. Kept as an array of elements, not of bytes, with a
/// few spare for the offset of the boundary: a byte array ends below 2 GiB, which the forest's
/// records of 2,097,152 node ids at K = 16 pass. Indexing checks bounds. A field of a class, not
/// read-only, so that indexing does not copy it.
/// </summary>
internal struct LineAlignedArray<T>
    where T : unmanaged
{
    private const int Line = 64;

    private T[] _array;
    private nint _start;

    public LineAlignedArray()
    {
        _array = [];
    }

    /// <summary>Elements that can be indexed.</summary>
    public int Count { get; private set; }

    /// <summary>Element <paramref name="i"/>.</summary>
    public readonly ref T this[int i]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if ((uint)i >= (uint)Count)
            {
                ThrowIndex(i);
            }

            return ref Unsafe.As<byte, T>(ref Unsafe.AddByteOffset(ref Unsafe.As<T, byte>(ref MemoryMarshal.GetArrayDataReference(_array)), _start + ((nint)i * Unsafe.SizeOf<T>())));
        }
    }

    /// <summary>Room for <paramref name="count"/> elements: the ones held keep their values, the new ones are zero.</summary>
    public void Grow(int count)
    {
        var spare = (Line + Unsafe.SizeOf<T>() - 1) / Unsafe.SizeOf<T>();
        var array = GC.AllocateArray<T>(checked(count + spare), pinned: true);
        var address = (long)Marshal.UnsafeAddrOfPinnedArrayElement(array, 0);
        var start = (nint)((Line - (address % Line)) % Line);
        ref var first = ref Unsafe.As<byte, T>(ref Unsafe.AddByteOffset(ref Unsafe.As<T, byte>(ref MemoryMarshal.GetArrayDataReference(array)), start));
        if (Count > 0)
        {
            MemoryMarshal.CreateReadOnlySpan(ref this[0], Count).CopyTo(MemoryMarshal.CreateSpan(ref first, Count));
        }

        (_array, _start, Count) = (array, start, count);
    }

    [DoesNotReturn]
    private static void ThrowIndex(int i) => throw new IndexOutOfRangeException($"No element {i} of {typeof(T).Name}.");
}

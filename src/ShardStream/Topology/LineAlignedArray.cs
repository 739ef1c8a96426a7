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
        var array = GC.AllocateUninitializedArray<T>(checked(count + spare), pinned: true);
        var address = (long)Marshal.UnsafeAddrOfPinnedArrayElement(array, 0);
        // Huge pages asked for before the memory is first written: read at random over hundreds of
        // megabytes, 4 KiB pages miss the TLB on almost every read.
        HugePages.Advise(address, (long)array.Length * Unsafe.SizeOf<T>());
        array.AsSpan().Clear();
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

/// <summary>
/// Linux: asks for transparent huge pages (<c>madvise(MADV_HUGEPAGE)</c>) on the 2 MiB pages
/// wholly inside a range, where the system grants them on request (the default
/// <c>/sys/kernel/mm/transparent_hugepage/enabled</c> is <c>madvise</c>). Only a hint: elsewhere,
/// or when refused, nothing changes but the speed.
/// </summary>
internal static partial class HugePages
{
    private const long Size = 2 << 20;
    private const int MadvHugePage = 14;

    private static bool _unavailable = !OperatingSystem.IsLinux();

    public static void Advise(long address, long length)
    {
        var from = (address + Size - 1) & ~(Size - 1);
        var to = (address + length) & ~(Size - 1);
        if (_unavailable || to - from < Size)
        {
            return;
        }

        try
        {
            _ = madvise((nint)from, (nuint)(to - from), MadvHugePage);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            _unavailable = true;
        }
    }

    [LibraryImport("libc", SetLastError = false)]
    private static partial int madvise(nint address, nuint length, int advice);
}

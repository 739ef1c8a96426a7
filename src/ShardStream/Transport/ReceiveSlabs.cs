using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace ShardStream.Transport;

/// <summary>
/// A large pinned, reference-counted receive buffer. A connection's pipe reads into it, and a
/// chunk frame that arrived whole inside it can keep its payload where it landed
/// (<see cref="TryGetSlab"/>) instead of copying it out: the chunk holds a reference, and the slab
/// goes back to a shared idle stack when the pipe and the last such chunk have let go.
/// </summary>
internal sealed class ReceiveSlab
{
    /// <summary>Bytes in one slab.</summary>
    public const int Size = 1024 * 1024;

    /// <summary>Idle slabs kept at most, whatever the trimming.</summary>
    private const long MaxIdleBytes = 1024L * 1024 * 1024;

    /// <summary>Slabs that stayed idle for a whole period are dropped.</summary>
    private static readonly TimeSpan TrimPeriod = TimeSpan.FromSeconds(30);

    private static readonly ConcurrentStack<byte[]> Idle = new();
    // Held here so that it keeps firing for the life of the process.
    private static readonly Timer Trimmer = new(static _ => Trim(), null, TrimPeriod, TrimPeriod);
    private static int _idleCount;
    private static int _lowWater;
    private int _references;

    private ReceiveSlab(byte[] array)
    {
        Array = array;
        _references = 1;
    }

    /// <summary>The bytes.</summary>
    public byte[] Array { get; }

    /// <summary>Holders now (the pipe, the pool, chunks); 0 once the slab went back.</summary>
    public int References => Volatile.Read(ref _references);

    /// <summary>Bytes from the start that reads have filled (the next rental starts here). Only the reading side uses it.</summary>
    public int Used { get; set; }

    /// <summary>A slab held once by the caller.</summary>
    public static ReceiveSlab Rent()
    {
        if (Idle.TryPop(out var array))
        {
            int idle = Interlocked.Decrement(ref _idleCount);
            if (idle < Volatile.Read(ref _lowWater)) Volatile.Write(ref _lowWater, idle);
        }
        else
        {
            array = GC.AllocateUninitializedArray<byte>(Size, pinned: true);
        }
        return new ReceiveSlab(array);
    }

    /// <summary>Slabs idle now (for tests and diagnostics).</summary>
    internal static int IdleCount => Volatile.Read(ref _idleCount);

    /// <summary>
    /// Drops as many idle slabs as were never needed during the last period (the lowest idle
    /// count seen), so that a process keeps what its windows keep reusing, and lets go of what a
    /// finished stream or a shrunken window left behind. Approximate under concurrency, which is
    /// fine for a cache.
    /// </summary>
    internal static void Trim()
    {
        int unused = Volatile.Read(ref _lowWater);
        for (int i = 0; i < unused && Idle.TryPop(out _); i++) Interlocked.Decrement(ref _idleCount);
        Volatile.Write(ref _lowWater, Volatile.Read(ref _idleCount));
    }

    /// <summary>
    /// The slab that <paramref name="memory"/> lies in, and where in it, when the memory was
    /// handed out by a <see cref="ReceiveSlabPool"/>.
    /// </summary>
    public static bool TryGetSlab(ReadOnlyMemory<byte> memory, [NotNullWhen(true)] out ReceiveSlab? slab, out int start)
    {
        if (MemoryMarshal.TryGetMemoryManager<byte, SlabMemory>(memory, out var manager, out int index, out _) && manager.Slab is { } s)
        {
            slab = s;
            start = manager.Offset + index;
            return true;
        }
        slab = null;
        start = 0;
        return false;
    }

    /// <summary>Adds a holder.</summary>
    public void Retain()
    {
        // Checked in release builds too: a slab retained after its release may already hold
        // another connection's bytes, and relaying those silently would be worse than failing.
        if (Interlocked.Increment(ref _references) <= 1) throw new InvalidOperationException("a receive slab was retained after it was released");
    }

    /// <summary>Removes a holder; the last one puts the bytes back on the idle stack.</summary>
    public void Release()
    {
        int after = Interlocked.Decrement(ref _references);
        if (after < 0) throw new InvalidOperationException("a receive slab was released more often than it was held");
        if (after != 0) return;
        if (Interlocked.Increment(ref _idleCount) * (long)Size > MaxIdleBytes)
        {
            Interlocked.Decrement(ref _idleCount);
            return;
        }
        Idle.Push(Array);
    }
}

/// <summary>
/// The memory pool of one connection's <see cref="System.IO.Pipelines.PipeReader"/>: it hands out
/// the unfilled tail of the connection's current <see cref="ReceiveSlab"/>, so that consecutive
/// reads land one after the other in the same slab, and a new slab when the tail is short. Reads
/// must go through <see cref="Filled"/> (see <see cref="SlabReceiveStream"/>) so that a later
/// rental never overlaps bytes a chunk may still hold. One reader at a time.
/// </summary>
internal sealed class ReceiveSlabPool : MemoryPool<byte>
{
    /// <summary>A tail shorter than this is not handed out: a new slab is started instead.</summary>
    private const int MinimumRental = 128 * 1024;
    private readonly Stack<SlabMemory> _free = new();
    private readonly Lock _lock = new();
    private ReceiveSlab? _current;
    private int _outstanding;
    private bool _disposed;

    public override int MaxBufferSize => ReceiveSlab.Size;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        int need = Math.Max(minBufferSize, MinimumRental);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            // A rental still held by the pipe may be written on: then its slab is not shared again.
            if (_current is null || _outstanding > 0 || ReceiveSlab.Size - _current.Used < need)
            {
                _current?.Release();
                _current = ReceiveSlab.Rent();
            }
            _current.Retain();
            _outstanding++;
            var memory = _free.Count > 0 ? _free.Pop() : new SlabMemory(this);
            memory.Assign(_current, _current.Used);
            return memory;
        }
    }

    /// <summary>Records that a read put <paramref name="length"/> bytes at the start of <paramref name="buffer"/>.</summary>
    public static void Filled(Memory<byte> buffer, int length)
    {
        if (length <= 0 || !MemoryMarshal.TryGetMemoryManager<byte, SlabMemory>(buffer, out var manager, out int index, out _)) return;
        if (manager.Slab is not { } slab) return;
        slab.Used = Math.Max(slab.Used, manager.Offset + index + length);
    }

    internal void Return(SlabMemory memory)
    {
        lock (_lock)
        {
            _outstanding--;
            if (!_disposed) _free.Push(memory);
        }
    }

    protected override void Dispose(bool disposing)
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _current?.Release();
            _current = null;
        }
    }
}

/// <summary>One rental of a <see cref="ReceiveSlabPool"/>: the slab from <see cref="Offset"/> to its end.</summary>
internal sealed class SlabMemory(ReceiveSlabPool pool) : MemoryManager<byte>
{
    public ReceiveSlab? Slab { get; private set; }

    public int Offset { get; private set; }

    public void Assign(ReceiveSlab slab, int offset)
    {
        Slab = slab;
        Offset = offset;
    }

    public override Span<byte> GetSpan() => Slab is { } slab ? slab.Array.AsSpan(Offset) : throw new ObjectDisposedException(nameof(SlabMemory));

    public override unsafe MemoryHandle Pin(int elementIndex = 0)
    {
        // Slabs live on the pinned object heap: their address never changes.
        var slab = Slab ?? throw new ObjectDisposedException(nameof(SlabMemory));
        return new MemoryHandle(Unsafe.AsPointer(ref slab.Array[Offset + elementIndex]));
    }

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
        // The pipe is done with this range: drop its hold on the slab.
        var slab = Slab;
        if (slab is null) return;
        Slab = null;
        slab.Release();
        pool.Return(this);
    }
}

/// <summary>
/// The stream a slab-backed pipe reads from: passes reads to the socket's stream and tells the
/// pool how far each one filled its slab.
/// </summary>
internal sealed class SlabReceiveStream(Stream inner) : Stream
{
    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int n = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        ReceiveSlabPool.Filled(buffer, n);
        return n;
    }

    public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

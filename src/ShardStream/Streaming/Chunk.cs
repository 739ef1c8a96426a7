using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using ShardStream.Transport;

namespace ShardStream.Streaming;

/// <summary>
/// A contiguous piece of the stream, held in memory that every holder shares (the reassembler,
/// the replay window, each child's send queue): its own pooled buffer, or the part of a
/// <see cref="ReceiveSlab"/> where it arrived from the network. Reference-counted: the memory goes
/// back to its pool when the last holder calls <see cref="Release"/>. Chunk objects are pooled
/// too, so the relay path does not allocate per chunk.
/// </summary>
internal sealed class Chunk
{
    private static readonly ConcurrentBag<Chunk> Pool = [];
    private byte[] _buffer = [];
    private int _start;
    private ReceiveSlab? _slab;
    private int _references;

    private Chunk()
    {
    }

    /// <summary>The shard this chunk was dealt to: <c>Seq % K</c>.</summary>
    public int Shard { get; private set; }

    /// <summary>The chunk's index in the stream, from 0.</summary>
    public long Seq { get; private set; }

    /// <summary>The stream offset of the first byte.</summary>
    public long Offset { get; private set; }

    /// <summary>Payload length in bytes.</summary>
    public int Length { get; private set; }

    /// <summary>The payload.</summary>
    public ReadOnlySpan<byte> Span => _buffer.AsSpan(_start, Length);

    /// <summary>The payload as memory (for stream writes).</summary>
    public ReadOnlyMemory<byte> Memory => _buffer.AsMemory(_start, Length);

    /// <summary>Bytes of the buffer the payload lies in (its pooled buffer, or the whole receive slab).</summary>
    public int Capacity => _buffer.Length;

    /// <summary>
    /// The memory this chunk keeps alive, as a replay window counts it (<see cref="HeldMemory"/>):
    /// its whole pooled buffer (a 17 KiB payload holds a 64 KiB buffer), or its payload when it lies
    /// in a receive slab (whose cost its neighbours share).
    /// </summary>
    public int Footprint => _slab is null ? _buffer.Length : Length;

    /// <summary>The receive slab the payload lies in, or null when the chunk has its own buffer.</summary>
    internal ReceiveSlab? Slab => _slab;

    /// <summary>The payload as an array segment (for gathered socket sends).</summary>
    public ArraySegment<byte> Segment => new(_buffer, _start, Length);

    /// <summary>
    /// The first chunk of <paramref name="shard"/> at or after chunk <paramref name="seq"/>, in a
    /// stream of <paramref name="shardCount"/> shards: chunk n is of shard n mod K.
    /// </summary>
    public static long FirstOfShardFrom(int shard, long seq, int shardCount) => seq + (((shard - seq) % shardCount) + shardCount) % shardCount;

    /// <summary>Rents a chunk with room for <paramref name="capacity"/> bytes, held once by the caller.</summary>
    public static Chunk Rent(int capacity) => Take(ChunkBufferPool.Rent(capacity), 0, slab: null);

    /// <summary>
    /// Payloads up to this size are copied out of their receive slab: a small chunk that stayed in
    /// it would keep the whole 1 MiB slab alive (and be charged for it, see <see cref="HeldMemory"/>)
    /// for a few bytes, while the copy costs less than the frame's hash.
    /// </summary>
    public const int MaxCopiedPayload = 4 * 1024;

    /// <summary>
    /// A chunk of a payload just read from a link: it stays where it is when it lies whole in a
    /// receive slab and is over <see cref="MaxCopiedPayload"/> (the chunk then holds the slab),
    /// otherwise it is copied into a pooled buffer.
    /// </summary>
    public static Chunk FromReceived(int shard, long seq, long offset, in ReadOnlySequence<byte> payload)
    {
        if (payload.Length <= MaxCopiedPayload || !payload.IsSingleSegment || !ReceiveSlab.TryGetSlab(payload.First, out var slab, out int start))
            return Copy(shard, seq, offset, payload);
        slab.Retain();
        var chunk = Take(slab.Array, start, slab);
        chunk.Set(shard, seq, offset, (int)payload.Length);
        return chunk;
    }

    /// <summary>A pooled chunk object over <paramref name="buffer"/> from <paramref name="start"/>, held once, still empty.</summary>
    private static Chunk Take(byte[] buffer, int start, ReceiveSlab? slab)
    {
        if (!Pool.TryTake(out var chunk)) chunk = new Chunk();
        chunk._buffer = buffer;
        chunk._start = start;
        chunk._slab = slab;
        chunk._references = 1;
        chunk.Length = 0;
        return chunk;
    }

    /// <summary>Rents a chunk and copies <paramref name="payload"/> into it.</summary>
    public static Chunk Copy(int shard, long seq, long offset, in ReadOnlySequence<byte> payload)
    {
        var chunk = Rent((int)payload.Length);
        payload.CopyTo(chunk._buffer);
        chunk.Set(shard, seq, offset, (int)payload.Length);
        return chunk;
    }

    /// <summary>The writable buffer of a chunk from <see cref="Rent"/>, for a source read.</summary>
    public Memory<byte> WritableBuffer => _slab is null ? _buffer : throw new InvalidOperationException("a received chunk is read-only");

    /// <summary>
    /// When a read filled only a small part of this chunk's buffer, a copy into a right-sized
    /// buffer (releasing this one), so a window of small chunks does not hold 64 KiB each.
    /// </summary>
    public Chunk Shrink()
    {
        if (_slab is not null || Length > _buffer.Length / 4) return this;
        var smaller = Rent(Length);
        Span.CopyTo(smaller._buffer);
        smaller.Set(Shard, Seq, Offset, Length);
        Release();
        return smaller;
    }

    /// <summary>Sets the identity of a freshly filled chunk.</summary>
    public void Set(int shard, long seq, long offset, int length)
    {
        Shard = shard;
        Seq = seq;
        Offset = offset;
        Length = length;
    }

    /// <summary>Adds a holder.</summary>
    public Chunk Retain()
    {
        int after = Interlocked.Increment(ref _references);
        Debug.Assert(after > 1, "retained a released chunk");
        return this;
    }

    /// <summary>Removes a holder; the last one returns the buffer to the pool.</summary>
    public void Release()
    {
        int after = Interlocked.Decrement(ref _references);
        Debug.Assert(after >= 0, "released a chunk too often");
        if (after != 0) return;
        if (_slab is { } slab)
        {
            _slab = null;
            slab.Release();
        }
        else
        {
            ChunkBufferPool.Return(_buffer);
        }
        _buffer = [];
        _start = 0;
        Pool.Add(this);
    }
}

namespace ShardStream.Streaming;

/// <summary>
/// Turns K shard streams back into the one ordered byte stream, exactly once. Chunk <c>n</c> is
/// in shard <c>n % K</c>; each shard arrives in order on its own connection, so a FIFO per shard is
/// enough. Duplicates (a new parent replaying what the old one already sent) are dropped; a chunk
/// whose offset does not continue the stream is refused, so a wrong stream is never written.
/// What waits for an earlier chunk of another shard is bounded in memory (<see cref="HeldMemory"/>)
/// and in chunks: past either bound a chunk is refused (<see cref="ReassemblyFullException"/>)
/// instead of kept, so a parent that holds one shard back while another runs ahead costs at most
/// the bound. Thread-safe: shards arrive on different connections.
/// </summary>
internal sealed class Reassembler
{
    private readonly object _lock = new();
    private readonly Queue<Chunk>[] _pending;
    private readonly long[] _lastSeq;
    private readonly bool[] _ended;
    private readonly int _shardCount;
    private readonly HeldMemory _held = new();
    private long _finalSeq = -1;
    private long _finalOffset = -1;

    /// <param name="shardCount">K.</param>
    /// <param name="startSeq">The first chunk to write (the join point).</param>
    /// <param name="startOffset">Its stream offset.</param>
    public Reassembler(int shardCount, long startSeq, long startOffset)
    {
        _shardCount = shardCount;
        _pending = new Queue<Chunk>[shardCount];
        _lastSeq = new long[shardCount];
        _ended = new bool[shardCount];
        for (int s = 0; s < shardCount; s++)
        {
            _pending[s] = new Queue<Chunk>();
            _lastSeq[s] = startSeq - 1;
        }
        NextSeq = startSeq;
        NextOffset = startOffset;
        StartOffset = startOffset;
    }

    /// <summary>The next chunk to write.</summary>
    public long NextSeq { get; private set; }

    /// <summary>The stream offset of the next byte to write.</summary>
    public long NextOffset { get; private set; }

    /// <summary>The stream offset of the join point.</summary>
    public long StartOffset { get; }

    /// <summary>Bytes the stream had at its end, once known.</summary>
    public long FinalOffset => _finalOffset;

    /// <summary>Memory kept alive now by chunks waiting for an earlier one (see <see cref="HeldMemory"/>).</summary>
    public long HeldBytes
    {
        get
        {
            lock (_lock) return _held.Bytes;
        }
    }

    /// <summary>Set when the last <see cref="Add"/> kept a trusted chunk past the bound; read and cleared by the caller.</summary>
    public ReassemblyFullException? Full { get; set; }

    /// <summary>The most <see cref="HeldBytes"/> has been.</summary>
    public long PeakHeldBytes
    {
        get
        {
            lock (_lock) return _peakHeldBytes;
        }
    }

    private long _peakHeldBytes;

    /// <summary>Bytes that could not be recovered and were skipped (see <see cref="GapFound"/>).</summary>
    public long LostBytes { get; private set; }

    /// <summary>Called (under the reassembler's lock) for every gap that was skipped.</summary>
    public Action<Gap>? GapFound { get; set; }

    /// <summary>True once every chunk up to the end of the stream was handed out.</summary>
    public bool IsComplete
    {
        get
        {
            lock (_lock) return _finalSeq >= 0 && NextSeq >= _finalSeq;
        }
    }

    /// <summary>The next sequence number wanted from <paramref name="shard"/>: where to resume it.</summary>
    public long NextSeqOf(int shard)
    {
        lock (_lock) return Chunk.FirstOfShardFrom(shard, _lastSeq[shard] + 1, _shardCount);
    }

    private static long Mod(long a, int k) => ((a % k) + k) % k;

    /// <summary>
    /// Accepts a chunk (taking over the caller's reference to it) and appends to
    /// <paramref name="ready"/> every chunk that can now be written, in order. Returns false for a
    /// duplicate, which is released. Throws <see cref="ReassemblyFullException"/> (releasing the
    /// chunk, and taking nothing of it: that shard resumes at this chunk) when the chunk would
    /// wait and keeping it would pass <paramref name="maxHeldBytes"/> (the memory chunks waiting
    /// for an earlier one may keep alive, see <see cref="HeldMemory"/>) or one chunk per KiB of it.
    /// A <paramref name="trusted"/> chunk (the coordinator's) is kept even then, and
    /// <see cref="Full"/> says so.
    /// </summary>
    public bool Add(Chunk chunk, List<Chunk> ready, long maxHeldBytes = long.MaxValue, bool trusted = false)
    {
        lock (_lock)
        {
            if (chunk.Seq <= _lastSeq[chunk.Shard] || chunk.Seq < NextSeq)
            {
                chunk.Release();
                return false;
            }
            if (Mod(chunk.Seq, _shardCount) != chunk.Shard)
            {
                chunk.Release();
                throw new InvalidDataException($"chunk {chunk.Seq} arrived as shard {chunk.Shard}, but belongs to shard {chunk.Seq % _shardCount}");
            }
            // One chunk per KiB of the byte bound (every chunk holds at least a 1 KiB buffer).
            long maxHeldChunks = Math.Max(64, maxHeldBytes / 1024);
            if (chunk.Seq != NextSeq && (_held.Bytes + _held.CostOf(chunk) > maxHeldBytes || _held.Chunks >= maxHeldChunks))
            {
                long seq = chunk.Seq;
                int lagging = (int)Mod(NextSeq, _shardCount);
                var full = new ReassemblyFullException(lagging, chunk.Shard, trusted,
                    $"chunk {seq} of shard {chunk.Shard} would wait behind chunk {NextSeq} of shard {lagging} with {_held.Chunks} others holding {_held.Bytes} bytes, the limit is {maxHeldBytes} bytes and {maxHeldChunks} chunks: shard {lagging} is that far behind");
                if (!trusted)
                {
                    chunk.Release();
                    throw full;
                }
                Full = full;
            }
            _lastSeq[chunk.Shard] = chunk.Seq;
            _pending[chunk.Shard].Enqueue(chunk);
            _held.Add(chunk);
            Drain(ready);
            _peakHeldBytes = Math.Max(_peakHeldBytes, _held.Bytes);
            return true;
        }
    }

    private void Drain(List<Chunk> ready)
    {
        while (true)
        {
            var queue = _pending[Mod(NextSeq, _shardCount)];
            if (!queue.TryPeek(out var head))
            {
                if (!SkipEndedShard()) return;
                continue;
            }
            if (head.Seq != NextSeq)
            {
                // Each shard arrives in order, so chunk NextSeq will never come: the parent that
                // took over this shard could not replay from where we stopped (older than its
                // window). Continue at the earliest chunk we have, and say what was lost.
                foreach (var other in _pending)
                    while (other.TryPeek(out var stale) && stale.Seq < head.Seq) Forget(other.Dequeue()).Release();
                var gap = new Gap(NextOffset, head.Offset, NextSeq, head.Seq);
                LostBytes += gap.Length;
                NextSeq = head.Seq;
                NextOffset = head.Offset;
                GapFound?.Invoke(gap);
                continue;
            }
            Forget(queue.Dequeue());
            if (head.Offset != NextOffset)
            {
                head.Release();
                throw new InvalidDataException($"chunk {head.Seq} starts at offset {head.Offset}, expected {NextOffset}");
            }
            NextSeq++;
            NextOffset += head.Length;
            ready.Add(head);
        }
    }

    private Chunk Forget(Chunk chunk)
    {
        _held.Remove(chunk);
        return chunk;
    }

    /// <summary>
    /// The shard that should carry chunk NextSeq has ended (its parent sent End) and has nothing
    /// queued: that chunk will never come. Once no other shard can still deliver an earlier chunk,
    /// continue at the earliest queued chunk, or at the end of the stream, and report the gap.
    /// </summary>
    private bool SkipEndedShard()
    {
        if (_finalSeq < 0 || NextSeq >= _finalSeq || !_ended[Mod(NextSeq, _shardCount)]) return false;
        long target = _finalSeq, targetOffset = _finalOffset;
        for (int s = 0; s < _shardCount; s++)
        {
            if (_pending[s].TryPeek(out var h))
            {
                if (h.Seq < target) (target, targetOffset) = (h.Seq, h.Offset);
            }
            else if (!_ended[s])
            {
                return false; // that shard may still deliver a chunk before the target
            }
        }
        var gap = new Gap(NextOffset, targetOffset, NextSeq, target);
        LostBytes += gap.Length;
        NextSeq = target;
        NextOffset = targetOffset;
        GapFound?.Invoke(gap);
        return true;
    }

    /// <summary>
    /// Records the end of the stream; with <paramref name="shard"/>, also that this shard's parent
    /// has sent everything it will send.
    /// </summary>
    public void SetEnd(long finalSeq, long finalOffset, List<Chunk> ready, int shard = -1)
    {
        lock (_lock)
        {
            _finalSeq = finalSeq;
            _finalOffset = finalOffset;
            if (shard >= 0) _ended[shard] = true;
            Drain(ready);
        }
    }

    /// <summary>Releases everything still held.</summary>
    public void Clear()
    {
        lock (_lock)
        {
            foreach (var queue in _pending)
                while (queue.TryDequeue(out var chunk)) chunk.Release();
            _held.Clear();
        }
    }
}

/// <summary>
/// A chunk was refused because keeping it would pass the reassembler's bound: shard
/// <paramref name="LaggingShard"/> holds the stream back while <paramref name="RefusedShard"/> runs ahead.
/// </summary>
internal sealed class ReassemblyFullException(int laggingShard, int refusedShard, bool kept, string message) : Exception(message)
{
    /// <summary>The chunk was kept anyway (it came from a trusted sender).</summary>
    public bool Kept { get; } = kept;

    /// <summary>The shard whose next chunk everything waits for.</summary>
    public int LaggingShard { get; } = laggingShard;

    /// <summary>The shard of the refused chunk.</summary>
    public int RefusedShard { get; } = refusedShard;
}

/// <summary>A lost byte range [<paramref name="FromOffset"/>, <paramref name="ToOffset"/>), chunks [<paramref name="FromSeq"/>, <paramref name="ToSeq"/>).</summary>
internal readonly record struct Gap(long FromOffset, long ToOffset, long FromSeq, long ToSeq)
{
    public long Length => ToOffset - FromOffset;
}

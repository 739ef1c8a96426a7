namespace ShardStream.Streaming;

/// <summary>
/// Turns K shard streams back into the one ordered byte stream, exactly once. Chunk <c>n</c> is
/// in shard <c>n % K</c>; each shard arrives in order on its own connection, so a FIFO per shard is
/// enough. Duplicates (a new parent replaying what the old one already sent) are dropped; a chunk
/// whose offset does not continue the stream is refused, so a wrong stream is never written.
/// Thread-safe: shards arrive on different connections.
/// </summary>
internal sealed class Reassembler
{
    private readonly object _lock = new();
    private readonly Queue<Chunk>[] _pending;
    private readonly long[] _lastSeq;
    private readonly bool[] _ended;
    private readonly int _shardCount;
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
        lock (_lock)
        {
            long last = _lastSeq[shard];
            return last + 1 + Mod(shard - (last + 1), _shardCount);
        }
    }

    private static long Mod(long a, int k) => ((a % k) + k) % k;

    /// <summary>
    /// Accepts a chunk (taking over the caller's reference to it) and appends to
    /// <paramref name="ready"/> every chunk that can now be written, in order. Returns false for a
    /// duplicate, which is released.
    /// </summary>
    public bool Add(Chunk chunk, List<Chunk> ready)
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
            _lastSeq[chunk.Shard] = chunk.Seq;
            _pending[chunk.Shard].Enqueue(chunk);
            Drain(ready);
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
                    while (other.TryPeek(out var stale) && stale.Seq < head.Seq) other.Dequeue().Release();
                var gap = new Gap(NextOffset, head.Offset, NextSeq, head.Seq);
                LostBytes += gap.Length;
                NextSeq = head.Seq;
                NextOffset = head.Offset;
                GapFound?.Invoke(gap);
                continue;
            }
            queue.Dequeue();
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
            foreach (var queue in _pending)
                while (queue.TryDequeue(out var chunk)) chunk.Release();
    }
}

/// <summary>A lost byte range [<paramref name="FromOffset"/>, <paramref name="ToOffset"/>), chunks [<paramref name="FromSeq"/>, <paramref name="ToSeq"/>).</summary>
internal readonly record struct Gap(long FromOffset, long ToOffset, long FromSeq, long ToSeq)
{
    public long Length => ToOffset - FromOffset;
}

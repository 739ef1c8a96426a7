namespace ShardStream.Streaming;

/// <summary>
/// The most recent chunks of every shard, bounded by bytes and by age, so that a peer that lost a
/// parent can resume at an exact sequence number from a new parent. The bytes are the memory the
/// window keeps alive (<see cref="HeldMemory"/>: whole buffers, and whole receive slabs), not the
/// payload it holds. Not thread-safe: the node's relay lock guards it.
/// </summary>
internal sealed class ReplayWindow
{
    private readonly Queue<(Chunk Chunk, long AddedAt)>[] _shards;
    private readonly long _maxBytes;
    private readonly long _maxAgeTicks;
    private readonly HeldMemory _held = new();

    /// <summary>
    /// Chunks kept at most: one per KiB of the byte bound (65,536 for 64 MiB), as every chunk holds
    /// at least a 1 KiB buffer; it also bounds the chunk objects and queue entries.
    /// </summary>
    public int MaxChunks { get; }

    /// <param name="shardCount">K.</param>
    /// <param name="maxBytes">Bytes kept at most, over all shards.</param>
    /// <param name="maxAge">Chunks older than this are dropped.</param>
    /// <param name="timestampFrequency">
    /// Ticks per second of the timestamps given to <see cref="Add"/> (<see cref="TimeProvider.TimestampFrequency"/>;
    /// not TimeSpan ticks: on Linux a timestamp tick is a nanosecond).
    /// </param>
    public ReplayWindow(int shardCount, long maxBytes, TimeSpan maxAge, long timestampFrequency)
    {
        _shards = new Queue<(Chunk, long)>[shardCount];
        for (int i = 0; i < shardCount; i++) _shards[i] = new Queue<(Chunk, long)>();
        _maxBytes = maxBytes;
        MaxChunks = (int)Math.Clamp(maxBytes / 1024, 64, int.MaxValue);
        _maxAgeTicks = (long)Math.Min(long.MaxValue / 2.0, maxAge.TotalSeconds * timestampFrequency);
    }

    /// <summary>Bytes of memory held now (buffers and receive slabs, see <see cref="HeldMemory"/>).</summary>
    public long Bytes => _held.Bytes;

    /// <summary>Chunks held now.</summary>
    public int Count => _held.Chunks;

    /// <summary>
    /// Keeps <paramref name="chunk"/> (retaining it) and drops what falls out of the bounds, the
    /// byte bound raised by <paramref name="reachBytes"/> (see <c>Relay</c>: what a slow or frozen
    /// child has not yet been sent, so that the window reaches as far behind it as behind the head).
    /// </summary>
    public void Add(Chunk chunk, long nowTicks, long reachBytes = 0)
    {
        _shards[chunk.Shard].Enqueue((chunk.Retain(), nowTicks));
        _held.Add(chunk);
        Evict(nowTicks, Math.Max(0, reachBytes));
    }

    private void Evict(long nowTicks, long reachBytes)
    {
        long maxBytes = _maxBytes + reachBytes;
        long maxChunks = MaxChunks + reachBytes / 1024;
        // Age: each shard's queue is in arrival order, so its stale chunks are at its head. Shards
        // arrive from different parents, so the smallest sequence number is not always the stalest.
        foreach (var queue in _shards)
            while (queue.TryPeek(out var head) && nowTicks - head.AddedAt > _maxAgeTicks)
                Drop(queue);

        // Bytes: drop the globally oldest chunk, the smallest sequence number among the shard heads.
        while (_held.Bytes > maxBytes || _held.Chunks > maxChunks)
        {
            Queue<(Chunk Chunk, long AddedAt)>? victim = null;
            long victimSeq = long.MaxValue;
            foreach (var queue in _shards)
                if (queue.TryPeek(out var head) && head.Chunk.Seq < victimSeq)
                {
                    victim = queue;
                    victimSeq = head.Chunk.Seq;
                }
            if (victim is null) return;
            Drop(victim);
        }
    }

    private void Drop(Queue<(Chunk Chunk, long AddedAt)> queue)
    {
        var (chunk, _) = queue.Dequeue();
        _held.Remove(chunk);
        chunk.Release();
    }

    /// <summary>
    /// Retains and appends to <paramref name="into"/> every kept chunk of <paramref name="shard"/>
    /// with a sequence number of at least <paramref name="fromSeq"/>. Returns the first sequence
    /// number that will reach the caller: <paramref name="fromSeq"/> when the window reaches back
    /// that far or the chunk is still to come, a later one when the window has already dropped it.
    /// </summary>
    public long CopyFrom(int shard, long fromSeq, List<Chunk> into)
    {
        var queue = _shards[shard];
        long first = -1;
        foreach (var (chunk, _) in queue)
        {
            if (chunk.Seq < fromSeq) continue;
            if (first < 0) first = chunk.Seq;
            into.Add(chunk.Retain());
        }
        return first < 0 || first == fromSeq ? fromSeq : first;
    }

    /// <summary>
    /// When the window took chunk <paramref name="seq"/> of <paramref name="shard"/> (a timestamp
    /// of the clock given to <see cref="Add"/>): <see cref="long.MinValue"/> when it has dropped it
    /// already (the shard's oldest kept chunk is later), null when it has not taken it yet.
    /// </summary>
    public long? AddedAt(int shard, long seq)
    {
        var queue = _shards[shard];
        if (queue.TryPeek(out var oldest) && oldest.Chunk.Seq > seq) return long.MinValue;
        foreach (var (chunk, addedAt) in queue)
            if (chunk.Seq >= seq) return addedAt;
        return null;
    }

    /// <summary>The oldest kept sequence number of the shard, or -1.</summary>
    public long OldestSeq(int shard) => _shards[shard].TryPeek(out var head) ? head.Chunk.Seq : -1;

    /// <summary>The newest kept sequence number of the shard, or -1.</summary>
    public long NewestSeq(int shard) => _shards[shard].Count > 0 ? _shards[shard].Last().Chunk.Seq : -1;

    /// <summary>Releases everything.</summary>
    public void Clear()
    {
        foreach (var queue in _shards)
            while (queue.TryDequeue(out var item)) item.Chunk.Release();
        _held.Clear();
    }
}

using ShardStream.Streaming;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// The coordinator's side of the signed stream: each new chunk is hashed and held until its
/// shard's hash list is signed; then the list, and after it the chunks it covers, go to the relay.
/// One signature covers up to <c>maxPerList</c> chunks (RFC 7574 §6.1.2 amortises the same way
/// with signed Merkle roots). A list is signed when it is full (by count, or by bytes: the chunks
/// then reach the children's queues in bursts no bigger than that), or when its oldest chunk has
/// waited the longest delay allowed. Signing at once whenever the source caught up was tried and
/// dropped: a live source that writes small records every millisecond then costs a signature per
/// record at the coordinator and a verification per record at every peer, which on the bench's
/// 10 Mbit/s stream of 1 ms records made the CPU, not the network, the bottleneck. What is kept of
/// it: when the source has caught up (a read came back short) and its next read waits, what is held
/// is signed as soon as the last signature is <c>minInterval</c> old, so a live source's chunks wait
/// at most about that interval instead of the whole delay, and signatures stay at most one per
/// shard per interval.
/// The delay is paid once, at the source; relays add only the verification. Not thread-safe: the
/// coordinator calls it under its lock.
/// </summary>
internal sealed class SigningQueue(RunSigner signer, Relay relay, int shardCount, int maxPerList, long maxBytesPerList, TimeProvider time)
{
    private readonly long[] _pendingBytes = new long[shardCount];
    private readonly List<Chunk>[] _pending = Enumerable.Range(0, shardCount).Select(_ => new List<Chunk>()).ToArray();
    // The hashes of each shard's pending chunks, back to back (no array per chunk).
    private readonly byte[][] _hashes = Enumerable.Range(0, shardCount).Select(_ => new byte[maxPerList * Protocol.HashLength]).ToArray();
    // Per shard, when its oldest held chunk came (-1: none held).
    private readonly long[] _oldestAt = Enumerable.Repeat(-1L, shardCount).ToArray();
    // Per shard, when each held chunk came, for the hold-time histogram.
    private readonly List<long>[] _addedAt = Enumerable.Range(0, shardCount).Select(_ => new List<long>()).ToArray();
    private long _lastSignedAt = long.MinValue;
    private bool _sourceCaughtUp;

    /// <summary>Whether any chunk waits for its signature (the coordinator's signing timer runs only then).</summary>
    public bool HasPending => Array.Exists(_oldestAt, at => at >= 0);

    /// <summary>Signatures made so far (one per hash list).</summary>
    public long ListsSigned { get; private set; }

    /// <summary>How long chunks were held for their signature: counts per <see cref="HoldBucketMicroseconds"/> µs, the last bucket open-ended (for the bench).</summary>
    public long[] HoldHistogram { get; } = new long[401];

    /// <summary>The width of a <see cref="HoldHistogram"/> bucket.</summary>
    public const int HoldBucketMicroseconds = 50;

    /// <summary>
    /// Takes over the caller's reference to <paramref name="chunk"/>. <paramref name="sourceCaughtUp"/>:
    /// the read that gave it came back short (the source had no more for now); what is held is then
    /// signed by <see cref="SourceWaiting"/> or <see cref="SignIfDue"/> once the last signature is
    /// old enough.
    /// </summary>
    public void Add(Chunk chunk, bool sourceCaughtUp = false)
    {
        var pending = _pending[chunk.Shard];
        ChunkHash.Compute((byte)chunk.Shard, (ulong)chunk.Seq, (ulong)chunk.Offset, chunk.Span, _hashes[chunk.Shard].AsSpan(pending.Count * Protocol.HashLength, Protocol.HashLength));
        pending.Add(chunk);
        _addedAt[chunk.Shard].Add(time.GetTimestamp());
        _pendingBytes[chunk.Shard] += chunk.Length;
        if (_oldestAt[chunk.Shard] < 0) _oldestAt[chunk.Shard] = time.GetTimestamp();
        if (pending.Count >= maxPerList || _pendingBytes[chunk.Shard] >= maxBytesPerList) Sign(chunk.Shard);
        _sourceCaughtUp = sourceCaughtUp;
    }

    /// <summary>
    /// Appends <paramref name="bytes"/> (the source's next bytes) to chunk <paramref name="seq"/>
    /// when it is still held for its signature, is the last chunk of its shard's list and has room
    /// for them within <paramref name="maxLength"/>: a live source's small reads then travel as
    /// one chunk, with one hash, instead of one chunk each (fewer hashes on the wire and per byte
    /// at every peer; the chunk waits no longer than it would anyway). The chunk's hash is
    /// computed again. False when the chunk was signed already or is full: the caller makes a new chunk.
    /// </summary>
    public bool TryAppend(long seq, ReadOnlySpan<byte> bytes, int maxLength, bool sourceCaughtUp)
    {
        if (seq < 0) return false;
        int shard = (int)(seq % shardCount);
        var pending = _pending[shard];
        if (pending.Count == 0 || pending[^1] is not { } last || last.Seq != seq || last.Length + bytes.Length > maxLength) return false;
        var merged = Chunk.Rent(last.Length + bytes.Length);
        last.Span.CopyTo(merged.WritableBuffer.Span);
        bytes.CopyTo(merged.WritableBuffer.Span[last.Length..]);
        merged.Set(last.Shard, last.Seq, last.Offset, last.Length + bytes.Length);
        pending[^1] = merged;
        last.Release();
        ChunkHash.Compute((byte)shard, (ulong)seq, (ulong)merged.Offset, merged.Span, _hashes[shard].AsSpan((pending.Count - 1) * Protocol.HashLength, Protocol.HashLength));
        _pendingBytes[shard] += bytes.Length;
        if (_pendingBytes[shard] >= maxBytesPerList) Sign(shard);
        _sourceCaughtUp = sourceCaughtUp;
        return true;
    }

    /// <summary>
    /// The source's next read is waiting (a burst of a live source has ended): what a caught-up
    /// source gave is signed now if the last signature is at least <paramref name="minInterval"/>
    /// old. Signing at the end of a burst rather than at its first chunk lets one signature cover
    /// the whole burst.
    /// </summary>
    public void SourceWaiting(TimeSpan minInterval)
    {
        if (_sourceCaughtUp) SignIfDue(TimeSpan.MaxValue, minInterval);
    }

    /// <summary>
    /// Signs every shard's list when the oldest chunk held has waited <paramref name="maxDelay"/>, or
    /// when the source has caught up and the last signature is <paramref name="minInterval"/> old.
    /// </summary>
    public void SignIfDue(TimeSpan maxDelay, TimeSpan minInterval)
    {
        long now = time.GetTimestamp();
        bool early = _sourceCaughtUp && (_lastSignedAt == long.MinValue || time.GetElapsedTime(_lastSignedAt, now) >= minInterval);
        for (int s = 0; s < shardCount; s++)
            if (_oldestAt[s] >= 0 && (early || time.GetElapsedTime(_oldestAt[s], now) >= maxDelay)) Sign(s);
    }

    /// <summary>Signs the lists whose oldest chunk has waited <paramref name="maxDelay"/> (a source that keeps the reader busy, between its waits).</summary>
    public void SignOverdue(TimeSpan maxDelay)
    {
        long now = time.GetTimestamp();
        for (int s = 0; s < shardCount; s++)
            if (_oldestAt[s] >= 0 && time.GetElapsedTime(_oldestAt[s], now) >= maxDelay) Sign(s);
    }

    /// <summary>Signs and publishes whatever is held.</summary>
    public void SignAll()
    {
        for (int s = 0; s < shardCount; s++) Sign(s);
    }

    private void Sign(int shard)
    {
        var pending = _pending[shard];
        if (pending.Count == 0) return;
        var hashes = _hashes[shard].AsSpan(0, pending.Count * Protocol.HashLength).ToArray();
        var list = signer.SignHashList((byte)shard, (ulong)pending[0].Seq, hashes);
        ListsSigned++;
        long now = time.GetTimestamp();
        _lastSignedAt = now;
        foreach (long at in _addedAt[shard])
            HoldHistogram[Math.Min(HoldHistogram.Length - 1, (int)(time.GetElapsedTime(at, now).Ticks / (TimeSpan.TicksPerMicrosecond * HoldBucketMicroseconds)))]++;
        _addedAt[shard].Clear();
        relay.PublishSigned(list, FrameWriting.ToArray(list.Write, list.FrameLength), pending);
        foreach (var chunk in pending) chunk.Release();
        pending.Clear();
        _pendingBytes[shard] = 0;
        _oldestAt[shard] = -1;
    }

    /// <summary>Releases what was never published (the coordinator stopped).</summary>
    public void Clear()
    {
        foreach (var pending in _pending)
        {
            foreach (var chunk in pending) chunk.Release();
            pending.Clear();
        }
        foreach (var added in _addedAt) added.Clear();
    }
}

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
/// 10 Mbit/s stream of 1 ms records made the CPU, not the network, the bottleneck. The delay is
/// paid once, at the source; relays add only the verification. Not thread-safe: the coordinator
/// calls it under its lock.
/// </summary>
internal sealed class SigningQueue(StreamSigner signer, Relay relay, int shardCount, int maxPerList, long maxBytesPerList, TimeProvider time)
{
    private readonly long[] _pendingBytes = new long[shardCount];
    private readonly List<Chunk>[] _pending = Enumerable.Range(0, shardCount).Select(_ => new List<Chunk>()).ToArray();
    // The hashes of each shard's pending chunks, back to back (no array per chunk).
    private readonly byte[][] _hashes = Enumerable.Range(0, shardCount).Select(_ => new byte[maxPerList * Protocol.HashLength]).ToArray();
    private long _oldestAt = -1;

    /// <summary>Signatures made so far (one per hash list).</summary>
    public long ListsSigned { get; private set; }

    /// <summary>Takes over the caller's reference to <paramref name="chunk"/>.</summary>
    public void Add(Chunk chunk)
    {
        var pending = _pending[chunk.Shard];
        ChunkHash.Compute((byte)chunk.Shard, (ulong)chunk.Seq, (ulong)chunk.Offset, chunk.Span, _hashes[chunk.Shard].AsSpan(pending.Count * Protocol.HashLength, Protocol.HashLength));
        pending.Add(chunk);
        _pendingBytes[chunk.Shard] += chunk.Length;
        if (_oldestAt < 0) _oldestAt = time.GetTimestamp();
        if (pending.Count >= maxPerList || _pendingBytes[chunk.Shard] >= maxBytesPerList) Sign(chunk.Shard);
    }

    /// <summary>Signs every shard's list when the oldest chunk held has waited <paramref name="delay"/>.</summary>
    public void SignIfOlderThan(TimeSpan delay)
    {
        if (_oldestAt >= 0 && time.GetElapsedTime(_oldestAt) >= delay) SignAll();
    }

    /// <summary>Signs and publishes whatever is held.</summary>
    public void SignAll()
    {
        for (int s = 0; s < shardCount; s++) Sign(s);
        _oldestAt = -1;
    }

    private void Sign(int shard)
    {
        var pending = _pending[shard];
        if (pending.Count == 0) return;
        var hashes = _hashes[shard].AsSpan(0, pending.Count * Protocol.HashLength).ToArray();
        var list = signer.SignHashList((byte)shard, (ulong)pending[0].Seq, hashes);
        ListsSigned++;
        relay.PublishHashList(list, FrameWriting.ToArray(list.Write));
        foreach (var chunk in pending)
        {
            relay.Publish(chunk);
            chunk.Release();
        }
        pending.Clear();
        _pendingBytes[shard] = 0;
    }

    /// <summary>Releases what was never published (the coordinator stopped).</summary>
    public void Clear()
    {
        foreach (var pending in _pending)
        {
            foreach (var chunk in pending) chunk.Release();
            pending.Clear();
        }
    }
}

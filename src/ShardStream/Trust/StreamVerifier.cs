using System.Buffers;
using ShardStream.Wire;

namespace ShardStream.Trust;

/// <summary>
/// A peer's check of everything its parents send, against the stream's key: a hash list is taken
/// only with a good signature, a chunk only when it matches the hash signed for its sequence
/// number, an End only with a good signature; every signature must be of this run
/// (<see cref="StreamRun"/>). Anything else throws <see cref="InvalidDataException"/> with the
/// reason, and nothing of it is kept, written or forwarded. Thread-safe (shards arrive on different links).
/// </summary>
internal sealed class StreamVerifier(StreamRun run, int shardCount)
{
    /// <summary>
    /// Signed hashes a peer holds for chunks it has not received yet, per shard. A new parent
    /// replays its window's hash lists ahead of the chunks; 16 384 is a 64 MiB window of 4 KiB
    /// chunks. An honest parent never sends more ahead; a parent that does is cut off.
    /// </summary>
    public const int MaxPendingHashesPerShard = 16_384;

    private readonly object _lock = new();
    // Each expected hash points into its list's array: no allocation per chunk.
    private readonly Dictionary<long, (byte[] Hashes, int Index)>[] _expected = Enumerable.Range(0, shardCount).Select(_ => new Dictionary<long, (byte[], int)>()).ToArray();

    /// <summary>The run this peer watches: the stream's key and the run id its Welcome carried.</summary>
    public StreamRun Run { get; } = run;

    public StreamKey Key => Run.Key;

    /// <summary>
    /// Takes the hashes of a signed list, for the chunks at or after <paramref name="nextSeq"/>
    /// (the shard's next chunk due; earlier ones are duplicates and never checked).
    /// </summary>
    public void AddHashList(in HashList list, long nextSeq)
    {
        if (list.Shard >= shardCount) throw new ProtocolException($"hash list of shard {list.Shard}, the stream has {shardCount}");
        if ((long)(list.FirstSeq % (ulong)shardCount) != list.Shard)
            throw new InvalidDataException($"hash list for chunk {list.FirstSeq} sent as shard {list.Shard}");
        if (!Run.VerifyHashList(list))
            throw new InvalidDataException($"hash list of shard {list.Shard} from chunk {list.FirstSeq} does not carry the stream's signature for this run (forged, or of another run of the stream)");
        lock (_lock)
        {
            var expected = _expected[list.Shard];
            for (int i = 0; i < list.Count; i++)
            {
                long seq = (long)list.FirstSeq + (long)i * shardCount;
                if (seq < nextSeq) continue;
                expected[seq] = (list.Hashes, i);
            }
            if (expected.Count > MaxPendingHashesPerShard)
                throw new InvalidDataException($"over {MaxPendingHashesPerShard} chunk hashes of shard {list.Shard} sent ahead of their chunks");
        }
    }

    /// <summary>
    /// Checks a chunk against its signed hash; throws when it has none or does not match.
    /// <paramref name="body"/> is the chunk frame's whole body (the header fields <paramref name="header"/>
    /// was read from, then the payload): the bytes the hash covers.
    /// </summary>
    public void VerifyChunk(in ChunkHeader header, in ReadOnlySequence<byte> body)
    {
        (byte[] Hashes, int Index) hash;
        lock (_lock)
        {
            var expected = _expected[header.Shard];
            if (!expected.Remove((long)header.Seq, out hash))
                throw new InvalidDataException($"chunk {header.Seq} of shard {header.Shard} came without a signed hash (forged sequence number or offset, or sent ahead of its hash list)");
            // Hashes of chunks a parent skipped (a gap) are never needed again; swept rarely, so
            // that the common path does not allocate.
            long seq = (long)header.Seq;
            if (expected.Count > MaxPendingHashesPerShard / 2)
                foreach (long stale in expected.Keys.Where(s => s < seq).ToList()) expected.Remove(stale);
        }
        Span<byte> actual = stackalloc byte[Protocol.HashLength];
        // A body that arrived whole in one receive buffer is hashed where it lies; one split
        // across two is copied out first (ChunkHash: one call over contiguous bytes is the fast path).
        if (body.IsSingleSegment) ChunkHash.ComputeBody(body.FirstSpan, actual);
        else ChunkHash.Compute(header.Shard, header.Seq, header.Offset, body.Slice(Protocol.ChunkHeaderLength), actual);
        if (!actual.SequenceEqual(hash.Hashes.AsSpan(hash.Index * Protocol.HashLength, Protocol.HashLength)))
            throw new InvalidDataException($"chunk {header.Seq} of shard {header.Shard} (offset {header.Offset}, {body.Length - Protocol.ChunkHeaderLength} bytes) does not match the stream's signed hash");
    }

    /// <summary>Checks an End's signature; throws when it is not the coordinator's.</summary>
    public void VerifyEnd(in End end)
    {
        if (!Run.VerifyEnd(end))
            throw new InvalidDataException($"end of the stream at chunk {end.FinalSeq} (offset {end.FinalOffset}) does not carry the stream's signature for this run (forged, or of another run of the stream)");
    }
}

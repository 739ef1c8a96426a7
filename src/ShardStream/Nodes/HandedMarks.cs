using ShardStream.Streaming;

namespace ShardStream.Nodes;

/// <summary>
/// What one link of a node to a child was handed, by where in the link's stream of chunk bytes:
/// per shard, the last chunk queued on it, marked every <see cref="Every"/> bytes. With what the
/// link wrote to the transport (<see cref="Link.ChunkBytesSent"/>) it says which chunks the child
/// surely received, counting the last bytes written as possibly lost in flight: the parent serves
/// the child no earlier than that when it asks for the shard again on another link (a rejoin in
/// place, an attach; docs/security.md, "A replay bought by joining again"). Used under the relay's lock.
/// </summary>
internal sealed class HandedMarks
{
    /// <summary>Marks kept at most: with a mark every 256 KiB (the default allowance's), they reach 256 MiB back, past the 64 MiB a child's queue holds.</summary>
    private const int MaxMarks = 1024;

    /// <summary>The least spacing of marks.</summary>
    private const long LeastEvery = 16 * 1024;

    private readonly long[] _last;
    private readonly long[] _stopped;
    private readonly List<(long At, long[] Last)> _marks = [];
    private readonly long _inFlight;
    private long _markedAt;

    /// <param name="link">The child's link.</param>
    /// <param name="child">The child's id.</param>
    /// <param name="shards">K.</param>
    /// <param name="inFlight">The most bytes a broken link may have had in flight (<see cref="NodeOptions.ResumeInFlightBytes"/>).</param>
    public HandedMarks(Link link, int child, int shards, long inFlight)
    {
        Link = link;
        Child = child;
        _inFlight = inFlight;
        Every = Math.Max(LeastEvery, inFlight / 64);
        _last = new long[shards];
        Array.Fill(_last, -1);
        _stopped = new long[shards];
        Array.Fill(_stopped, long.MaxValue);
        _markedAt = link.ChunkBytesQueued;
        _marks.Add((_markedAt, (long[])_last.Clone()));
    }

    public Link Link { get; }

    public int Child { get; }

    /// <summary>Bytes between two marks: a replay may begin this much earlier than the allowance says.</summary>
    public long Every { get; }

    /// <summary>Whether the in-flight allowance of this link's own serving was decided (once a shard it asks was handed on another link of the child).</summary>
    public bool AllowanceDecided { get; set; }

    /// <summary>That allowance: null when the child's grants were spent (<see cref="Delivered"/> then counts whatever was queued as received).</summary>
    public long? Allowance { get; set; }

    /// <summary>Whether any chunk of <paramref name="shard"/> was handed on this link.</summary>
    public bool Handed(int shard) => _last[shard] >= 0;

    /// <summary>A chunk was queued on the link.</summary>
    public void Note(Chunk chunk)
    {
        if (chunk.Seq > _last[chunk.Shard]) _last[chunk.Shard] = chunk.Seq;
        long at = Link.ChunkBytesQueued;
        if (at - _markedAt < Every) return;
        _markedAt = at;
        // Marks behind what may still be in flight are not needed, but the latest of them.
        long surely = Link.ChunkBytesSent - _inFlight;
        int drop = 0;
        while (drop + 1 < _marks.Count && _marks[drop + 1].At <= surely) drop++;
        if (_marks.Count - drop >= MaxMarks) drop++;
        if (drop > 0) _marks.RemoveRange(0, drop);
        _marks.Add((at, (long[])_last.Clone()));
    }

    /// <summary>
    /// The last chunk of <paramref name="shard"/> the child surely received on this link (or had
    /// before it asked there), -1 when none is known: the last one queued by the latest mark that
    /// lies <paramref name="allowance"/> bytes or more before what the link wrote to the transport
    /// (with none, the last one queued: the child's grants are spent); no later than where the
    /// child stopped taking the shard here (<see cref="Stop"/>).
    /// </summary>
    public long Delivered(int shard, long? allowance)
    {
        if (allowance is null) return Math.Min(_last[shard], _stopped[shard]);
        long surely = Link.ChunkBytesSent - allowance.Value;
        long last = -1;
        foreach (var (at, marks) in _marks)
        {
            if (at > surely) break;
            last = marks[shard];
        }
        return Math.Min(last, _stopped[shard]);
    }

    /// <summary>
    /// The child stopped taking <paramref name="shard"/> here (it detached it, or asked for it on
    /// another link): what the link wrote of it since, the child may have dropped, however long
    /// the link goes on with other shards. What it received of it stays what it was now.
    /// </summary>
    public void Stop(int shard, long? allowance) => _stopped[shard] = Math.Min(_stopped[shard], Delivered(shard, allowance));
}

using ShardStream.Streaming;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A node's fan-out: every chunk it has (produced or received) goes into the replay window and to
/// every child link subscribed to that chunk's shard. A new subscriber first gets what the window
/// holds from the sequence number it asked for, then the live chunks, with no gap and no
/// duplicate between the two (both happen under one lock). The coordinator's signed hash lists
/// travel the same way, each ahead of the chunks it covers, and are kept as long as the window
/// keeps one of their chunks, so that a new subscriber can check what is replayed to it.
/// </summary>
internal sealed class Relay
{
    private readonly object _lock = new();
    private readonly int _shardCount;
    private readonly ReplayWindow _window;
    private readonly List<Subscription>[] _subscribers;
    private readonly long[] _lastSeq;
    private readonly End?[] _ends;
    private readonly Queue<(long First, long Last, byte[] Frame)>[] _hashLists;
    private readonly long[] _lastListEnd;

    /// <summary>Hash lists kept per shard at most, whatever the window holds (4096 lists of up to 64 chunks).</summary>
    private const int MaxHashListsPerShard = 4096;
    private readonly TimeProvider _time;
    private readonly List<Chunk> _scratch = [];

    /// <summary>What child links that went away had not been sent, each kept until its timestamp (see <see cref="Reach"/>).</summary>
    private readonly List<(long Bytes, long Until)> _holds = [];
    private readonly long _holdTicks;

    public Relay(int shardCount, long windowBytes, TimeSpan windowAge, TimeProvider time)
    {
        _holdTicks = (long)Math.Min(long.MaxValue / 4.0, windowAge.TotalSeconds * time.TimestampFrequency);
        _shardCount = shardCount;
        _window = new ReplayWindow(shardCount, windowBytes, windowAge, time.TimestampFrequency);
        _subscribers = new List<Subscription>[shardCount];
        _lastSeq = new long[shardCount];
        _ends = new End?[shardCount];
        _hashLists = new Queue<(long, long, byte[])>[shardCount];
        _lastListEnd = new long[shardCount];
        for (int s = 0; s < shardCount; s++)
        {
            _hashLists[s] = new Queue<(long, long, byte[])>();
            _lastListEnd[s] = -1;
            _subscribers[s] = [];
            _lastSeq[s] = -1;
        }
        _time = time;
    }

    /// <summary>Bytes held by the replay window.</summary>
    public long WindowBytes
    {
        get
        {
            lock (_lock) return _window.Bytes;
        }
    }

    /// <summary>Keeps and forwards a chunk (the caller keeps its own reference).</summary>
    public void Publish(Chunk chunk)
    {
        lock (_lock) PublishLocked(chunk, null, null);
    }

    /// <summary>
    /// Keeps and forwards a hash list just signed and then the chunks it covers, in order (the
    /// coordinator's source; the caller keeps its references): as <see cref="PublishHashList"/>
    /// and then <see cref="Publish"/> for each chunk, except that a child gets the list in one item
    /// of its queue with the first of its chunks it is sent, so that its writer wakes once for
    /// both and sends them together. Queued apart, the list woke the writer, which could send it
    /// before the chunk was queued: two sends, and two wake-ups, per chunk of a live source. A
    /// child whose writer is idle is sent the chunk on the caller's thread (a live source's every
    /// chunk; a send never blocks: FramedConnection.SendInline).
    /// </summary>
    public void PublishSigned(in HashList list, byte[] frame, List<Chunk> chunks)
    {
        long first = (long)list.FirstSeq, last = first + (long)(list.Count - 1) * _shardCount;
        lock (_lock)
        {
            _owed.Clear();
            var lists = _hashLists[list.Shard];
            if (last > _lastListEnd[list.Shard])
            {
                _lastListEnd[list.Shard] = last;
                lists.Enqueue((first, last, frame));
                while (lists.Count > MaxHashListsPerShard) lists.Dequeue();
                foreach (var sub in _subscribers[list.Shard])
                    if (last >= sub.FromSeq && first < sub.UntilSeq) _owed.Add(sub.Link);
            }
            foreach (var chunk in chunks) PublishLocked(chunk, _owed, frame);
            // A child owed the list that got none of its chunks (none of them was for it): the list alone, as PublishHashList sends it.
            foreach (var link in _owed) link.Send(frame);
            _owed.Clear();
        }
    }

    /// <summary>The links still owed the hash list being published with its chunks (see <see cref="PublishSigned"/>). Used under the lock.</summary>
    private readonly List<Link> _owed = [];

    /// <summary>
    /// <see cref="Publish"/> under the lock; a link in <paramref name="owed"/> gets
    /// <paramref name="frame"/> with the chunk (and leaves the list). Called under the lock.
    /// </summary>
    private void PublishLocked(Chunk chunk, List<Link>? owed, byte[]? frame)
    {
        if (chunk.Seq <= _lastSeq[chunk.Shard]) return;
        _lastSeq[chunk.Shard] = chunk.Seq;
        long now = _time.GetTimestamp();
        _window.Add(chunk, now, Reach(now));
        var lists = _hashLists[chunk.Shard];
        long oldest = _window.OldestSeq(chunk.Shard);
        while (lists.TryPeek(out var head) && head.Last < oldest) lists.Dequeue();
        var subscribers = _subscribers[chunk.Shard];
        int sent = 0;
        for (int i = subscribers.Count - 1; i >= 0; i--)
        {
            var sub = subscribers[i];
            if (chunk.Seq < sub.FromSeq) continue;
            // A fill (a bounded subscription) is done once the stream reaches its end point.
            if (chunk.Seq >= sub.UntilSeq) subscribers.RemoveAt(i);
            else if (sub.Link.TrySend(chunk, owed is not null && owed.Remove(sub.Link) ? frame : null, sendInline: owed is not null)) sent++;
            else
            {
                Hold(sub.Link, now);
                subscribers.RemoveAt(i);
            }
        }
        if (sent > 0) ShardStreamMetrics.Sent.Add((long)sent * chunk.Length, ShardStreamMetrics.Shard(chunk.Shard));
        // The shard's last chunk, with the stream's end known already: the shard ends here (see PublishEnd).
        if (_final is { } final && chunk.Seq >= LastChunkOf(chunk.Shard, (long)final.FinalSeq)) EndShard(chunk.Shard, final with { Shard = (byte)chunk.Shard });
    }

    /// <summary>
    /// Keeps and forwards a signed hash list (already checked, or just signed), ahead of the
    /// chunks it covers. <paramref name="frame"/> is the encoded frame, shared by every child.
    /// </summary>
    public void PublishHashList(in HashList list, byte[] frame)
    {
        long first = (long)list.FirstSeq, last = first + (long)(list.Count - 1) * _shardCount;
        lock (_lock)
        {
            var lists = _hashLists[list.Shard];
            if (last <= _lastListEnd[list.Shard]) return; // a replay of one we have
            _lastListEnd[list.Shard] = last;
            lists.Enqueue((first, last, frame));
            while (lists.Count > MaxHashListsPerShard) lists.Dequeue();
            foreach (var sub in _subscribers[list.Shard])
                if (last >= sub.FromSeq && first < sub.UntilSeq) sub.Link.Send(frame);
        }
    }

    /// <summary>
    /// Forwards the end of a shard to its subscribers, now and to later ones. The end is the
    /// stream's (one signature for every shard): every other shard whose last chunk this node has
    /// relayed ends here too, and one whose last chunk is still to come ends right after it. So a
    /// peer that has every chunk ends every shard for its children, even a shard whose End it did
    /// not read before it finished and closed its parents: its children take the rest from it
    /// after the end, and need an End to finish (docs/resilience.md, "Orphans").
    /// </summary>
    public void PublishEnd(End end)
    {
        lock (_lock)
        {
            _final ??= end;
            EndShard(end.Shard, end);
            for (int s = 0; s < _shardCount; s++)
                if (s != end.Shard && _lastSeq[s] >= LastChunkOf(s, (long)end.FinalSeq)) EndShard(s, end with { Shard = (byte)s });
        }
    }

    /// <summary>The stream's end, once an End of any shard came (null before).</summary>
    private End? _final;

    /// <summary>The last chunk of <paramref name="shard"/> in a stream of <paramref name="finalSeq"/> chunks (-1: it has none).</summary>
    private long LastChunkOf(int shard, long finalSeq)
    {
        long last = finalSeq - 1;
        if (last < shard) return -1;
        return last - Mod(last - shard, _shardCount);
    }

    private static long Mod(long a, int k) => ((a % k) + k) % k;

    /// <summary>Ends one shard for its subscribers, once. Called under the lock.</summary>
    private void EndShard(int shard, End end)
    {
        if (_ends[shard] is not null) return;
        _ends[shard] = end;
        foreach (var sub in _subscribers[shard])
            if (sub.UntilSeq == long.MaxValue) sub.Link.Send(end.Write);
    }

    /// <summary>
    /// Serves <paramref name="shard"/> to <paramref name="link"/> from <paramref name="fromSeq"/>:
    /// replays the window, then goes live. Returns the first sequence number the link will get:
    /// the shard's first chunk at or after <paramref name="fromSeq"/> (<see cref="Chunk.FirstOfShardFrom"/>:
    /// a joiner asks every shard from one join point), or a later one when the window no longer
    /// reaches back that far.
    /// With <paramref name="untilSeq"/> (a fill), only the chunks before that one are sent, and
    /// neither the shard's end nor anything after.
    /// </summary>
    public long Subscribe(Link link, int shard, long fromSeq, long untilSeq = long.MaxValue)
    {
        lock (_lock)
        {
            if (_retired is { } why)
            {
                // Its run is over: what it holds is another run's stream under the same key.
                link.Abort(why);
                return fromSeq;
            }
            fromSeq = Chunk.FirstOfShardFrom(shard, fromSeq, _shardCount);
            _scratch.Clear();
            long first = _window.CopyFrom(shard, fromSeq, _scratch);
            if (_scratch.Count == 0 && fromSeq <= _lastSeq[shard])
            {
                // Everything from fromSeq was received and already dropped: the next live chunk is the earliest.
                first = _lastSeq[shard] + _shardCount;
            }
            foreach (var (listFirst, last, frame) in _hashLists[shard])
                if (last >= first && listFirst < untilSeq) link.Send(frame);
            foreach (var chunk in _scratch)
            {
                if (chunk.Seq < untilSeq && link.TrySend(chunk)) ShardStreamMetrics.Sent.Add(chunk.Length, ShardStreamMetrics.Shard(shard));
                chunk.Release();
            }
            _scratch.Clear();
            bool bounded = untilSeq != long.MaxValue;
            // A fill whose end the stream has passed is complete with the replay.
            if (!bounded || _lastSeq[shard] + _shardCount < untilSeq) _subscribers[shard].Add(new Subscription(link, first, untilSeq));
            if (!bounded && _ends[shard] is { } end) link.Send(end.Write);
            return first;
        }
    }

    /// <summary>What the window holds now: its chunks and memory over all shards, and the oldest and newest kept chunk of <paramref name="shard"/> (-1 when none).</summary>
    public (int Chunks, long Bytes, long Oldest, long Newest) WindowOf(int shard)
    {
        lock (_lock) return (_window.Count, _window.Bytes, _window.OldestSeq(shard), _window.NewestSeq(shard));
    }

    /// <summary>
    /// How long the window has held chunk <paramref name="seq"/> of <paramref name="shard"/>:
    /// <see cref="TimeSpan.MaxValue"/> when it has dropped it already, null when it has not taken it yet.
    /// </summary>
    public TimeSpan? HeldFor(int shard, long seq)
    {
        long? at;
        lock (_lock) at = _window.AddedAt(shard, seq);
        return at switch
        {
            null => null,
            long.MinValue => TimeSpan.MaxValue,
            long t => _time.GetElapsedTime(t),
        };
    }

    /// <summary>Stops serving one shard to <paramref name="link"/>.</summary>
    public void Unsubscribe(Link link, int shard)
    {
        lock (_lock) _subscribers[shard].RemoveAll(s => s.Link == link);
    }

    /// <summary>
    /// The links that receive <paramref name="shard"/> from this node now (closed ones left out, as
    /// in <see cref="Subscribers"/>); with <paramref name="live"/>, only those sent it from here on
    /// (a fill, which ends at a chunk, left out).
    /// </summary>
    public List<Link> SubscribersOf(int shard, bool live = false)
    {
        lock (_lock) return _subscribers[shard].Where(s => !live || s.UntilSeq == long.MaxValue).Select(s => s.Link).Where(l => !l.Closed.IsCompleted).ToList();
    }

    /// <summary>Stops serving every shard to <paramref name="link"/> (it closed).</summary>
    public void Unsubscribe(Link link)
    {
        lock (_lock)
        {
            Hold(link, _time.GetTimestamp());
            foreach (var list in _subscribers)
                list.RemoveAll(s => s.Link == link);
        }
    }

    /// <summary>
    /// How much further back than its byte bound the window reaches now: the most any child has
    /// queued and not yet been sent, or had when it went away (for the window's age after),
    /// counted as the window counts (<see cref="Chunk.Footprint"/>: a short chunk holds a whole
    /// pooled buffer; counted by payload, the reach fell short by what the buffers held beyond it). A
    /// child is that far behind this node, and its own children further still; when it freezes,
    /// everything since stays in its queue while this node runs on, and when it dies, its children
    /// resume here (docs/resilience.md, "Replay window"). Bounded by the child queue limit.
    /// Called under the lock.
    /// </summary>
    private long Reach(long now)
    {
        long reach = 0;
        foreach (var list in _subscribers)
            foreach (var sub in list)
                reach = Math.Max(reach, sub.Link.ChunkFootprintBacklog);
        if (_holds.Count > 0) _holds.RemoveAll(h => h.Until < now);
        foreach (var (bytes, _) in _holds) reach = Math.Max(reach, bytes);
        return reach;
    }

    /// <summary>Remembers what <paramref name="link"/> (going away) was never sent, for the window's age. Called under the lock.</summary>
    private void Hold(Link link, long now)
    {
        long backlog = link.ChunkFootprintBacklog;
        if (backlog <= 0) return;
        if (_holds.Count >= MaxHolds) _holds.RemoveAt(0);
        _holds.Add((backlog, now + _holdTicks));
    }

    /// <summary>Holds kept at most (the oldest goes first; each is two numbers).</summary>
    private const int MaxHolds = 1024;

    /// <summary>
    /// The most bytes queued at one served link that keeps up (the oldest frame in its queue
    /// younger than <paramref name="keepsUp"/>; closing and closed links left out): what the
    /// source's pacing looks at before each chunk (<c>StreamSource.PaceAsync</c>), without the
    /// lists <see cref="Subscribers"/> makes.
    /// </summary>
    public long MostQueuedKeepingUp(TimeSpan keepsUp)
    {
        long most = 0;
        lock (_lock)
        {
            foreach (var list in _subscribers)
                foreach (var sub in list)
                {
                    var l = sub.Link;
                    if (l.KeepsUp(keepsUp)) most = Math.Max(most, l.QueuedBytes);
                }
        }
        return most;
    }

    /// <summary>
    /// The links served now, each once. A closed link is left out at once: it is unsubscribed by a
    /// continuation of its close, which a busy thread pool may run late.
    /// </summary>
    public List<Link> Subscribers()
    {
        lock (_lock) return _subscribers.SelectMany(l => l).Select(s => s.Link).Where(l => !l.Closed.IsCompleted).Distinct().ToList();
    }

    /// <summary>Releases the window.</summary>
    public void Clear()
    {
        lock (_lock) _window.Clear();
    }

    private string? _retired;

    /// <summary>
    /// Ends this relay's run (the coordinator started a new one): its window is released, every
    /// child it serves is cut off, and a subscription that comes later (an attach whose handshake
    /// began before) is cut off at once. Chunks of two runs under one key carry the same seqs and
    /// valid signatures: a child served the old run's window after it had moved to the new run
    /// wrote the old run's bytes in the new run's place (RejoinNetnsTests, sha256 differed).
    /// </summary>
    public void Retire(string reason)
    {
        List<Link> served;
        lock (_lock)
        {
            _retired = reason;
            _window.Clear();
            served = _subscribers.SelectMany(l => l).Select(s => s.Link).Distinct().ToList();
            foreach (var list in _subscribers) list.Clear();
        }
        foreach (var link in served) link.Abort(reason);
    }

    private readonly record struct Subscription(Link Link, long FromSeq, long UntilSeq);
}

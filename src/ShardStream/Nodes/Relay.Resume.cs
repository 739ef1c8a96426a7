using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>
/// A child that asks this node again for a shard it was served here on another link (a rejoin in
/// place on the coordinator's control link, an attach with the fresh ticket a rejoin or a Move
/// gives it) is served from no earlier than what that link may not have delivered: the chunks
/// queued on it after the last <see cref="NodeOptions.ResumeInFlightBytes"/> bytes it wrote to the
/// transport, and those it never wrote. An honest child that lost its link lacks at most those;
/// a stranger that says "chunk 0" each time is not sent the window again each time
/// (docs/security.md, "A replay bought by joining again").
/// </summary>
internal sealed partial class Relay
{
    /// <summary>Serves a child again with its last bytes in flight counted lost this many times per <see cref="GrantWindow"/>; past that, whatever its links were queued counts as received (it goes on at the live edge).</summary>
    internal const int GrantsPerChild = 3;

    /// <summary>See <see cref="GrantsPerChild"/>.</summary>
    internal static readonly TimeSpan GrantWindow = TimeSpan.FromMinutes(1);

    /// <summary>A child's links remembered at most (a stranger may keep every link it attached with open); the oldest is folded into what it received.</summary>
    private const int MaxLinksPerChild = 8;

    private readonly long _inFlight;
    private readonly ILogger _log;

    /// <summary>What each child (by id) was handed here, on each of its links.</summary>
    private readonly Dictionary<int, ChildLinks> _children = [];

    private sealed class ChildLinks
    {
        public ChildLinks(int shards)
        {
            Delivered = new long[shards];
            Array.Fill(Delivered, -1);
        }

        /// <summary>Per shard, the last chunk the child surely received on a link let go (-1: none).</summary>
        public long[] Delivered { get; }

        public List<HandedMarks> Links { get; } = [];

        /// <summary>When it was served again with bytes in flight counted lost, within the last <see cref="GrantWindow"/>.</summary>
        public Queue<long> Granted { get; } = new();

        /// <summary>When it last asked for a shard here.</summary>
        public long Seen { get; set; }
    }

    /// <summary>
    /// Notes that <paramref name="child"/> asks for <paramref name="shard"/> on <paramref name="link"/>
    /// from <paramref name="fromSeq"/>, which it raises past what the child's other links here surely
    /// delivered; those links are sent the shard no more. Returns the marks of this link. Called under the lock.
    /// </summary>
    private HandedMarks ResumeFloor(Link link, int child, int shard, ref long fromSeq)
    {
        long now = _time.GetTimestamp();
        ForgetChildren(now);
        if (!_children.TryGetValue(child, out var record)) _children[child] = record = new ChildLinks(_shardCount);
        record.Seen = now;
        var marks = record.Links.Find(m => m.Link == link);
        if (marks is null)
        {
            marks = new HandedMarks(link, child, _shardCount, _inFlight);
            record.Links.Add(marks);
        }
        long delivered = record.Delivered[shard];
        foreach (var other in record.Links)
        {
            if (other == marks || !other.Handed(shard)) continue;
            if (!marks.AllowanceDecided)
            {
                marks.Allowance = Grant(record, now);
                marks.AllowanceDecided = true;
            }
            delivered = Math.Max(delivered, other.Delivered(shard, marks.Allowance));
        }
        record.Delivered[shard] = delivered;
        long? allowance = marks.AllowanceDecided ? marks.Allowance : _inFlight;
        // It asks for the shard here: its other links are sent it no more.
        var subscribers = _subscribers[shard];
        for (int i = subscribers.Count - 1; i >= 0; i--)
        {
            var sub = subscribers[i];
            if (sub.Marks is not { } m || m == marks || m.Child != child || sub.UntilSeq != long.MaxValue) continue;
            m.Stop(shard, allowance);
            Hold(sub.Link, now);
            subscribers.RemoveAt(i);
        }
        // A closed link wrote all it will: what it delivered is kept, and the link let go.
        for (int i = record.Links.Count - 1; i >= 0; i--)
            if (record.Links[i] != marks && record.Links[i].Link.Closed.IsCompleted) LetGo(record, i, allowance);
        while (record.Links.Count > MaxLinksPerChild) LetGo(record, record.Links[0] == marks ? 1 : 0, allowance);
        if (delivered >= fromSeq)
        {
            if (allowance is { } inFlight) NodeLog.ServingAfterDelivered(_log, link.Name, shard, fromSeq, delivered, inFlight);
            else NodeLog.ServingAtLiveEdge(_log, link.Name, shard, fromSeq, delivered, GrantsPerChild, GrantWindow.TotalSeconds);
            fromSeq = delivered + 1;
        }
        return marks;
    }

    /// <summary>The in-flight allowance for a child served again now: <see cref="NodeOptions.ResumeInFlightBytes"/> while it has grants left, else none.</summary>
    private long? Grant(ChildLinks record, long now)
    {
        long window = (long)(GrantWindow.TotalSeconds * _time.TimestampFrequency);
        while (record.Granted.TryPeek(out long at) && now - at > window) record.Granted.Dequeue();
        if (record.Granted.Count >= GrantsPerChild) return null;
        record.Granted.Enqueue(now);
        return _inFlight;
    }

    /// <summary>Keeps what link <paramref name="i"/> of the child delivered, and forgets the link. Called under the lock.</summary>
    private void LetGo(ChildLinks record, int i, long? allowance)
    {
        var marks = record.Links[i];
        for (int s = 0; s < _shardCount; s++)
            record.Delivered[s] = Math.Max(record.Delivered[s], marks.Delivered(s, allowance));
        record.Links.RemoveAt(i);
    }

    /// <summary>
    /// Forgets children whose links have all closed and that asked for nothing for the window's
    /// age: every chunk they were sent has left the window since. Called under the lock.
    /// </summary>
    private void ForgetChildren(long now)
    {
        if (_children.Count == 0) return;
        List<int>? gone = null;
        foreach (var (id, record) in _children)
            if (now - record.Seen > _holdTicks && record.Links.TrueForAll(m => m.Link.Closed.IsCompleted)) (gone ??= []).Add(id);
        if (gone is null) return;
        foreach (int id in gone) _children.Remove(id);
    }
}

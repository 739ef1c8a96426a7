using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A parent that sends nothing of a shard (version 14). A relay that keeps its link alive with
/// heartbeats and withholds every chunk, hash list and End of a shard is no silent link: no failure
/// detector fires, and with one shard no other shard runs ahead to fill the reassembler's bound.
/// Its children stalled for as long as it stayed. The coordinator's heartbeats on the control link
/// now carry the stream's head (the next chunk sequence number at the source); a parent of a
/// shard that has sent no chunk of it for <see cref="WithheldAfter"/> (two heartbeat timeouts),
/// while the head heard that long ago was past the shard's next chunk due, is cut off as a lost
/// parent (event 9202) and the coordinator repairs it: no accusation (a parent starved by its own
/// parent looks the same). A parent that sends anything is slow at worst: the slow-child policy's.
/// </summary>
public sealed partial class Peer
{
    /// <summary>The most heads kept: a heartbeat interval is at least 1/64 of the timeout the check waits.</summary>
    private const int MaxHeads = 64;

    private readonly object _headGate = new();
    private readonly Queue<(long At, long Head)> _heads = new();
    private readonly long[] _lastChunkAt = new long[Protocol.MaxShards];
    private Link? _headsOf;

    /// <summary>How long a shard may get nothing from its parent while the source made it.</summary>
    private TimeSpan WithheldAfter => _options.HeartbeatTimeout * 2;

    /// <summary>The coordinator's heartbeat on <paramref name="link"/> said the stream's head.</summary>
    private void OnStreamHead(Link link, long head)
    {
        lock (_headGate)
        {
            if (link != _headsOf)
            {
                // A new control link (a rejoin, maybe a new run): the old heads say nothing of it.
                _heads.Clear();
                _headsOf = link;
            }
            if (_heads.Count == MaxHeads) _heads.Dequeue();
            _heads.Enqueue((Time.GetTimestamp(), head));
        }
    }

    /// <summary>The newest head heard on <paramref name="control"/> at least <paramref name="age"/> ago, or null.</summary>
    private long? HeadAtLeast(Link control, TimeSpan age)
    {
        lock (_headGate)
        {
            if (control != _headsOf) return null;
            long? head = null;
            // Drop every head older than the newest one old enough: that one is kept for the next checks.
            while (_heads.TryPeek(out var oldest) && Time.GetElapsedTime(oldest.At) >= age)
            {
                head = oldest.Head;
                if (_heads.Count == 1) break;
                var second = _heads.ElementAt(1);
                if (Time.GetElapsedTime(second.At) < age) break;
                _heads.Dequeue();
            }
            return head;
        }
    }

    private protected override void CheckParents(bool heldUp)
    {
        if (heldUp)
        {
            // This process stalled: what it did not read is no parent's fault. Every shard's wait
            // starts again now, as the failure detector excuses the pause on every link; else the
            // tick after a stall counted the stall and cut parents whose chunks waited unread.
            long now = Time.GetTimestamp();
            for (int shard = 0; shard < _shardCount; shard++) Volatile.Write(ref _lastChunkAt[shard], now);
            return;
        }
        // A control link that closed (a rejoin under way, the coordinator stopping) says no new
        // head: the parents this peer keeps meanwhile are not judged on what it heard before.
        if (_control is not { IsClosing: false } control || _reassembler is not { } reassembler || reassembler.IsComplete) return;
        var after = WithheldAfter;
        if (HeadAtLeast(control, after) is not { } head) return;
        for (int shard = 0; shard < _shardCount; shard++)
        {
            Link? parent;
            long since;
            lock (_gate) (parent, since) = (_parentOfShard.GetValueOrDefault(shard), _parentSince[shard]);
            // Bytes from it waiting unread: this peer is late, not the parent.
            if (parent is null || parent.IsClosing || IsCoordinator(parent) || parent.HasUnreadInput) continue;
            // A parent that took the shard over lately, or sent some of it lately, is not withholding it.
            if (Time.GetElapsedTime(since) < after || Time.GetElapsedTime(Volatile.Read(ref _lastChunkAt[shard])) < after) continue;
            long next = reassembler.NextSeqOf(shard);
            if (next >= head) continue;
            BoundsLog.ShardWithheld(Log, parent.Name, shard, after.TotalSeconds, next, head);
            parent.CloseAsync(GoodbyeCode.Normal, $"sent no chunk of shard {shard} for {after.TotalSeconds:0.#} s, though the source had made chunk {next} of it by then")
                .Observe(Log, $"{parent.Name}: closing");
        }
    }
}

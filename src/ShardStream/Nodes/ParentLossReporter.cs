using Microsoft.Extensions.Logging;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A peer's side of repair: when a parent link closes, it tells the coordinator which shards were
/// lost there and from which chunk (ParentLost), with the violation when the parent was cut off
/// for what it sent, and the cause when it was cut off for a lag never made up; a parent that cut
/// this peer off as too slow ends the run instead. It owns the parents this peer cut off for room,
/// whose report waits until there is room (see <see cref="ReportWhenRoomAsync"/>), and the
/// reports no Move has answered yet (see <see cref="Unanswered"/>).
/// </summary>
internal sealed class ParentLossReporter(PeerOptions options, IPeerParents peer, ShardStalls stalls, ILogger log, TimeProvider time, CancellationToken stopping)
{
    /// <summary>Parent links this peer cut off because a chunk they sent had no room, with the lagging shard and its next chunk then.</summary>
    private readonly Dictionary<Link, (int Shard, long NextSeq)> _cutForRoom = [];

    /// <summary>This peer cut <paramref name="sender"/> off because a chunk it sent had no room while <paramref name="laggingShard"/> lagged.</summary>
    public void CutForRoom(Link sender, int laggingShard, long nextSeq)
    {
        lock (_cutForRoom) _cutForRoom[sender] = (laggingShard, nextSeq);
    }

    /// <summary>Parent links this peer cut off for a lag never made up (event 9204), whose report says so (version 15).</summary>
    private readonly HashSet<Link> _cutForLag = [];

    /// <summary>This peer cuts <paramref name="parent"/> off for a lag never made up: its report says so, and the coordinator moves this peer elsewhere.</summary>
    public void CutForLag(Link parent)
    {
        lock (_cutForLag) _cutForLag.Add(parent);
    }

    /// <summary>Called when a parent link's close is handled, before anything else (tests hold it there, as a busy machine holds the thread pool).</summary>
    public Action<Link>? ClosedHandling { get; set; }

    /// <summary>A parent link closed: the coordinator hears which shards it lost there, unless the stream is complete or the peer is leaving.</summary>
    public void OnParentClosed(Link link, ulong parentId, CloseReason closed)
    {
        ClosedHandling?.Invoke(link);
        // Taken first, whatever follows: the note goes with the link.
        var whenCutOff = peer.TakeShardsWhenCutOff(link);
        bool lagged;
        lock (_cutForLag) lagged = _cutForLag.Remove(link);
        string reason = closed.Text;
        if (stopping.IsCancellationRequested || peer.Leaving) return;
        // A parent cut off for what it sent is reported even when the stream completed meanwhile
        // (from another parent): the coordinator refuses the liar from then on. (A fresh-clone CI
        // lost that report: the viewer completed between the check and the send, and then its
        // control link, closing, dropped it.)
        if (peer.Reassembler.IsComplete && !closed.IsViolation) return;
        var lost = peer.TakeShardsOf(link);
        // And even when a move gave its shards another parent before this ran (a CI run lost the
        // report so: the liar had the whole stream and left, and the coordinator moved this peer
        // first): it is accused with the shards it served when it sent what failed.
        var accused = closed.IsViolation ? [.. lost, .. whenCutOff.Where(s => !lost.Any(l => l.Shard == s.Shard))] : lost;
        if (accused.Length == 0) return;
        if (lost.Length > 0 && link.ReceivedGoodbye == GoodbyeCode.TooSlow)
        {
            // The parent is fine; this peer could not keep up. Say so and stop, rather than
            // hang without a parent; the coordinator then moves this peer's own children.
            peer.Fail(link.ReceivedGoodbyeReason is { Length: > 0 } why ? why : $"parent {parentId} cut this peer off: {reason}");
            return;
        }
        if (!peer.Reassembler.IsComplete) foreach (var s in lost) stalls.Stalled(s.Shard);
        if (closed.IsViolation)
        {
            string violation = closed.Text;
            // Nothing it sent after its last good chunk was written or forwarded; the coordinator
            // hears why, moves this peer and the liar's other children, and refuses the liar.
            PeerLog.ParentCutOff(log, parentId, string.Join(",", accused.Select(s => s.Shard)), violation);
            Report(new ParentLost(parentId, accused, violation), lost);
            return;
        }
        (int Shard, long NextSeq) lagging;
        bool forRoom;
        lock (_cutForRoom) forRoom = _cutForRoom.Remove(link, out lagging);
        if (forRoom && !lost.Any(s => s.Shard == lagging.Shard))
        {
            ReportWhenRoomAsync(parentId, lost.Select(s => s.Shard).ToArray(), lagging, reason).Observe(log, $"parent {parentId}: reporting it lost");
            return;
        }
        PeerLog.ParentLost(log, parentId, string.Join(",", lost.Select(s => s.Shard)), reason);
        // The cause only to a coordinator that reads it (the control link may be a rejoin's since the cut).
        Report(new ParentLost(parentId, lost, Cause: lagged && peer.Version >= Protocol.LossCauseVersion ? LossCause.Lag : LossCause.Lost), lost);
    }

    /// <summary>
    /// An attach to <paramref name="parentId"/> (a Move's, or a Welcome's) failed: the coordinator
    /// hears of it on <paramref name="control"/>, the control link the Move or the Welcome came on,
    /// for <paramref name="shards"/>, those no later move took over.
    /// </summary>
    public void AttachFailed(Link control, ulong parentId, ShardStart[] shards)
    {
        if (shards.Length == 0) return;
        control.Send(new ParentLost(parentId, shards).Write);
        Reported(parentId, shards);
    }

    /// <summary>
    /// A parent cut off for room (it sent a chunk of a shard that ran too far ahead) is reported
    /// lost once the lagging shard has moved on, or after a heartbeat timeout: reported at once,
    /// the coordinator would send this peer back to it, it would send the same chunk, which would
    /// find no room again, and the second report would take an honest edge out of the plan as
    /// "cannot connect". Shards a move gave another parent meanwhile are not reported.
    /// </summary>
    private async Task ReportWhenRoomAsync(ulong parentId, byte[] shards, (int Shard, long NextSeq) lagging, string reason)
    {
        long start = time.GetTimestamp();
        try
        {
            while (peer.Reassembler.NextSeqOf(lagging.Shard) <= lagging.NextSeq && !peer.Reassembler.IsComplete && time.GetElapsedTime(start) < options.HeartbeatTimeout)
                await Task.Delay(TimeSpan.FromMilliseconds(50), time, stopping).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        if (peer.Reassembler.IsComplete || peer.Leaving) return;
        var lost = peer.WithoutParent(shards);
        if (lost.Length == 0) return;
        PeerLog.ParentLost(log, parentId, string.Join(",", lost.Select(s => s.Shard)), reason);
        Report(new ParentLost(parentId, lost), lost);
    }

    /// <summary>
    /// How long a shard reported lost may wait with no parent and no Move about it before the
    /// report is taken for unanswered: a connect timeout and two heartbeat timeouts (15 s by
    /// default). The coordinator answers at once, or a heartbeat interval later (an orphan sent to
    /// the same parent or to the coordinator again, 9301 and 9302), and a report that comes while
    /// a Move of the shard is still attaching is answered by that attach (it completes, or fails
    /// and is reported in its turn, within a connect timeout and a welcome timeout, the heartbeat
    /// timeout); one more heartbeat timeout is to spare.
    /// </summary>
    public TimeSpan UnansweredAfter => options.ConnectTimeout + options.HeartbeatTimeout * 2;

    /// <summary>Joins again for unanswered reports at most this many times within <see cref="UnansweredPeriod"/>.</summary>
    internal const int MaxUnansweredRejoins = 3;

    /// <summary>The period over which <see cref="MaxUnansweredRejoins"/> counts: ten <see cref="UnansweredAfter"/>s, 150 s by default.</summary>
    private TimeSpan UnansweredPeriod => UnansweredAfter * 10;

    /// <summary>
    /// Per shard, the last report that named it and no Move has answered yet: the parent it named,
    /// when it went, and the peer's move generation of the shard then (<see cref="IPeerParents.MoveGenerationOf"/>).
    /// </summary>
    private readonly Dictionary<int, (ulong Parent, long At, long Generation)> _unanswered = [];

    /// <summary>When this peer joined again for unanswered reports, within <see cref="UnansweredPeriod"/>, and when it last said it would not.</summary>
    private readonly Queue<long> _unansweredRejoins = new();
    private long _rejoinsSpentSaidAt;

    /// <summary>Sends <paramref name="report"/> to the coordinator on the control link; <paramref name="waitFor"/> then wait for a Move (<see cref="Reported"/>).</summary>
    private void Report(ParentLost report, ShardStart[] waitFor)
    {
        peer.SendToCoordinator(report.Write);
        Reported(report.ParentId, waitFor);
    }

    /// <summary>A report about <paramref name="parentId"/> went for <paramref name="shards"/>: each waits for a Move (or a parent) from now.</summary>
    private void Reported(ulong parentId, ShardStart[] shards)
    {
        var noted = shards.Select(s => (Shard: (int)s.Shard, Generation: peer.MoveGenerationOf(s.Shard))).ToArray();
        long now = time.GetTimestamp();
        lock (_unanswered)
            foreach (var (shard, generation) in noted) _unanswered[shard] = (parentId, now, generation);
    }

    /// <summary>
    /// Called on every tick while the control link is open. A report is answered once a Move
    /// about its shard is taken in (its attach then reports again if it fails) or the shard has a
    /// parent again. A shard still unanswered after <see cref="UnansweredAfter"/> was left with no
    /// parent by a path on which the coordinator sent no Move, and this peer reports a parent
    /// lost only once: it joins again in its place (the caller does), whose Welcome says where the
    /// plan has every shard, and is counted nowhere (a report sent again could not be told from a
    /// failed attach of a Move still on its way: it would count against that parent twice). Returns
    /// the shards to join again for (their wait starts again now: a rejoin that fails is tried once
    /// more after <see cref="UnansweredAfter"/>), or null; at most <see cref="MaxUnansweredRejoins"/>
    /// within <see cref="UnansweredPeriod"/>, after which it says so (event 1419) and waits.
    /// </summary>
    public (ulong Parent, int[] Shards, TimeSpan Waited)? Unanswered()
    {
        if (peer.Reassembler.IsComplete || peer.Leaving)
        {
            lock (_unanswered) _unanswered.Clear();
            return null;
        }
        int[] noted;
        lock (_unanswered) noted = [.. _unanswered.Keys];
        if (noted.Length == 0) return null;
        // Looked at outside this lock: the peer's own lock is taken under it nowhere.
        var answered = noted.Where(s => peer.ParentOf(s).Parent is not null).ToHashSet();
        var generations = noted.ToDictionary(s => s, peer.MoveGenerationOf);
        long now = time.GetTimestamp();
        lock (_unanswered)
        {
            foreach (int s in noted)
                if (_unanswered.TryGetValue(s, out var r) && (answered.Contains(s) || generations[s] != r.Generation)) _unanswered.Remove(s);
            var overdue = _unanswered.Where(kv => time.GetElapsedTime(kv.Value.At, now) >= UnansweredAfter).ToList();
            if (overdue.Count == 0) return null;
            var oldest = overdue.MinBy(kv => kv.Value.At);
            foreach (var (shard, r) in overdue) _unanswered[shard] = (r.Parent, now, r.Generation);
            int[] shards = [.. overdue.Select(kv => kv.Key).Order()];
            while (_unansweredRejoins.TryPeek(out long at) && time.GetElapsedTime(at, now) > UnansweredPeriod) _unansweredRejoins.Dequeue();
            if (_unansweredRejoins.Count >= MaxUnansweredRejoins)
            {
                if (_rejoinsSpentSaidAt == 0 || time.GetElapsedTime(_rejoinsSpentSaidAt, now) > UnansweredPeriod)
                {
                    _rejoinsSpentSaidAt = now;
                    RejoinLog.UnansweredRejoinsSpent(log, string.Join(",", shards), MaxUnansweredRejoins, UnansweredPeriod.TotalSeconds);
                }
                return null;
            }
            _unansweredRejoins.Enqueue(now);
            return (oldest.Value.Parent, shards, time.GetElapsedTime(oldest.Value.At, now));
        }
    }
}

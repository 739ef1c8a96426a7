using Microsoft.Extensions.Logging;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A peer's side of repair: when a parent link closes, it tells the coordinator which shards were
/// lost there and from which chunk (ParentLost), with the violation when the parent was cut off
/// for what it sent, and the cause when it was cut off for a lag never made up; a parent that cut
/// this peer off as too slow ends the run instead. It owns the parents this peer cut off for room,
/// whose report waits until there is room (see <see cref="ReportWhenRoomAsync"/>).
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
            peer.SendToCoordinator(new ParentLost(parentId, accused, violation).Write);
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
        peer.SendToCoordinator(new ParentLost(parentId, lost, Cause: lagged && peer.Version >= Protocol.LossCauseVersion ? LossCause.Lag : LossCause.Lost).Write);
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
        peer.SendToCoordinator(new ParentLost(parentId, lost).Write);
    }
}

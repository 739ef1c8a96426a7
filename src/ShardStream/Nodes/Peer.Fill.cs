using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A move under a parent that joined after this peer's position: the new parent holds each shard
/// only from its own join point (the first chunk it holds, which the coordinator puts in the
/// Move's entries), so it cannot replay what this peer still needs before that. The peer takes
/// those chunks from the coordinator first, on its control link (a Fill), and attaches to the new
/// parent once it has reached that point (docs/resilience.md, "A parent that joined later").
/// </summary>
public sealed partial class Peer
{
    /// <summary>
    /// When some of <paramref name="shards"/> are behind <paramref name="heldFrom"/>, the first
    /// chunk the new parent <paramref name="parentId"/> holds: asks the coordinator for the chunks
    /// before it and waits until they have come (or nothing came for a heartbeat timeout, or a
    /// later move took the shards over). The coordinator is the shards' parent meanwhile.
    /// The fill is asked on <paramref name="control"/>, the control link the Move came on: the
    /// coordinator allows a fill only to the session its Move was sent to, and a rejoin may have
    /// replaced that link (and session) since the Move was taken in.
    /// </summary>
    /// <returns>
    /// The shards still behind when <paramref name="control"/> closed before the fill was done
    /// (empty otherwise): they are not to be attached to the new parent, which would serve them
    /// from <paramref name="heldFrom"/> on and leave a gap the coordinator still holds. They wait
    /// for a rejoin in place, which asks the fill again on the new control link (<see cref="TakePendingFill"/>).
    /// </returns>
    private async Task<byte[]> FillBeforeAttachAsync(Link control, IEnumerable<byte> shards, ulong parentId, ulong heldFrom, long[] generations)
    {
        if (parentId == CoordinatorRole.ParentId || heldFrom == 0 || _version < Protocol.FillVersion) return [];
        var behind = Current(shards.Select(s => new ShardStart(s, (ulong)_reassembler!.NextSeqOf(s))).Where(s => s.FromSeq < heldFrom).ToArray(), generations);
        if (behind.Length == 0) return [];
        string names = string.Join(",", behind.Select(s => $"{s.Shard}@{s.FromSeq}"));
        RepairLog.FillBeforeMove(Log, names, parentId, heldFrom);
        List<(Link Old, byte[] Shards)> released;
        lock (_gate)
        {
            released = behind.Select(s => (s.Shard, Old: _parentOfShard.GetValueOrDefault(s.Shard))).Where(x => x.Old is not null && x.Old != control)
                .GroupBy(x => x.Old!).Select(g => (g.Key, g.Select(x => x.Shard).ToArray())).ToList();
            // Noted with the parent it takes: a rejoin in place can take its Welcome in before this wait sees the link closed.
            foreach (var s in behind)
            {
                SetParent(s.Shard, control);
                _pendingFills[s.Shard] = (parentId, heldFrom, control);
            }
        }
        foreach (var (old, moved) in released) ReleaseOldParent(old, moved);
        try
        {
            control.Send(new Fill(behind, heldFrom).Write);
            return await WaitForFillAsync(control, behind, names, parentId, heldFrom, generations).ConfigureAwait(false);
        }
        finally
        {
            // Done or given up (a broken-off fill stays noted for the rejoin): no longer this wait's.
            lock (_gate)
                foreach (var s in behind)
                    if (_pendingFills.TryGetValue(s.Shard, out var p) && p.Control == control && !control.IsClosing) _pendingFills.Remove(s.Shard);
        }
    }

    /// <summary>
    /// The most heartbeat timeouts a fill that moves no further is excused for input waiting unread
    /// on its control link, or for time this process did not run (the ceiling of the failure detector's wait): that input may be the other
    /// shards' stream and heartbeats, which a loaded host or a download just behind keeps waiting
    /// at every poll, while the fill itself has stopped.
    /// </summary>
    private const int MaxFillExcuse = 4;

    /// <summary>
    /// Waits for the fill of <paramref name="behind"/> (see <see cref="FillBeforeAttachAsync"/>).
    /// Until every shard has reached the new parent's first chunk; a fill that stops (the
    /// coordinator's window no longer reaches back) ends the wait after a heartbeat timeout in which
    /// nothing came. Time this peer was late itself is not the coordinator's silence: while bytes wait
    /// unread on <paramref name="control"/> (its read loop runs behind, as on a loaded host, and they
    /// may be the fill), and while this process did not run (its tick loop's pauses, and this wait's
    /// own turns that came a tick period late); unread input for at most <see cref="MaxFillExcuse"/>
    /// heartbeat timeouts since the fill last moved on. Given up then, the shards were attached to the new
    /// parent, which serves them from its first chunk on, and the chunks before it were skipped as
    /// "older than every replay window" (1712) while they waited to be read.
    /// </summary>
    private async Task<byte[]> WaitForFillAsync(Link control, ShardStart[] behind, string names, ulong parentId, ulong heldFrom, long[] generations)
    {
        var poll = TimeSpan.FromMilliseconds(20);
        var period = _options.HeartbeatInterval / 2;
        long lastMove = Time.GetTimestamp();
        long pausedThen = Interlocked.Read(ref _pausedTicks);
        var late = TimeSpan.Zero;
        long progress = -1;
        long turn = lastMove;
        // When the fill last moved on: unread input excuses the silence, but not past
        // MaxFillExcuse (the link's unread bytes may be the other shards' stream, not the fill).
        long lastProgress = lastMove;
        while (!Stopping.IsCancellationRequested && !_reassembler!.IsComplete)
        {
            var still = Current(behind, generations).Where(s => _reassembler.NextSeqOf(s.Shard) < (long)heldFrom).ToArray();
            if (still.Length == 0) return [];
            if (control.IsClosing)
            {
                // The rest of the fill went with the link; the coordinator still holds it.
                RepairLog.FillBrokenOff(Log, string.Join(",", still.Select(s => s.Shard)), heldFrom, still.Min(s => _reassembler.NextSeqOf(s.Shard)), parentId);
                return still.Select(s => s.Shard).ToArray();
            }
            long now = Time.GetTimestamp();
            // A turn a whole tick period late: this process did not run (the tick loop's rule).
            var gap = Time.GetElapsedTime(turn, now) - poll;
            turn = now;
            if (gap >= period) late += gap;
            long sum = still.Sum(s => _reassembler.NextSeqOf(s.Shard));
            if (sum != progress) lastProgress = now;
            if (sum != progress || (control.HasUnreadInput && Time.GetElapsedTime(lastProgress, now) <= _options.HeartbeatTimeout * MaxFillExcuse))
            {
                progress = sum;
                lastMove = now;
                pausedThen = Interlocked.Read(ref _pausedTicks);
                late = TimeSpan.Zero;
            }
            else if (Time.GetElapsedTime(lastMove, now) - Min(Max(late, TimeSpan.FromTicks(Interlocked.Read(ref _pausedTicks) - pausedThen)), _options.HeartbeatTimeout * MaxFillExcuse) > _options.HeartbeatTimeout)
            {
                RepairLog.FillStalled(Log, names, heldFrom, still.Min(s => _reassembler.NextSeqOf(s.Shard)), _options.HeartbeatTimeout.TotalSeconds, parentId);
                return [];
            }
            try
            {
                await Task.Delay(poll, Time, Stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return [];
            }
        }
        return [];
    }

    /// <summary>Shards waiting for a fill (or whose fill broke off with its control link), with the parent it is for, that parent's first chunk and the control link it was asked on (under the gate).</summary>
    private readonly Dictionary<byte, (ulong ParentId, ulong HeldFrom, Link Control)> _pendingFills = [];

    /// <summary>
    /// The fill that broke off for shards of <paramref name="entries"/> (a rejoin's Welcome, all
    /// under one parent) when that parent is the one the fill was for: the shards and the
    /// parent's first chunk (null when none). Each shard's pending fill is taken once.
    /// </summary>
    private (byte[] Shards, ulong HeldFrom)? TakePendingFill(IEnumerable<ShardAssignment> entries)
    {
        lock (_gate)
        {
            var taken = entries.Where(e => _pendingFills.TryGetValue(e.Shard, out var p) && p.ParentId == e.ParentId).Select(e => (e.Shard, _pendingFills[e.Shard].HeldFrom)).ToList();
            foreach (var (shard, _) in taken) _pendingFills.Remove(shard);
            return taken.Count == 0 ? null : (taken.Select(t => t.Shard).ToArray(), taken.Max(t => t.HeldFrom));
        }
    }

    /// <summary>
    /// What the fills still waited for leave missing, for the reason of a peer that stops before the
    /// end ("" when none): each shard's next chunk up to its new parent's first, which only the
    /// coordinator held (its fill broke off with the control link, or had not come).
    /// </summary>
    private string MissingFills()
    {
        lock (_gate)
        {
            if (_pendingFills.Count == 0) return "";
            return string.Concat(_pendingFills.GroupBy(p => (p.Value.ParentId, p.Value.HeldFrom)).Select(g =>
                $"; shard(s) {string.Join(",", g.Select(p => p.Key))} lack chunks {g.Min(p => _reassembler!.NextSeqOf(p.Key))} to {g.Key.HeldFrom - 1}, which only the coordinator held (its fill did not reach this peer; parent {g.Key.ParentId} holds them only from chunk {g.Key.HeldFrom})"));
        }
    }

    /// <summary>Forgets the fills that broke off for <paramref name="shards"/> (a later Move, or a rejoin that is not in place, says where they go now).</summary>
    private void ForgetPendingFills(IEnumerable<byte>? shards = null)
    {
        lock (_gate)
        {
            if (shards is null) _pendingFills.Clear();
            else foreach (byte shard in shards) _pendingFills.Remove(shard);
        }
    }
}

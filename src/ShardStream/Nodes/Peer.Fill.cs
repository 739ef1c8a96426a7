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
    private async Task FillBeforeAttachAsync(Link control, IEnumerable<byte> shards, ulong parentId, ulong heldFrom, long[] generations)
    {
        if (parentId == CoordinatorRole.ParentId || heldFrom == 0 || _version < Protocol.FillVersion) return;
        var behind = Current(shards.Select(s => new ShardStart(s, (ulong)_reassembler!.NextSeqOf(s))).Where(s => s.FromSeq < heldFrom).ToArray(), generations);
        if (behind.Length == 0) return;
        string names = string.Join(",", behind.Select(s => $"{s.Shard}@{s.FromSeq}"));
        RepairLog.FillBeforeMove(Log, names, parentId, heldFrom);
        List<(Link Old, byte[] Shards)> released;
        lock (_gate)
        {
            released = behind.Select(s => (s.Shard, Old: _parentOfShard.GetValueOrDefault(s.Shard))).Where(x => x.Old is not null && x.Old != control)
                .GroupBy(x => x.Old!).Select(g => (g.Key, g.Select(x => x.Shard).ToArray())).ToList();
            foreach (var s in behind) SetParent(s.Shard, control);
        }
        foreach (var (old, moved) in released) ReleaseOldParent(old, moved);
        control.Send(new Fill(behind, heldFrom).Write);

        // Until every shard has reached the new parent's first chunk; a fill that stops (the
        // coordinator's window no longer reaches back, the link broke) ends the wait after a heartbeat timeout.
        long lastMove = Time.GetTimestamp();
        long progress = -1;
        while (!Stopping.IsCancellationRequested && !control.IsClosing && !_reassembler!.IsComplete)
        {
            var still = Current(behind, generations);
            if (still.Length == 0) return;
            long sum = 0;
            bool done = true;
            foreach (var s in still)
            {
                long next = _reassembler.NextSeqOf(s.Shard);
                sum += next;
                if (next < (long)heldFrom) done = false;
            }
            if (done) return;
            if (sum != progress)
            {
                progress = sum;
                lastMove = Time.GetTimestamp();
            }
            else if (Time.GetElapsedTime(lastMove) > _options.HeartbeatTimeout)
            {
                RepairLog.FillStalled(Log, names, heldFrom, still.Min(s => _reassembler.NextSeqOf(s.Shard)), _options.HeartbeatTimeout.TotalSeconds, parentId);
                return;
            }
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), Time, Stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}

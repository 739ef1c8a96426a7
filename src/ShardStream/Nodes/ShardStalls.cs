using System.Diagnostics;

namespace ShardStream.Nodes;

/// <summary>
/// A peer's intake per shard, for the metrics and the status line: bytes accepted, the end of the
/// newest chunk accepted, and stalls (a shard whose parent was lost, until a chunk or the shard's
/// End comes from the new parent, or the stream is complete). Lock-free: called on the receive path.
/// </summary>
internal sealed class ShardStalls
{
    private readonly long[] _stalledSince = new long[Wire.Protocol.MaxShards];
    private readonly long[] _received = new long[Wire.Protocol.MaxShards];
    private long _newestEnd;

    /// <summary>Bytes accepted from parents, over all shards.</summary>
    public long ReceivedBytes
    {
        get
        {
            long sum = 0;
            for (int s = 0; s < _received.Length; s++) sum += Interlocked.Read(ref _received[s]);
            return sum;
        }
    }

    /// <summary>The stream offset just past the newest chunk accepted on any shard.</summary>
    public long NewestEnd => Interlocked.Read(ref _newestEnd);

    /// <summary>Shards stalled now.</summary>
    public int StalledShards => _stalledSince.Count(t => t != 0);

    /// <summary>A chunk of <paramref name="shard"/> was accepted: counts it, and ends the shard's stall if it had one.</summary>
    public void Received(int shard, int length, long end)
    {
        Interlocked.Add(ref _received[shard], length);
        long newest = Interlocked.Read(ref _newestEnd);
        while (end > newest)
        {
            long seen = Interlocked.CompareExchange(ref _newestEnd, end, newest);
            if (seen == newest) break;
            newest = seen;
        }
        ShardStreamMetrics.Received.Add(length, ShardStreamMetrics.Shard(shard));
        EndStall(shard);
    }

    /// <summary>
    /// The parent of <paramref name="shard"/> was lost: a stall starts (once), until the next chunk
    /// of the shard, its End, or the stream's completion (<see cref="Completed"/>). None starts
    /// once the stream is complete.
    /// </summary>
    public void Stalled(int shard)
    {
        if (Volatile.Read(ref _completed) != 0) return;
        if (Interlocked.CompareExchange(ref _stalledSince[shard], Stopwatch.GetTimestamp(), 0) != 0) return;
        ShardStreamMetrics.Stalls.Add(1, ShardStreamMetrics.Shard(shard));
        // The stream completed after the check above: Completed may have looked at this shard
        // before the stall began, and nothing else would end it. (Both sides fence: the exchange
        // above and the one in Completed.)
        if (Volatile.Read(ref _completed) != 0) EndStall(shard);
    }

    /// <summary>The shard's End came from its parent: it has everything of the shard, so its stall (if any) is over.</summary>
    public void ShardEnded(int shard) => EndStall(shard);

    /// <summary>
    /// The stream is complete: every stall still open ends now. A stall begun after a shard's last
    /// chunk had no chunk left to end it, so it stayed open for good (the status said a shard was
    /// stalled, and the stall had no duration).
    /// </summary>
    public void Completed()
    {
        if (Interlocked.Exchange(ref _completed, 1) != 0) return;
        for (int s = 0; s < _stalledSince.Length; s++) EndStall(s);
    }

    private int _completed;

    /// <summary>Ends the shard's stall, if it has one, and records how long it lasted.</summary>
    private void EndStall(int shard)
    {
        long since = Interlocked.Exchange(ref _stalledSince[shard], 0);
        if (since != 0) ShardStreamMetrics.StallDuration.Record(Stopwatch.GetElapsedTime(since).TotalSeconds, ShardStreamMetrics.Shard(shard));
    }
}

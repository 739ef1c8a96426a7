using System.Diagnostics;

namespace ShardStream.Nodes;

/// <summary>
/// A peer's intake per shard, for the metrics and the status line: bytes accepted, the end of the
/// newest chunk accepted, and stalls (a shard whose parent was lost, until a chunk comes from the
/// new parent). Lock-free: called on the receive path.
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
        long since = Interlocked.Exchange(ref _stalledSince[shard], 0);
        if (since != 0) ShardStreamMetrics.StallDuration.Record(Stopwatch.GetElapsedTime(since).TotalSeconds, ShardStreamMetrics.Shard(shard));
    }

    /// <summary>The parent of <paramref name="shard"/> was lost: a stall starts (once, until the next chunk).</summary>
    public void Stalled(int shard)
    {
        if (Interlocked.CompareExchange(ref _stalledSince[shard], Stopwatch.GetTimestamp(), 0) == 0)
            ShardStreamMetrics.Stalls.Add(1, ShardStreamMetrics.Shard(shard));
    }
}

using ShardStream.Nodes;

namespace ShardStream.Bench.Relay;

/// <summary>A coordinator and its peers on loopback TCP, in this process, streaming one source once.</summary>
internal static class ShardStreamOverlay
{
    public static async Task<(Shape Shape, Usage Usage, SourceHold Hold)> RunAsync(int shardCount, int peerCount, long? windowBytes, TimeSpan? windowAge, TimeSpan? signingInterval, bool mergeReads, Stream source, IProbe[] probes, CancellationToken cancellationToken)
    {
        var options = new CoordinatorOptions { ListenAddress = "127.0.0.1:0", ShardCount = shardCount, MinPeers = peerCount };
        if (windowBytes is { } w) options = options with { ReplayWindowBytes = w };
        if (windowAge is { } a) options = options with { ReplayWindowAge = a };
        if (signingInterval is { } si) options = options with { MinSigningInterval = si };
        if (mergeReads) options = options with { MergeShortReads = true };
        await using var coordinator = new Coordinator(options, loggerFactory: null);
        await coordinator.StartAsync(cancellationToken);
        var peers = new List<Peer>();
        try
        {
            // One at a time, so that ids and placement are the same every run.
            for (int i = 0; i < peerCount; i++)
            {
                var peerOptions = new PeerOptions { JoinAddress = coordinator.ListenAddress };
                if (windowBytes is { } bytes) peerOptions = peerOptions with { ReplayWindowBytes = bytes };
                if (windowAge is { } age) peerOptions = peerOptions with { ReplayWindowAge = age };
                var peer = new Peer(peerOptions);
                peers.Add(peer);
                await peer.StartAsync(cancellationToken);
            }
            var shape = Shape.From(coordinator.Snapshot());
            var meter = Usage.Start();
            var runs = peers.Select(p => p.RunAsync(new ProbeStream(probes[shape.IndexOf(p.Id)]), cancellationToken)).ToList();
            await coordinator.RunAsync(source, cancellationToken);
            await Task.WhenAll(runs);
            var usage = meter.Stop();
            // A peer moved to a parent whose replay window no longer held what it missed skips
            // those bytes (logged as a gap): the probes then fail on the first byte after the gap.
            var lossy = peers.Where(p => p.LostBytes > 0).Select(p => $"peer {p.Id} lost {p.LostBytes} bytes").ToList();
            if (lossy.Count > 0)
                throw new InvalidOperationException($"gaps in the stream (a peer was moved to a parent whose replay window did not reach back; a busy machine, a small --window-mib): {string.Join(", ", lossy)}");
            var (lists, histogram) = coordinator.SigningStats();
            return (shape, usage, new SourceHold(lists, histogram, coordinator.ChunksCut));
        }
        finally
        {
            foreach (var peer in peers) await peer.DisposeAsync();
        }
    }
}

/// <summary>How long the coordinator held chunks for their hash list's signature, and how many lists it signed.</summary>
internal sealed record SourceHold(long ListsSigned, long[] Histogram, long Chunks)
{
    /// <summary>The Hashes frames' bytes over <paramref name="payload"/>: per list its header and signature, per chunk its hash.</summary>
    public double WireOverhead(long payload) =>
        (ListsSigned * (double)(Wire.Protocol.FrameHeaderLength + 1 + 8 + 1 + Wire.Protocol.SignatureLength) + Chunks * (double)Wire.Protocol.HashLength) / payload;

    /// <summary>The hold time below which <paramref name="percent"/> % of the chunks were published, in ms (to the bucket's upper edge).</summary>
    public double Percentile(double percent)
    {
        long total = Histogram.Sum(), seen = 0;
        for (int i = 0; i < Histogram.Length; i++)
        {
            seen += Histogram[i];
            if (total > 0 && seen * 100.0 >= total * percent) return (i + 1) * SigningQueue.HoldBucketMicroseconds / 1000.0;
        }
        return double.NaN;
    }
}

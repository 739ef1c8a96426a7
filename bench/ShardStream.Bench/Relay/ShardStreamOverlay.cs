using ShardStream.Nodes;

namespace ShardStream.Bench.Relay;

/// <summary>A coordinator and its peers on loopback TCP, in this process, streaming one source once.</summary>
internal static class ShardStreamOverlay
{
    public static async Task<(Shape Shape, Usage Usage)> RunAsync(int shardCount, int peerCount, long? windowBytes, TimeSpan? windowAge, Stream source, IProbe[] probes, CancellationToken cancellationToken)
    {
        var options = new CoordinatorOptions { ListenAddress = "127.0.0.1:0", ShardCount = shardCount, MinPeers = peerCount };
        if (windowBytes is { } w) options = options with { ReplayWindowBytes = w };
        if (windowAge is { } a) options = options with { ReplayWindowAge = a };
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
            return (shape, meter.Stop());
        }
        finally
        {
            foreach (var peer in peers) await peer.DisposeAsync();
        }
    }
}

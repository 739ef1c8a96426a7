using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;

namespace ShardStream.Tests.Adversary;

/// <summary>A lying relay (a real peer on host "liar" behind a <see cref="TamperingTransport"/>) that joins first, then four honest viewers, and the first bytes.</summary>
internal static class LiarRelay
{
    /// <summary>
    /// Starts the relay and the viewers, writes the first 100,000 bytes and waits until every
    /// viewer wrote some; returns the relay (the caller disposes it) and the viewers whose every
    /// shard comes from it. The coordinator has room for two children: the liar is first, and the
    /// later joiners hang under it or the other. The viewers run on <paramref name="viewersTime"/> when given.
    /// </summary>
    public static async Task<(Peer Relay, List<(Peer Peer, MemoryStream Output, Task Run, string Host)> Victims)> StartAsync(
        Overlay overlay, TamperingTransport liar, TimeSpan heartbeatTimeout, ILoggerFactory loggers, Func<PeerOptions, PeerOptions>? configure = null, TimeProvider? viewersTime = null)
    {
        var options = new PeerOptions
        {
            JoinAddress = overlay.Coordinator.ListenAddress,
            ListenAddress = "liar:1",
            HeartbeatTimeout = heartbeatTimeout,
            HeartbeatInterval = heartbeatTimeout / 5,
        };
        var relay = new Peer(configure?.Invoke(options) ?? options, liar, loggers);
        await relay.StartAsync(CancellationToken.None);
        _ = Task.Run(() => relay.RunAsync(Stream.Null, CancellationToken.None));
        for (int i = 0; i < 4; i++) await overlay.AddPeerAsync(configure: configure, time: viewersTime);
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, seed: 1));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten > 0), "every viewer wrote the first bytes");
        var victims = overlay.Peers.Where(p => p.Peer.ParentIds().All(id => id == relay.Id)).ToList();
        Assert.NotEmpty(victims);
        return (relay, victims);
    }
}

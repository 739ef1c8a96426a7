using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// One shard streamed from the coordinator to a relay and from the relay to a child (the
/// coordinator feeds the relay only), with the first two parts of 100,000 bytes written by both.
/// </summary>
internal sealed record RelayAndChild(Overlay Overlay, Peer Relay, Peer Child, string RelayHost, string ChildHost)
{
    /// <summary>Starts it with <paramref name="heartbeatTimeout"/>, the nodes logging to <paramref name="loggers"/> when given, the child's options changed by <paramref name="child"/> when given; the parts are <see cref="Part"/>(0) and (1) of <paramref name="seed"/>.</summary>
    public static async Task<RelayAndChild> StartAsync(TimeSpan heartbeatTimeout, int seed, ILoggerFactory? loggers = null, Func<PeerOptions, PeerOptions>? child = null)
    {
        var overlay = await Overlay.StartAsync(1, minPeers: 2, configure: o => o with { Upload = 1 }, heartbeatTimeout: heartbeatTimeout, loggers: loggers);
        try
        {
            var relay = await overlay.AddPeerAsync(upload: 1);
            var leaf = await overlay.AddPeerAsync(upload: 0, configure: child);
            var started = new RelayAndChild(overlay, relay, leaf, overlay.PeerById(relay.Id).Host, overlay.PeerById(leaf.Id).Host) { Seed = seed };
            Assert.Equal(relay.Id, started.ParentOfChild());
            overlay.StartStreaming();
            for (int i = 0; i < 2; i++) await overlay.WriteAsync(started.Part(i));
            await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 200_000), "every peer has the first parts");
            return started;
        }
        catch
        {
            await overlay.DisposeAsync();
            throw;
        }
    }

    private int Seed { get; init; }

    /// <summary>Part <paramref name="i"/> of the stream: 100,000 bytes.</summary>
    public byte[] Part(int i) => Overlay.RandomBytes(100_000, Seed + i);

    /// <summary>The child's parent of shard 0 in the coordinator's plan (-1: none, or not listed).</summary>
    public int ParentOfChild() => Overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == Child.Id)?.Parents[0] ?? -1;

    /// <summary>Writes parts 2 and 3, waits until every viewer has written them while the stream runs, ends the stream and checks every output against the source.</summary>
    public async Task WriteTheRestAndCheckAsync(string after)
    {
        for (int i = 2; i < 4; i++) await Overlay.WriteAsync(Part(i));
        await Overlay.WaitUntilAsync(() => Overlay.Peers.All(p => p.Peer.BytesWritten == 400_000),
            $"every viewer writes the parts sent {after} (the child's parents: {string.Join(",", Child.ParentIds())}; in the plan: {ParentOfChild()})");
        await Overlay.EndAsync();
        foreach (var p in Overlay.Peers) await Overlay.AssertIdenticalAsync(p);
    }
}

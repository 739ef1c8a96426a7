using Microsoft.Extensions.Logging;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A joiner asks every parent for its shards from the one join point the coordinator gave it, a
/// chunk of whichever shard. With K = 2 that chunk is of the other shard for one of the two, and
/// the parent, whose window held everything from there, warned "asked for shard 0 from chunk 133,
/// which this node no longer holds: it starts at chunk 134" (seen across network namespaces with
/// the CLI): the shard's first chunk at or after the one asked for is what was asked for.
/// </summary>
public sealed class ServingFromTests
{
    [Fact]
    public async Task A_parent_asked_for_a_shard_from_a_chunk_of_another_shard_serves_it_without_a_warning()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 2, loggers: logs.Factory);
        overlay.StartStreaming();
        var data = Overlay.RandomBytes(8 * 20_000, 7);
        int written = 0;
        for (int i = 0; i < 8; i++)
        {
            // One write at a time, each taken as one chunk by the source before the next, so the
            // join points (a little in the past) fall on chunks of both shards.
            await overlay.WriteAsync(data.AsMemory(written, 20_000).ToArray());
            written += 20_000;
            await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.StartOffset + p.Peer.BytesWritten >= written), "every peer has what was written");
            await overlay.AddPeerAsync();
        }
        var parents = overlay.Coordinator.Snapshot().Nodes.SelectMany(n => n.Parents).Where(id => id != 0).ToArray();
        await overlay.EndAsync();

        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
        Assert.NotEmpty(parents);   // some joiners attached to peers, not all to the coordinator
        var wrong = logs.Lines.Where(l => l.Level == LogLevel.Warning && l.Message.Contains("which this node no longer holds", StringComparison.Ordinal)).Select(l => l.Message).ToArray();
        Assert.True(wrong.Length == 0, $"a parent that held what was asked for warned: {string.Join(" | ", wrong)}");
    }
}

using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A node that has relayed a shard's last chunk ends that shard for its children once it knows the
/// stream's end, even when that shard's own End never reached it: a peer that finished may close
/// its parents before it reads every End, and after the end its children take the rest from it
/// (docs/resilience.md, "Orphans"): without an End they could not finish.
/// </summary>
public sealed class RelayEndTests
{
    [Fact]
    public async Task A_shard_whose_last_chunk_was_relayed_ends_with_the_end_of_another_shard_and_only_after_its_last_chunk()
    {
        var network = new VirtualNetwork();
        await using var listener = await network.Host("parent").ListenAsync("parent:1", CancellationToken.None);
        var childSide = await network.Host("child").ConnectAsync("parent:1", CancellationToken.None);
        var parentSide = (await listener.AcceptAsync(CancellationToken.None))!;
        var options = new TestOptions().LinkOptions;
        await using var toChild = new Link(parentSide, "to child", options, NullLogger.Instance, TimeProvider.System);
        await using var fromParent = new Link(childSide, "from parent", options, NullLogger.Instance, TimeProvider.System);
        var frames = new ConcurrentQueue<string>();
        toChild.Start((_, _, _) => { });
        fromParent.Start((link, type, body) =>
        {
            if (type == FrameType.Chunk && ChunkHeader.TryRead(body, out var header, out _)) frames.Enqueue($"chunk {header.Seq}");
            var reader = new SequenceReader<byte>(body);
            if (type == FrameType.End && End.TryRead(ref reader, out var end)) frames.Enqueue($"end {end.Shard} at {end.FinalSeq}");
        });

        // Three shards, a stream of 5 chunks: shard 0 has 0 and 3, shard 1 has 1 and 4, shard 2 has 2.
        var relay = new Relay(3, 1 << 20, TimeSpan.FromSeconds(10), TimeProvider.System);
        for (int s = 0; s < 3; s++) relay.Subscribe(toChild, s, 0);
        foreach (long seq in new long[] { 0, 1, 2, 3 }) Publish(relay, seq);
        // Shard 0's End: shards 0 and 2 have had their last chunk, shard 1 has not (chunk 4 is still to come).
        relay.PublishEnd(new End(0, 5, 5 * 100, new byte[64]));
        Publish(relay, 4);
        // Shard 1's own End comes late: it is not sent a second time.
        relay.PublishEnd(new End(1, 5, 5 * 100, new byte[64]));

        // A marker after everything the relay sent (frames keep their order on a link).
        toChild.Send(new End(2, 99, 0, new byte[64]).Write);

        await Overlay.WaitUntilAsync(() => frames.Contains("end 2 at 99"), "the marker came");
        Assert.Equal(["chunk 0", "chunk 1", "chunk 2", "chunk 3", "end 0 at 5", "end 2 at 5", "chunk 4", "end 1 at 5", "end 2 at 99"], frames.ToArray());
    }

    private static void Publish(Relay relay, long seq)
    {
        var chunk = Chunk.Copy((int)(seq % 3), seq, seq * 100, new ReadOnlySequence<byte>(new byte[100]));
        relay.Publish(chunk);
        chunk.Release();
    }

    private sealed record TestOptions : NodeOptions;
}

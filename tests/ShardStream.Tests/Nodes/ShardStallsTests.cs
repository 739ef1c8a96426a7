using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>A peer's stalls (<see cref="ShardStalls"/>): each one that begins also ends.</summary>
public sealed class ShardStallsTests
{
    [Fact]
    public void A_stall_ends_with_a_chunk_with_the_shards_end_or_with_the_stream_and_none_begins_after_it()
    {
        var stalls = new ShardStalls();
        stalls.Stalled(0);
        stalls.Stalled(1);
        stalls.Stalled(2);
        Assert.Equal(3, stalls.StalledShards);
        stalls.Received(0, 10, 10);
        stalls.ShardEnded(1);
        Assert.Equal(1, stalls.StalledShards);
        // Shard 2 had no chunk left to come: the stream's completion ends its stall.
        stalls.Completed();
        Assert.Equal(0, stalls.StalledShards);
        // A parent lost once the stream is complete (a report that checked completion just before) stalls nothing.
        stalls.Stalled(3);
        Assert.Equal(0, stalls.StalledShards);
    }
}

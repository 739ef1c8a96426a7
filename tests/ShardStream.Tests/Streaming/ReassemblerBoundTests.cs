using ShardStream.Streaming;

namespace ShardStream.Tests.Streaming;

/// <summary>
/// Chunks that wait for an earlier chunk of another shard are bounded in memory and in count: a
/// shard that runs ahead of a lagging one is refused past the bound, and nothing is lost by it.
/// </summary>
[Collection(ChunkPoolCollection.Name)]
public class ReassemblerBoundTests
{
    [Fact]
    public void A_shard_running_ahead_of_a_lagging_one_is_refused_at_the_byte_bound_and_resumes_in_order()
    {
        // K = 2; shard 0 lags. Chunks of 1 KiB cost their 1 KiB buffer: four fit in 4 KiB.
        var r = new Reassembler(2, 0, 0);
        const long bound = 4 * 1024;
        var ready = new List<Chunk>();
        for (long seq = 1; seq <= 7; seq += 2) r.Add(Chunk1K(seq), ready, bound);
        Assert.Equal(4 * 1024, r.HeldBytes);

        var full = Assert.Throws<ReassemblyFullException>(() => r.Add(Chunk1K(9), ready, bound));
        Assert.Equal(0, full.LaggingShard);
        Assert.Equal(1, full.RefusedShard);
        Assert.Contains("behind chunk 0 of shard 0", full.Message);
        // Nothing of the refused chunk was taken: shard 1 resumes at it.
        Assert.Equal(9, r.NextSeqOf(1));
        Assert.Equal(4 * 1024, r.PeakHeldBytes);

        // The lagging shard's chunk is always taken, and everything drains in order.
        r.Add(Chunk1K(0), ready, bound);
        r.Add(Chunk1K(2), ready, bound);
        Assert.Equal([0L, 1, 2, 3], ready.Select(c => c.Seq));
        r.Add(Chunk1K(9), ready, bound);
        Assert.Equal(3 * 1024, r.HeldBytes);
        TestChunks.ReleaseAll(ready);
        r.Clear();
    }

    [Fact]
    public void Small_chunks_are_refused_at_the_count_bound_of_one_per_KiB()
    {
        // A 64 KiB bound allows 64 waiting chunks, however small (one-byte chunks from a receive
        // slab could share one slab's cost).
        var r = new Reassembler(2, 0, 0);
        var ready = new List<Chunk>();
        for (long seq = 1; seq < 2 * 64; seq += 2) r.Add(TestChunks.Make(2, seq, seq, new byte[1]), ready, long.MaxValue);
        Assert.Throws<ReassemblyFullException>(() => r.Add(TestChunks.Make(2, 129, 129, new byte[1]), ready, 64 * 1024));
        Assert.Empty(ready);
        r.Clear();
    }

    [Fact]
    public void Without_a_lagging_shard_nothing_waits_and_nothing_is_refused()
    {
        var r = new Reassembler(2, 0, 0);
        var ready = new List<Chunk>();
        for (long seq = 0; seq < 100; seq++) r.Add(Chunk1K(seq), ready, 1024);

        Assert.Equal(100, ready.Count);
        Assert.Equal(0, r.HeldBytes);
        TestChunks.ReleaseAll(ready);
    }

    private static Chunk Chunk1K(long seq) => TestChunks.Make(2, seq, seq * 1024, new byte[1024]);
}

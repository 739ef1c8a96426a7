using ShardStream.Streaming;

namespace ShardStream.Tests.Streaming;

[Collection(ChunkPoolCollection.Name)]
public class ReplayWindowTests
{
    private static readonly TimeSpan LongAgo = TimeSpan.FromDays(1);

    // Chunks of 1, 4 and 16 KiB fill their pooled buffer exactly: each costs its payload.
    private const int KiB = 1024;

    [Fact]
    public void Holds_at_most_its_byte_bound_and_evicts_the_oldest_first()
    {
        var window = new ReplayWindow(1, 10 * KiB, LongAgo, TimeSpan.TicksPerSecond);

        for (int seq = 0; seq < 5; seq++) AddFresh(window, 1, seq, 4 * KiB, now: 0);

        Assert.Equal(8 * KiB, window.Bytes);
        Assert.Equal(3, window.OldestSeq(0));
        window.Clear();
    }

    [Fact]
    public void A_chunk_exactly_at_the_byte_bound_is_kept()
    {
        var window = new ReplayWindow(1, 8 * KiB, LongAgo, TimeSpan.TicksPerSecond);

        AddFresh(window, 1, 0, 4 * KiB, now: 0);
        AddFresh(window, 1, 1, 4 * KiB, now: 0);

        Assert.Equal(8 * KiB, window.Bytes);
        Assert.Equal(0, window.OldestSeq(0));
        window.Clear();
    }

    [Fact]
    public void Evicts_the_globally_oldest_chunk_across_shards()
    {
        var window = new ReplayWindow(3, 4 * KiB, LongAgo, TimeSpan.TicksPerSecond);

        for (int seq = 0; seq < 9; seq++) AddFresh(window, 3, seq, KiB, now: 0);

        // Four chunks of 1 KiB fit: 5, 6, 7, 8.
        Assert.Equal(4 * KiB, window.Bytes);
        Assert.Equal(6, window.OldestSeq(0));
        Assert.Equal(7, window.OldestSeq(1));
        Assert.Equal(5, window.OldestSeq(2));
        window.Clear();
    }

    [Fact]
    public void Drops_chunks_older_than_its_age_bound()
    {
        var window = new ReplayWindow(2, long.MaxValue, TimeSpan.FromTicks(100), TimeSpan.TicksPerSecond);

        AddFresh(window, 2, 0, KiB, now: 1000);
        AddFresh(window, 2, 1, KiB, now: 1050);
        AddFresh(window, 2, 2, KiB, now: 1100); // chunk 0 is exactly 100 ticks old: kept
        Assert.Equal(0, window.OldestSeq(0));

        AddFresh(window, 2, 3, KiB, now: 1101); // now chunk 0 is over the bound
        Assert.Equal(2, window.OldestSeq(0));
        Assert.Equal(1, window.OldestSeq(1));
        Assert.Equal(3 * KiB, window.Bytes);

        AddFresh(window, 2, 4, KiB, now: 1300); // everything before is over the bound
        Assert.Equal(4, window.OldestSeq(0));
        Assert.Equal(-1, window.OldestSeq(1));
        Assert.Equal(KiB, window.Bytes);
        window.Clear();
    }

    [Fact]
    public void Age_eviction_drops_only_stale_chunks_when_shards_arrive_out_of_step()
    {
        // At a peer, shards come from different parents: chunk 1 can arrive long before chunk 0.
        var window = new ReplayWindow(2, long.MaxValue, TimeSpan.FromTicks(100), TimeSpan.TicksPerSecond);

        AddFresh(window, 2, 1, KiB, now: 0);
        AddFresh(window, 2, 0, KiB, now: 150);

        Assert.Equal(-1, window.OldestSeq(1)); // 150 ticks old: dropped
        Assert.Equal(0, window.OldestSeq(0)); // just added: kept
        Assert.Equal(KiB, window.Bytes);
        window.Clear();
    }

    [Fact]
    public void Copy_from_returns_the_shards_chunks_from_the_asked_seq()
    {
        var window = new ReplayWindow(2, long.MaxValue, LongAgo, TimeSpan.TicksPerSecond);
        for (int seq = 0; seq < 10; seq++) AddFresh(window, 2, seq, 5, now: 0);
        var copied = new List<Chunk>();

        long first = window.CopyFrom(1, 5, copied);

        Assert.Equal(5, first);
        Assert.Equal([5L, 7L, 9L], copied.Select(c => c.Seq));
        TestChunks.ReleaseAll(copied);
        window.Clear();
    }

    [Fact]
    public void Copy_from_a_seq_that_was_evicted_tells_the_first_seq_it_can_give()
    {
        var window = new ReplayWindow(2, 3 * KiB, LongAgo, TimeSpan.TicksPerSecond);
        for (int seq = 0; seq < 10; seq++) AddFresh(window, 2, seq, KiB, now: 0); // keeps 7, 8, 9
        var copied = new List<Chunk>();

        long first = window.CopyFrom(1, 3, copied);

        Assert.Equal(7, first);
        Assert.Equal([7L, 9L], copied.Select(c => c.Seq));
        TestChunks.ReleaseAll(copied);
        window.Clear();
    }

    [Fact]
    public void Copy_from_a_seq_still_to_come_gives_nothing_and_that_seq()
    {
        var window = new ReplayWindow(2, long.MaxValue, LongAgo, TimeSpan.TicksPerSecond);
        for (int seq = 0; seq < 4; seq++) AddFresh(window, 2, seq, 10, now: 0);
        var copied = new List<Chunk>();

        long first = window.CopyFrom(0, 6, copied);

        Assert.Equal(6, first);
        Assert.Empty(copied);
        window.Clear();
    }

    [Fact]
    public void Copied_chunks_outlive_their_eviction_from_the_window()
    {
        var window = new ReplayWindow(1, KiB, LongAgo, TimeSpan.TicksPerSecond);
        AddFresh(window, 1, 0, KiB, now: 0);
        var copied = new List<Chunk>();
        window.CopyFrom(0, 0, copied);

        AddFresh(window, 1, 1, KiB, now: 0); // evicts chunk 0 from the window

        Assert.Equal(1, window.OldestSeq(0));
        Assert.Equal(KiB, copied[0].Span.Length); // the copy's reference keeps the buffer
        TestChunks.ReleaseAll(copied);
        window.Clear();
    }

    [Fact]
    public void The_window_holds_its_own_reference_and_clear_lets_go_of_it()
    {
        var window = new ReplayWindow(1, long.MaxValue, LongAgo, TimeSpan.TicksPerSecond);
        var chunk = TestChunks.Make(1, 0, 0, "kept"u8);

        window.Add(chunk, 0);
        chunk.Release(); // the producer is done with it
        Assert.Equal("kept"u8.ToArray(), chunk.Span.ToArray());

        window.Clear();
        Assert.Equal(0, chunk.WritableBuffer.Length);
        Assert.Equal(0, window.Bytes);
    }

    [Fact]
    public void Eviction_releases_the_windows_reference()
    {
        var window = new ReplayWindow(1, KiB, LongAgo, TimeSpan.TicksPerSecond);
        var chunk = TestChunks.Make(1, 0, 0, new byte[KiB]);
        window.Add(chunk, 0);
        chunk.Release();

        AddFresh(window, 1, 1, KiB, now: 0);

        Assert.Equal(0, chunk.WritableBuffer.Length);
        window.Clear();
    }

    [Fact]
    public void A_one_byte_chunk_costs_its_whole_buffer()
    {
        // 1 MiB of payload would be a million one-byte chunks, each in a 1 KiB buffer: 1 GiB. The
        // window counts the buffers: 1024 of them fit in 1 MiB (as many as its count bound allows).
        var window = new ReplayWindow(1, 1024 * KiB, LongAgo, TimeSpan.TicksPerSecond);

        for (int seq = 0; seq < 5000; seq++) AddFresh(window, 1, seq, 1, now: 0);

        Assert.Equal(1024, window.MaxChunks);
        Assert.Equal(1024, window.Count);
        Assert.Equal(1024 * KiB, window.Bytes);
        Assert.Equal(5000 - 1024, window.OldestSeq(0));
        window.Clear();
    }

    /// <summary>Adds a new chunk and drops the caller's reference, as a relay does.</summary>
    private static void AddFresh(ReplayWindow window, int k, long seq, int length, long now)
    {
        var chunk = TestChunks.Make(k, seq, length);
        window.Add(chunk, now);
        chunk.Release();
    }
}

using ShardStream.Streaming;

namespace ShardStream.Tests.Streaming;

[Collection(ChunkPoolCollection.Name)]
public class ReassemblerTests
{
    public static TheoryData<int, int> ShardCountsAndSeeds()
    {
        var data = new TheoryData<int, int>();
        for (int k = 1; k <= 4; k++)
            for (int seed = 1; seed <= 5; seed++)
                data.Add(k, seed);
        return data;
    }

    [Theory]
    [MemberData(nameof(ShardCountsAndSeeds))]
    public void Shards_fed_in_a_random_interleaving_produce_the_exact_ordered_bytes(int k, int seed)
    {
        var random = new Random(seed);
        var (bytes, cuts) = TestChunks.Stream(random, 60);
        var perShard = Enumerable.Range(0, k).Select(s => new Queue<(long Seq, long Offset, int Length)>(cuts.Where(c => c.Seq % k == s))).ToArray();
        var order = new List<(long, long, int)>();
        while (perShard.Any(q => q.Count > 0))
        {
            var nonEmpty = perShard.Where(q => q.Count > 0).ToArray();
            order.Add(nonEmpty[random.Next(nonEmpty.Length)].Dequeue());
        }

        var output = Feed(k, 0, 0, bytes, order, cuts.Count);

        Assert.Equal(bytes, output);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Whole_shards_fed_one_after_another_in_either_order_produce_the_exact_ordered_bytes(int k)
    {
        var (bytes, cuts) = TestChunks.Stream(new Random(k), 41);
        var forward = cuts.OrderBy(c => c.Seq % k).ThenBy(c => c.Seq).ToList();
        var backward = cuts.OrderByDescending(c => c.Seq % k).ThenBy(c => c.Seq).ToList();

        Assert.Equal(bytes, Feed(k, 0, 0, bytes, forward, cuts.Count));
        Assert.Equal(bytes, Feed(k, 0, 0, bytes, backward, cuts.Count));
    }

    [Fact]
    public void Chunks_come_out_only_when_every_earlier_chunk_is_there()
    {
        var r = new Reassembler(2, 0, 0);
        var ready = new List<Chunk>();

        r.Add(TestChunks.Make(2, 1, 10, new byte[5]), ready);
        Assert.Empty(ready);
        r.Add(TestChunks.Make(2, 3, 20, new byte[5]), ready);
        Assert.Empty(ready);

        r.Add(TestChunks.Make(2, 0, 0, new byte[10]), ready);
        Assert.Equal([0L, 1L], ready.Select(c => c.Seq));
        Assert.Equal(2, r.NextSeq);
        Assert.Equal(15, r.NextOffset);

        TestChunks.ReleaseAll(ready);
        r.Clear();
    }

    [Fact]
    public void A_chunk_already_seen_is_dropped()
    {
        var r = new Reassembler(2, 0, 0);
        var ready = new List<Chunk>();
        Assert.True(r.Add(TestChunks.Make(2, 0, 0, "ab"u8), ready));
        Assert.True(r.Add(TestChunks.Make(2, 2, 4, "ef"u8), ready));

        // A new parent replays what the old one had sent: both kinds of repeat are dropped.
        var delivered = TestChunks.Make(2, 0, 0, "ab"u8);
        var pending = TestChunks.Make(2, 2, 4, "ef"u8);
        Assert.False(r.Add(delivered, ready));
        Assert.False(r.Add(pending, ready));
        Assert.Equal(0, delivered.WritableBuffer.Length); // released by the reassembler
        Assert.Equal(0, pending.WritableBuffer.Length);

        Assert.True(r.Add(TestChunks.Make(2, 1, 2, "cd"u8), ready));
        Assert.Equal("abcdef"u8.ToArray(), Concat(ready));
        TestChunks.ReleaseAll(ready);
    }

    [Fact]
    public void A_replayed_shard_after_a_repair_continues_without_a_duplicate()
    {
        var (bytes, cuts) = TestChunks.Stream(new Random(9), 20);
        var r = new Reassembler(2, 0, 0);
        var ready = new List<Chunk>();
        var output = new List<byte>();
        foreach (var c in cuts.Take(10)) Add(r, 2, bytes, c, ready, output);

        // Shard 1's new parent replays from a few chunks back.
        long resume = r.NextSeqOf(1);
        foreach (var c in cuts.Where(c => c.Seq % 2 == 1 && c.Seq >= resume - 4)) Add(r, 2, bytes, c, ready, output);
        foreach (var c in cuts.Where(c => c.Seq % 2 == 0 && c.Seq >= 10)) Add(r, 2, bytes, c, ready, output);

        Assert.Equal(bytes, output.ToArray());
    }

    [Fact]
    public void A_chunk_whose_offset_does_not_continue_the_stream_is_refused()
    {
        var r = new Reassembler(1, 0, 0);
        var ready = new List<Chunk>();
        r.Add(TestChunks.Make(1, 0, 0, new byte[10]), ready);

        var e = Assert.Throws<InvalidDataException>(() => r.Add(TestChunks.Make(1, 1, 11, new byte[10]), ready));

        Assert.Contains("offset 11", e.Message);
        Assert.Contains("expected 10", e.Message);
        Assert.Single(ready);
        TestChunks.ReleaseAll(ready);
    }

    [Fact]
    public void A_chunk_on_the_wrong_shard_is_refused()
    {
        var r = new Reassembler(3, 0, 0);
        var chunk = TestChunks.Make(3, 4, 0, new byte[1]);
        chunk.Set(0, 4, 0, 1); // seq 4 belongs to shard 1

        Assert.Throws<InvalidDataException>(() => r.Add(chunk, []));
    }

    [Fact]
    public void A_shard_that_skips_a_chunk_is_reported_not_hidden()
    {
        var r = new Reassembler(2, 0, 0);
        var ready = new List<Chunk>();
        var gaps = new List<Gap>();
        r.GapFound = gaps.Add;
        r.Add(TestChunks.Make(2, 0, 0, new byte[1]), ready);
        r.Add(TestChunks.Make(2, 4, 4, new byte[1]), ready); // shard 0 jumped over chunk 2: it can never come
        r.Add(TestChunks.Make(2, 1, 1, new byte[1]), ready);
        r.Add(TestChunks.Make(2, 3, 3, new byte[1]), ready); // behind the gap: dropped, not written out of place
        r.Add(TestChunks.Make(2, 5, 5, new byte[1]), ready);

        // Written: chunks 0 and 1, then the stream continues at chunk 4; bytes 2..4 are reported lost.
        Assert.Equal([0L, 1L, 4L, 5L], ready.Select(c => c.Seq));
        var gap = Assert.Single(gaps);
        Assert.Equal(new Gap(2, 4, 2, 4), gap);
        Assert.Equal(2, r.LostBytes);
        TestChunks.ReleaseAll(ready);
        r.Clear();
    }

    [Fact]
    public void A_shard_whose_parent_ended_without_the_needed_chunk_is_skipped_to_the_end_and_reported()
    {
        var r = new Reassembler(2, 0, 0);
        var ready = new List<Chunk>();
        var gaps = new List<Gap>();
        r.GapFound = gaps.Add;
        r.Add(TestChunks.Make(2, 0, 0, new byte[2]), ready);
        r.Add(TestChunks.Make(2, 1, 2, new byte[2]), ready);
        r.Add(TestChunks.Make(2, 3, 6, new byte[2]), ready);
        r.SetEnd(4, 8, ready, shard: 1);
        Assert.False(r.IsComplete); // shard 0 may still bring chunk 2

        r.SetEnd(4, 8, ready, shard: 0); // its parent has sent everything: chunk 2 will never come

        Assert.Equal([0L, 1L, 3L], ready.Select(c => c.Seq));
        Assert.Equal(new Gap(4, 6, 2, 3), Assert.Single(gaps));
        Assert.True(r.IsComplete);
        TestChunks.ReleaseAll(ready);
        r.Clear();
    }

    [Fact]
    public void A_gap_at_the_very_end_reaches_the_final_offset()
    {
        var r = new Reassembler(1, 0, 0);
        var ready = new List<Chunk>();
        r.Add(TestChunks.Make(1, 0, 0, new byte[5]), ready);

        r.SetEnd(3, 15, ready, shard: 0);

        Assert.True(r.IsComplete);
        Assert.Equal(10, r.LostBytes);
        TestChunks.ReleaseAll(ready);
        r.Clear();
    }

    [Fact]
    public void Is_complete_only_after_the_end_and_every_chunk_up_to_it()
    {
        var r = new Reassembler(2, 0, 0);
        var ready = new List<Chunk>();
        r.Add(TestChunks.Make(2, 0, 0, new byte[3]), ready);
        r.Add(TestChunks.Make(2, 1, 3, new byte[3]), ready);
        Assert.False(r.IsComplete); // everything so far, but the end is not known

        r.SetEnd(3, 9, ready);
        Assert.False(r.IsComplete); // chunk 2 is still missing
        Assert.Equal(9, r.FinalOffset);

        r.Add(TestChunks.Make(2, 2, 6, new byte[3]), ready);
        Assert.True(r.IsComplete);
        Assert.Equal(9, r.NextOffset);
        TestChunks.ReleaseAll(ready);
    }

    [Fact]
    public void Clear_releases_the_chunks_still_waiting()
    {
        var r = new Reassembler(2, 0, 0);
        var waiting = TestChunks.Make(2, 1, 5, new byte[5]);
        r.Add(waiting, []);

        r.Clear();

        Assert.Equal(0, waiting.WritableBuffer.Length);
    }

    [Fact]
    public void An_empty_stream_is_complete_at_its_end()
    {
        var r = new Reassembler(2, 0, 0);

        r.SetEnd(0, 0, []);

        Assert.True(r.IsComplete);
    }

    [Theory]
    [InlineData(1, 0, new long[] { 0 })]
    [InlineData(3, 0, new long[] { 0, 1, 2 })]
    [InlineData(3, 7, new long[] { 9, 7, 8 })]
    [InlineData(4, 10, new long[] { 12, 13, 10, 11 })]
    public void Next_seq_of_a_shard_starts_at_its_first_chunk_from_the_join_point(int k, long startSeq, long[] expected)
    {
        var r = new Reassembler(k, startSeq, 0);

        Assert.Equal(expected, Enumerable.Range(0, k).Select(r.NextSeqOf));
    }

    [Fact]
    public void Next_seq_of_a_shard_moves_past_what_that_shard_delivered()
    {
        var r = new Reassembler(3, 0, 0);
        var ready = new List<Chunk>();

        r.Add(TestChunks.Make(3, 0, 0, new byte[1]), ready);
        r.Add(TestChunks.Make(3, 3, 3, new byte[1]), ready); // waits for 1 and 2
        r.Add(TestChunks.Make(3, 2, 2, new byte[1]), ready);

        Assert.Equal(6, r.NextSeqOf(0));
        Assert.Equal(1, r.NextSeqOf(1));
        Assert.Equal(5, r.NextSeqOf(2));
        TestChunks.ReleaseAll(ready);
        r.Clear();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void A_peer_that_joins_mid_stream_writes_from_the_join_point(int k)
    {
        var (bytes, cuts) = TestChunks.Stream(new Random(100 + k), 50);
        var join = cuts[17];
        var r = new Reassembler(k, join.Seq, join.Offset);
        var ready = new List<Chunk>();
        var output = new List<byte>();

        // Parents replay a little before the join point; those chunks are not written.
        foreach (var c in cuts.Skip(13).OrderBy(c => c.Seq % k).ThenBy(c => c.Seq))
            Add(r, k, bytes, c, ready, output);
        r.SetEnd(cuts.Count, bytes.Length, ready);

        Assert.Equal(bytes[(int)join.Offset..], output.ToArray());
        Assert.True(r.IsComplete);
        Assert.Equal(join.Offset, r.StartOffset);
    }

    [Fact]
    public void Shards_added_from_several_threads_come_out_exactly_once()
    {
        const int k = 4;
        var (bytes, cuts) = TestChunks.Stream(new Random(77), 400);
        var r = new Reassembler(k, 0, 0);
        var delivered = new System.Collections.Concurrent.ConcurrentBag<(long Seq, byte[] Payload)>();

        Parallel.For(0, k, shard =>
        {
            var ready = new List<Chunk>();
            foreach (var c in cuts.Where(c => c.Seq % k == shard))
            {
                r.Add(TestChunks.Make(k, c.Seq, c.Offset, bytes.AsSpan((int)c.Offset, c.Length)), ready);
                foreach (var chunk in ready)
                {
                    delivered.Add((chunk.Seq, chunk.Span.ToArray()));
                    chunk.Release();
                }
                ready.Clear();
            }
        });

        var ordered = delivered.OrderBy(d => d.Seq).ToList();
        Assert.Equal(Enumerable.Range(0, cuts.Count).Select(i => (long)i), ordered.Select(d => d.Seq));
        Assert.Equal(bytes, ordered.SelectMany(d => d.Payload).ToArray());
    }

    private static byte[] Feed(int k, long startSeq, long startOffset, byte[] bytes, List<(long Seq, long Offset, int Length)> order, int count)
    {
        var r = new Reassembler(k, startSeq, startOffset);
        var ready = new List<Chunk>();
        var output = new List<byte>();
        foreach (var c in order) Add(r, k, bytes, c, ready, output);
        r.SetEnd(count, bytes.Length, ready);
        Assert.True(r.IsComplete);
        return [.. output];
    }

    private static void Add(Reassembler r, int k, byte[] bytes, (long Seq, long Offset, int Length) cut, List<Chunk> ready, List<byte> output)
    {
        r.Add(TestChunks.Make(k, cut.Seq, cut.Offset, bytes.AsSpan((int)cut.Offset, cut.Length)), ready);
        foreach (var c in ready)
        {
            output.AddRange(c.Span.ToArray());
            c.Release();
        }
        ready.Clear();
    }

    private static byte[] Concat(List<Chunk> chunks) => [.. chunks.SelectMany(c => c.Span.ToArray())];
}

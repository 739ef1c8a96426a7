using ShardStream.Streaming;

namespace ShardStream.Tests.Streaming;

/// <summary>Cuts a byte stream into chunks the way the coordinator does: chunk n goes to shard n % K.</summary>
internal static class TestChunks
{
    public static Chunk Make(int shardCount, long seq, long offset, ReadOnlySpan<byte> payload)
    {
        var chunk = Chunk.Rent(payload.Length);
        payload.CopyTo(chunk.WritableBuffer.Span);
        chunk.Set((int)(seq % shardCount), seq, offset, payload.Length);
        return chunk;
    }

    public static Chunk Make(int shardCount, long seq, int length) =>
        Make(shardCount, seq, seq * 1000, new byte[length]);

    /// <summary>A stream of <paramref name="count"/> chunks of random lengths (1..maxLength) and random bytes.</summary>
    public static (byte[] Bytes, List<(long Seq, long Offset, int Length)> Cuts) Stream(Random random, int count, int maxLength = 50)
    {
        var cuts = new List<(long, long, int)>();
        long offset = 0;
        for (int seq = 0; seq < count; seq++)
        {
            int length = random.Next(1, maxLength + 1);
            cuts.Add((seq, offset, length));
            offset += length;
        }
        var bytes = new byte[offset];
        random.NextBytes(bytes);
        return (bytes, cuts);
    }

    public static void ReleaseAll(List<Chunk> chunks)
    {
        foreach (var c in chunks) c.Release();
        chunks.Clear();
    }
}

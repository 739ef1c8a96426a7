using System.Runtime.InteropServices;
using ShardStream.Streaming;

namespace ShardStream.Tests.Streaming;

[Collection(ChunkPoolCollection.Name)]
public class ChunkTests
{
    [Fact]
    public void Rented_chunk_has_room_for_the_capacity_asked()
    {
        var chunk = Chunk.Rent(1000);

        Assert.True(chunk.WritableBuffer.Length >= 1000);
        Assert.Equal(0, chunk.Length);
        chunk.Release();
    }

    [Fact]
    public void Set_gives_the_chunk_its_identity_and_payload_view()
    {
        var chunk = TestChunks.Make(3, 7, 700, "hello"u8);

        Assert.Equal(1, chunk.Shard);
        Assert.Equal(7, chunk.Seq);
        Assert.Equal(700, chunk.Offset);
        Assert.Equal(5, chunk.Length);
        Assert.Equal("hello"u8.ToArray(), chunk.Span.ToArray());
        Assert.Equal("hello"u8.ToArray(), chunk.Memory.ToArray());
        chunk.Release();
    }

    [Fact]
    public void Copy_takes_the_payload_from_a_sequence()
    {
        var payload = Wire.Segment.Split([1, 2, 3, 4, 5, 6, 7], 3);

        var chunk = Chunk.Copy(1, 9, 90, payload);

        Assert.Equal(new byte[] { 1, 2, 3, 4, 5, 6, 7 }, chunk.Span.ToArray());
        Assert.Equal((1, 9L, 90L), (chunk.Shard, chunk.Seq, chunk.Offset));
        chunk.Release();
    }

    [Fact]
    public void The_buffer_stays_until_the_last_holder_releases_it()
    {
        var chunk = TestChunks.Make(1, 0, 0, "abc"u8);
        chunk.Retain();
        chunk.Retain();

        chunk.Release();
        chunk.Release();
        Assert.Equal("abc"u8.ToArray(), chunk.Span.ToArray());

        chunk.Release();
        Assert.Equal(0, chunk.WritableBuffer.Length);
    }

    [Fact]
    public void Releasing_to_zero_returns_the_buffer_and_the_chunk_to_their_pools()
    {
        var first = Chunk.Rent(4096);
        Assert.True(MemoryMarshal.TryGetArray<byte>(first.WritableBuffer, out var firstArray));
        first.Release();

        // Same thread, nothing rented in between: both pools hand back what was just returned.
        var second = Chunk.Rent(4096);
        Assert.True(MemoryMarshal.TryGetArray<byte>(second.WritableBuffer, out var secondArray));

        Assert.Same(first, second);
        Assert.Same(firstArray.Array, secondArray.Array);
        second.Release();
    }

    [Fact]
    public void A_chunk_rented_again_after_release_is_fresh_and_usable()
    {
        var chunk = TestChunks.Make(2, 5, 50, "old"u8);
        chunk.Release();

        var again = TestChunks.Make(2, 6, 53, "new payload"u8);

        Assert.Equal("new payload"u8.ToArray(), again.Span.ToArray());
        Assert.Equal((0, 6L, 53L), (again.Shard, again.Seq, again.Offset));
        // One reference: a single release returns it.
        again.Release();
        Assert.Equal(0, again.WritableBuffer.Length);
    }
}

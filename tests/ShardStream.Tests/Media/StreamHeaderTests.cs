using System.Buffers;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Tests.Media;

/// <summary>The signed header frame (protocol version 5): its layout, and that a changed byte no longer verifies.</summary>
public sealed class StreamHeaderTests
{
    [Fact]
    public void The_frame_lays_out_format_generation_seq_signature_then_the_bytes()
    {
        var header = new StreamHeader(2, 7, 0x0102, [0xAA, 0xBB], new byte[Protocol.SignatureLength]);
        var writer = new ArrayBufferWriter<byte>();
        header.Write(writer);
        byte[] expected = [0, 0, 0, 1 + 77 + 2, 15, 2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 1, 2, .. new byte[64], 0xAA, 0xBB];
        Assert.Equal(expected, writer.WrittenSpan.ToArray());
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(expected.AsMemory(5)));
        Assert.True(StreamHeader.TryRead(ref reader, out var back));
        Assert.Equal((header.Format, header.Generation, header.FromSeq), (back.Format, back.Generation, back.FromSeq));
        Assert.Equal(header.Bytes, back.Bytes);
    }

    [Fact]
    public void A_truncated_frame_is_malformed()
    {
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(new byte[40]));
        Assert.False(StreamHeader.TryRead(ref reader, out _));
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(0)]
    [InlineData(3)]
    public void Only_the_coordinators_exact_header_verifies(int flip)
    {
        using var key = StreamSigner.CreateEphemeral();
        var signer = key.ForRun(StreamRun.NewId());
        var header = signer.SignHeader(1, 3, 42, [1, 2, 3, 4]);
        if (flip >= 0) header.Bytes[flip] ^= 1;
        Assert.Equal(flip < 0, signer.Run.VerifyHeader(header));
        using var otherKey = StreamSigner.CreateEphemeral();
        var other = otherKey.ForRun(signer.RunId);
        Assert.False(other.Run.VerifyHeader(signer.SignHeader(1, 3, 42, [1, 2, 3, 4])));
        Assert.False(signer.Run.VerifyHeader(header with { FromSeq = 43 }));
        // The same key in another run (a restarted coordinator) does not vouch for this run's header.
        Assert.False(key.ForRun(StreamRun.NewId()).Run.VerifyHeader(signer.SignHeader(1, 3, 42, [1, 2, 3, 4])));
    }
}

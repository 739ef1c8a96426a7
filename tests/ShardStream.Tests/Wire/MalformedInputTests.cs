using System.Buffers;
using System.Buffers.Binary;
using ShardStream.Wire;

namespace ShardStream.Tests.Wire;

public class MalformedInputTests
{
    [Theory]
    [MemberData(nameof(Samples.NameData), MemberType = typeof(Samples))]
    public void Every_truncation_of_a_frame_asks_for_more_bytes(string name)
    {
        var frame = Samples.Frame(name);
        for (int length = 0; length < frame.Length; length++)
        {
            var buffer = new ReadOnlySequence<byte>(frame, 0, length);

            Assert.False(FrameCodec.TryReadFrame(ref buffer, out _, out _));
            Assert.Equal(length, buffer.Length);
        }
    }

    [Fact]
    public void A_truncated_frame_split_into_segments_asks_for_more_bytes()
    {
        var frame = Samples.Frame("welcome");
        var buffer = Segment.Split(frame[..^1], 3);

        Assert.False(FrameCodec.TryReadFrame(ref buffer, out _, out _));
    }

    [Theory]
    [MemberData(nameof(Samples.NameData), MemberType = typeof(Samples))]
    public void Every_truncation_of_a_body_is_refused(string name)
    {
        var body = Frames.Body(Samples.Frame(name)).ToArray();
        var type = Samples.TypeOf(name);
        for (int length = 0; length < body.Length; length++)
        {
            // A cut that leaves a whole body (a shorter chunk payload, a message in its older form) must be read; any other, refused.
            bool whole = Samples.PrefixIsWholeBody(name, length, body.Length);
            Assert.True(whole == Samples.TryParse(type, new ReadOnlySequence<byte>(body, 0, length)),
                $"{name} body cut to {length} bytes was {(whole ? "refused" : "accepted")}");
        }
    }

    [Theory]
    [MemberData(nameof(Samples.NameData), MemberType = typeof(Samples))]
    public void A_body_with_trailing_garbage_is_refused(string name)
    {
        var type = Samples.TypeOf(name);
        if (Samples.RunsToTheEnd(type)) return; // the payload or header bytes are the rest of the frame: no trailing bytes exist
        byte[] body = [.. Frames.Body(Samples.Frame(name)).ToArray(), 0x00];

        Assert.False(Samples.TryParse(type, new ReadOnlySequence<byte>(body)));
    }

    [Theory]
    [MemberData(nameof(Samples.NameData), MemberType = typeof(Samples))]
    public void Every_single_bit_flip_of_a_body_is_refused_or_read_but_never_throws(string name)
    {
        // A flip may leave a valid body (a different id, say); what must not happen is an exception.
        var body = Frames.Body(Samples.Frame(name)).ToArray();
        var type = Samples.TypeOf(name);
        for (int at = 0; at < body.Length; at++)
            for (int bit = 0; bit < 8; bit++)
            {
                var flipped = (byte[])body.Clone();
                flipped[at] ^= (byte)(1 << bit);
                var exception = Record.Exception(() => Samples.TryParse(type, new ReadOnlySequence<byte>(flipped)));
                Assert.True(exception is null, $"{name} with bit {bit} of byte {at} flipped: {exception}");
            }
    }

    [Fact]
    public void A_chunk_with_an_empty_payload_is_refused()
    {
        var body = Frames.Body(Frames.Encode(w => new ChunkHeader(0, 0, 0).Write(w, [])));

        Assert.False(ChunkHeader.TryRead(body, out _, out _));
    }

    [Fact]
    public void A_chunk_payload_over_64_KiB_is_refused()
    {
        var payload = new byte[Protocol.MaxChunkLength + 1];
        var body = Frames.Body(Frames.Encode(w => new ChunkHeader(0, 0, 0).Write(w, payload)));

        Assert.False(ChunkHeader.TryRead(body, out _, out _));
    }

    [Fact]
    public void A_frame_of_exactly_the_maximum_length_is_accepted()
    {
        var frame = new byte[4 + Protocol.MaxFrameLength];
        BinaryPrimitives.WriteUInt32BigEndian(frame, Protocol.MaxFrameLength);
        frame[4] = (byte)FrameType.Chunk;
        var buffer = new ReadOnlySequence<byte>(frame);

        Assert.True(FrameCodec.TryReadFrame(ref buffer, out var type, out var body));
        Assert.Equal(FrameType.Chunk, type);
        Assert.Equal(Protocol.MaxFrameLength - 1, body.Length);
    }

    [Theory]
    [InlineData(Protocol.MaxFrameLength + 1)]
    [InlineData(0x7FFFFFFF)]
    [InlineData(0xFFFFFFFF)]
    public void Oversized_length_is_rejected_before_buffering(uint length)
    {
        // Only the four length bytes have arrived: that is already enough to refuse.
        var header = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(header, length);

        var e = Assert.Throws<ProtocolException>(() =>
        {
            var buffer = new ReadOnlySequence<byte>(header);
            FrameCodec.TryReadFrame(ref buffer, out _, out _);
        });
        Assert.Contains(Protocol.MaxFrameLength.ToString(), e.Message);
        Assert.Contains(length.ToString(), e.Message);
    }

    [Fact]
    public void Oversized_length_is_rejected_with_a_whole_header_too()
    {
        byte[] header = [0x00, 0x01, 0x01, 0x01, (byte)FrameType.Chunk];

        var e = Assert.Throws<ProtocolException>(() =>
        {
            var buffer = new ReadOnlySequence<byte>(header);
            FrameCodec.TryReadFrame(ref buffer, out _, out _);
        });
        Assert.Contains("limit", e.Message);
        Assert.Contains(Protocol.MaxFrameLength.ToString(), e.Message);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(9)]
    public void Zero_length_is_rejected(int bufferedBytes)
    {
        var bytes = new byte[bufferedBytes];
        if (bufferedBytes > 4) bytes[4] = (byte)FrameType.Heartbeat;

        var e = Assert.Throws<ProtocolException>(() =>
        {
            var buffer = new ReadOnlySequence<byte>(bytes);
            FrameCodec.TryReadFrame(ref buffer, out _, out _);
        });
        Assert.Contains("length 0", e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(21)]
    [InlineData(0x7F)]
    [InlineData(0xFF)]
    public void Unknown_type_byte_is_rejected(byte typeByte)
    {
        byte[] frame = [0x00, 0x00, 0x00, 0x01, typeByte];

        var e = Assert.Throws<ProtocolException>(() =>
        {
            var buffer = new ReadOnlySequence<byte>(frame);
            FrameCodec.TryReadFrame(ref buffer, out _, out _);
        });
        Assert.Contains(typeByte.ToString(), e.Message);
    }

    [Fact]
    public void Hello_with_the_wrong_magic_is_refused()
    {
        var body = Frames.Body(Samples.Frame("hello")).ToArray();
        body[0] ^= 0x20; // "sHST"

        Assert.False(Samples.TryParse(FrameType.Hello, new ReadOnlySequence<byte>(body)));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(4)]
    [InlineData(255)]
    public void Hello_with_an_unknown_role_is_refused(byte role)
    {
        var body = Frames.Body(Samples.Frame("hello")).ToArray();
        body[8] = role; // after magic, min and max version

        Assert.False(Samples.TryParse(FrameType.Hello, new ReadOnlySequence<byte>(body)));
    }

    [Fact]
    public void Hello_with_more_than_sixteen_shards_is_refused()
    {
        var shards = Enumerable.Range(0, Protocol.MaxShards + 1).Select(i => new ShardStart((byte)i, 0)).ToArray();
        var body = Frames.Body(Frames.Encode(new Hello(1, 1, HelloRole.Attach, 1, 0, shards, "a:1").Write));

        Assert.False(Samples.TryParse(FrameType.Hello, body));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(Protocol.MaxShards + 1)]
    public void Welcome_with_a_shard_count_out_of_range_is_refused(byte shardCount)
    {
        var body = Frames.Body(Frames.Encode(new Welcome(1, 1, shardCount, 0, 0, []).Write));

        Assert.False(Samples.TryParse(FrameType.Welcome, body));
    }

    [Fact]
    public void Assignment_with_an_unknown_kind_is_refused()
    {
        var body = Frames.Body(Frames.Encode(new Move([new ShardAssignment(0, (AssignmentKind)2, 1, 0, "a:1")]).Write));

        Assert.False(Samples.TryParse(FrameType.Move, body));
    }

    [Fact]
    public void A_string_length_over_the_limit_is_refused()
    {
        // Goodbye body: code, then a string whose length field says 1025 and whose bytes are all there.
        var body = new byte[2 + 2 + Protocol.MaxStringLength + 1];
        BinaryPrimitives.WriteUInt16BigEndian(body.AsSpan(2), Protocol.MaxStringLength + 1);

        Assert.False(Samples.TryParse(FrameType.Goodbye, new ReadOnlySequence<byte>(body)));
    }

    [Fact]
    public void Invalid_utf8_in_a_string_is_malformed_and_does_not_throw()
    {
        // 0xC3 starts a two-byte sequence; 0x28 '(' cannot continue it. Decoded with replacement
        // characters it would grow (three bytes per U+FFFD) and could not be sent on.
        byte[] body = [0x00, 0x01, 0x00, 0x02, 0xC3, 0x28];
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));

        Assert.False(Goodbye.TryRead(ref reader, out _));
    }

    [Fact]
    public void Random_garbage_is_refused_or_rejected_but_never_throws_anything_else()
    {
        var random = new Random(20261124);
        var samples = Samples.Names.Select(Samples.Frame).ToArray();
        for (int i = 0; i < 5000; i++)
        {
            byte[] bytes = (i % 3) switch
            {
                // Pure noise.
                0 => RandomBytes(random, random.Next(0, 80)),
                // A plausible header (small length, known type) in front of a noisy body.
                1 => PlausibleFrame(random),
                // A real frame with a few bytes flipped, and perhaps cut short.
                _ => Mutate(random, samples[random.Next(samples.Length)]),
            };
            var sequence = random.Next(2) == 0 ? new ReadOnlySequence<byte>(bytes) : Segment.Split(bytes, random.Next(1, 8));
            ParseEverything(sequence, bytes);
        }
    }

    private static void ParseEverything(ReadOnlySequence<byte> buffer, byte[] bytes)
    {
        try
        {
            while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
                Samples.TryParse(type, body);
        }
        catch (ProtocolException)
        {
            // Rejected: the connection would be ended with this reason.
        }
        catch (Exception e)
        {
            Assert.Fail($"{e.GetType().Name} ({e.Message}) for input {Convert.ToHexString(bytes)}");
        }
    }

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    private static byte[] PlausibleFrame(Random random)
    {
        int bodyLength = random.Next(0, 60);
        var bytes = new byte[5 + bodyLength];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, (uint)(bodyLength + 1));
        bytes[4] = (byte)random.Next(1, (int)Enum.GetValues<FrameType>().Max() + 1);
        random.NextBytes(bytes.AsSpan(5));
        // Keep counts and string lengths small now and then so that readers get deep into a body.
        for (int j = 5; j < bytes.Length; j++)
            if (random.Next(3) == 0) bytes[j] = (byte)random.Next(0, 4);
        return bytes;
    }

    private static byte[] Mutate(Random random, byte[] frame)
    {
        var bytes = (byte[])frame.Clone();
        int flips = random.Next(1, 4);
        for (int j = 0; j < flips; j++)
        {
            // Spare the length field most of the time so that the body is reached.
            int at = random.Next(4) == 0 ? random.Next(bytes.Length) : random.Next(4, bytes.Length);
            bytes[at] = (byte)random.Next(256);
        }
        return random.Next(4) == 0 ? bytes[..random.Next(bytes.Length)] : bytes;
    }
}

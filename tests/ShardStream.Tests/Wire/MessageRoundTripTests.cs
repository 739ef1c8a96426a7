using System.Buffers;
using ShardStream.Wire;

namespace ShardStream.Tests.Wire;

public class MessageRoundTripTests
{
    [Theory]
    [MemberData(nameof(Samples.NameData), MemberType = typeof(Samples))]
    public void Every_message_round_trips_through_the_codec(string name)
    {
        var (type, body) = Frames.ReadSingle(Samples.Frame(name));

        Assert.Equal(Samples.TypeOf(name), type);
        Samples.AssertParsesToSample(name, body);
    }

    public static TheoryData<FrameType> Types() => [.. Enum.GetValues<FrameType>()];

    [Theory]
    [MemberData(nameof(Types))]
    public void Every_frame_type_has_a_sample_that_its_reader_accepts(FrameType type)
    {
        // The truncation, trailing-byte and garbage tests run over the samples only: a type added to
        // FrameType without one (or without a case in Samples.TryParse, which then throws) fails here.
        var names = Samples.Names.Where(n => Samples.TypeOf(n) == type).ToArray();

        Assert.True(names.Length > 0, $"no sample of {type} in Samples.cs");
        foreach (string name in names)
            Assert.True(Samples.TryParse(type, Frames.Body(Samples.Frame(name))), $"the {name} sample is refused");
    }

    public static TheoryData<string, int> SplitData()
    {
        var data = new TheoryData<string, int>();
        foreach (string name in Samples.Names)
            foreach (int size in new[] { 1, 2, 3, 5, 7, 64 })
                data.Add(name, size);
        return data;
    }

    [Theory]
    [MemberData(nameof(SplitData))]
    public void A_frame_split_across_many_segments_still_parses(string name, int segmentSize)
    {
        var frame = Samples.Frame(name);
        var sequence = Segment.Split(frame, Math.Min(segmentSize, frame.Length / 2));
        Assert.False(sequence.IsSingleSegment);

        var (type, body) = Frames.ReadSingle(sequence);

        Assert.Equal(Samples.TypeOf(name), type);
        Samples.AssertParsesToSample(name, body);
    }

    [Fact]
    public void Frames_cut_at_random_points_parse_one_after_another()
    {
        var random = new Random(1234);
        var stream = Samples.Names.SelectMany(Samples.Frame).ToArray();
        for (int round = 0; round < 50; round++)
        {
            var sizes = new List<int>();
            for (int left = stream.Length; left > 0;)
            {
                int size = Math.Min(left, random.Next(0, 40));
                sizes.Add(size);
                left -= size;
            }
            var buffer = Segment.Split(stream, sizes);

            foreach (string name in Samples.Names)
            {
                Assert.True(FrameCodec.TryReadFrame(ref buffer, out var type, out var body));
                Assert.Equal(Samples.TypeOf(name), type);
                Samples.AssertParsesToSample(name, body);
            }
            Assert.Equal(0, buffer.Length);
        }
    }

    [Fact]
    public void Hello_with_no_shards_and_an_empty_address_round_trips()
    {
        var hello = new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0, Hello.DefaultUpload, [], "");
        var body = Frames.Body(Frames.Encode(hello.Write));

        var reader = new SequenceReader<byte>(body);
        Assert.True(Hello.TryRead(ref reader, out var read));
        Samples.AssertEqual(hello, read);
    }

    [Fact]
    public void Hello_with_the_maximum_of_sixteen_shards_round_trips()
    {
        var shards = Enumerable.Range(0, Protocol.MaxShards).Select(i => new ShardStart((byte)i, (ulong)i * 1000)).ToArray();
        var hello = new Hello(1, 1, HelloRole.Attach, 7, 0, shards, "a:1");
        var body = Frames.Body(Frames.Encode(hello.Write));

        var reader = new SequenceReader<byte>(body);
        Assert.True(Hello.TryRead(ref reader, out var read));
        Samples.AssertEqual(hello, read);
    }

    [Fact]
    public void Welcome_redirect_to_the_coordinator_round_trips()
    {
        var welcome = new Welcome(Protocol.Version, 0, 1, 0, 0, [new ShardAssignment(0, AssignmentKind.Redirect, 0, 0, "127.0.0.1:9000")]);
        var body = Frames.Body(Frames.Encode(welcome.Write));

        var reader = new SequenceReader<byte>(body);
        Assert.True(Welcome.TryRead(ref reader, out var read));
        Samples.AssertEqual(welcome, read);
    }

    [Fact]
    public void Welcome_answering_a_probe_with_the_proof_of_the_join_token_round_trips()
    {
        byte[] proof = [.. Enumerable.Range(0, Protocol.ProbeProofLength).Select(i => (byte)(255 - i))];
        var welcome = new Welcome(Protocol.ProbeProofVersion, 0, 2, 0, 0, [], ProbeProof: proof);
        var body = Frames.Body(Frames.Encode(welcome.Write));
        Assert.Equal(2 + 8 + 1 + 8 + 8 + 1 + 1 + 1 + Protocol.ProbeProofLength, (int)body.Length);

        var reader = new SequenceReader<byte>(body);
        Assert.True(Welcome.TryRead(ref reader, out var read));
        Samples.AssertEqual(welcome, read);
        Assert.Equal(proof, read.ProbeProof);
        // Any other length after the run id is malformed.
        byte[] longer = [.. body.ToArray(), 0];
        var longerReader = new SequenceReader<byte>(new ReadOnlySequence<byte>(longer));
        Assert.False(Welcome.TryRead(ref longerReader, out _));
        var shorterReader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body.ToArray()[..^1]));
        Assert.False(Welcome.TryRead(ref shorterReader, out _));
    }

    [Fact]
    public void Chunk_with_the_largest_payload_round_trips()
    {
        var payload = new byte[Protocol.MaxChunkLength];
        new Random(7).NextBytes(payload);
        var frame = Frames.Encode(w => new ChunkHeader(15, ulong.MaxValue, ulong.MaxValue - 1).Write(w, payload));

        var (type, body) = Frames.ReadSingle(Segment.Split(frame, 4096));

        Assert.Equal(FrameType.Chunk, type);
        Assert.True(ChunkHeader.TryRead(body, out var header, out var read));
        Assert.Equal(new ChunkHeader(15, ulong.MaxValue, ulong.MaxValue - 1), header);
        Assert.Equal(payload, read.ToArray());
    }

    [Fact]
    public void Goodbye_reason_of_exactly_the_string_limit_round_trips()
    {
        var goodbye = new Goodbye(GoodbyeCode.Refused, new string('x', Protocol.MaxStringLength));
        var body = Frames.Body(Frames.Encode(goodbye.Write));

        var reader = new SequenceReader<byte>(body);
        Assert.True(Goodbye.TryRead(ref reader, out var read));
        Assert.Equal(goodbye, read);
    }

    [Fact]
    public void Writing_a_string_over_the_limit_is_refused_with_the_limit_named()
    {
        // Counted in UTF-8 bytes, not characters: 513 two-byte characters are 1026 bytes.
        var goodbye = new Goodbye(GoodbyeCode.Normal, new string('é', 513));

        var e = Assert.Throws<ArgumentException>(() => Frames.Encode(goodbye.Write));
        Assert.Contains(Protocol.MaxStringLength.ToString(), e.Message);
    }

    [Fact]
    public void Goodbye_with_an_unknown_code_still_reads_so_that_its_reason_is_logged()
    {
        var body = Frames.Body(Frames.Encode(new Goodbye((GoodbyeCode)999, "from the future").Write));

        var reader = new SequenceReader<byte>(body);
        Assert.True(Goodbye.TryRead(ref reader, out var read));
        Assert.Equal((GoodbyeCode)999, read.Code);
        Assert.Equal("from the future", read.Reason);
    }

    [Fact]
    public void Move_and_parent_lost_with_no_entries_round_trip()
    {
        var moveBody = Frames.Body(Frames.Encode(new Move([]).Write));
        var r1 = new SequenceReader<byte>(moveBody);
        Assert.True(Move.TryRead(ref r1, out var move));
        Assert.Empty(move.Shards);

        var lostBody = Frames.Body(Frames.Encode(new ParentLost(3, []).Write));
        var r2 = new SequenceReader<byte>(lostBody);
        Assert.True(ParentLost.TryRead(ref r2, out var lost));
        Assert.Equal(3UL, lost.ParentId);
        Assert.Empty(lost.Shards);
    }
}

using System.Buffers;
using ShardStream.Wire;

namespace ShardStream.Tests.Wire;

/// <summary>The version-6 frames and fields: Ping, Pong, Landmarks, a coordinate in Heartbeat and Hello.</summary>
public sealed class PingFrameTests
{
    private static readonly WireCoordinate Somewhere = new(-12.5f, 40.25f, 3.5f, 0.25f);

    [Fact]
    public void Ping_and_pong_have_the_documented_bytes()
    {
        Assert.Equal(Frames.Hex("00000009 10 0000000000000007"), Frames.Encode(new Ping(7).Write));
        // Token 7, held 1000 us, at (1, -2) height 0.5, error 0.25: IEEE 754 singles, big-endian.
        Assert.Equal(Frames.Hex("0000001D 11 0000000000000007 000003E8 3F800000 C0000000 3F000000 3E800000"),
            Frames.Encode(new Pong(7, 1000, new WireCoordinate(1, -2, 0.5f, 0.25f)).Write));
    }

    [Fact]
    public void Pong_leaves_its_hold_where_the_writer_fills_it_in()
    {
        var frame = Frames.Encode(new Pong(1, 0, Somewhere).Write);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(Pong.HoldOffsetInFrame), 4242);
        var reader = new SequenceReader<byte>(Frames.Body(frame));
        Assert.True(Pong.TryRead(ref reader, out var pong));
        Assert.Equal(new Pong(1, 4242, Somewhere), pong);
    }

    [Fact]
    public void Landmarks_round_trip()
    {
        var landmarks = new Landmarks([new Landmark(0, "", Somewhere), new Landmark(9, "10.0.0.9:7000", WireCoordinate.Unknown)]);
        var reader = new SequenceReader<byte>(Frames.Body(Frames.Encode(landmarks.Write)));
        Assert.True(Landmarks.TryRead(ref reader, out var read));
        Assert.Equal(landmarks.Nodes, read.Nodes);
    }

    [Fact]
    public void Version_10_landmarks_end_with_the_version_the_connection_speaks()
    {
        // One landmark (the coordinator, empty address, unknown coordinate: NaN NaN NaN 1), then version 10.
        var frame = Frames.Encode(new Landmarks([new Landmark(0, "", WireCoordinate.Unknown)], Protocol.OneConnectionVersion).Write);
        Assert.Equal(Frames.Encode(new Landmarks([new Landmark(0, "", WireCoordinate.Unknown)]).Write).Length + 2, frame.Length);
        Assert.Equal([0x00, 0x0A], frame[^2..]);
        var reader = new SequenceReader<byte>(Frames.Body(frame));
        Assert.True(Landmarks.TryRead(ref reader, out var read));
        Assert.Equal(Protocol.OneConnectionVersion, read.Version);

        // A version-9 frame has none (0: the coordinator closes), and a trailer below 10 is malformed.
        reader = new SequenceReader<byte>(Frames.Body(Frames.Encode(new Landmarks([new Landmark(0, "", Somewhere)]).Write)));
        Assert.True(Landmarks.TryRead(ref reader, out read));
        Assert.Equal(0, read.Version);
        var body = Frames.Body(frame).ToArray();
        body[^1] = 9;
        reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.False(Landmarks.TryRead(ref reader, out _));
    }

    [Fact]
    public void A_heartbeat_carries_a_coordinate_or_not()
    {
        foreach (var heartbeat in new[] { new Heartbeat(5), new Heartbeat(5, Somewhere) })
        {
            var reader = new SequenceReader<byte>(Frames.Body(Frames.Encode(heartbeat.Write)));
            Assert.True(Heartbeat.TryRead(ref reader, out var read));
            Assert.Equal(heartbeat, read);
        }
    }

    [Fact]
    public void A_version_11_heartbeat_carries_the_rtts_to_the_parents_after_the_coordinate()
    {
        var heartbeat = new Heartbeat(5, new WireCoordinate(1, -2, 0.5f, 0.25f), [new ParentRtt(3, 150_000, 140_500, 7)]);
        var frame = Frames.Encode(heartbeat.Write);
        Assert.Equal(Frames.Hex("0000002C 06 0000000000000005  3F800000 C0000000 3F000000 3E800000  01  0000000000000003 000249F0 000224D4 0007"), frame);
        var reader = new SequenceReader<byte>(Frames.Body(frame));
        Assert.True(Heartbeat.TryRead(ref reader, out var read));
        Assert.Equal(heartbeat.Coordinate, read.Coordinate);
        Assert.Equal(heartbeat.ParentRtts, read.ParentRtts);

        // No parent measured yet: a count of 0.
        reader = new SequenceReader<byte>(Frames.Body(Frames.Encode(new Heartbeat(0, Somewhere, []).Write)));
        Assert.True(Heartbeat.TryRead(ref reader, out read));
        Assert.Equal([], read.ParentRtts!);

        // More entries than shards, or a byte left over: malformed.
        var body = Frames.Body(Frames.Encode(new Heartbeat(0, Somewhere, [.. Enumerable.Range(0, Protocol.MaxShards + 1).Select(i => new ParentRtt((ulong)i, 1, 1, 1))]).Write)).ToArray();
        reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.False(Heartbeat.TryRead(ref reader, out _));
        body = [.. Frames.Body(frame).ToArray(), 0];
        reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.False(Heartbeat.TryRead(ref reader, out _));
    }

    [Fact]
    public void A_version_14_heartbeat_of_the_coordinator_carries_the_streams_head_after_an_empty_list_of_parent_rtts()
    {
        var heartbeat = new Heartbeat(1000, new WireCoordinate(1, -2, 0.5f, 0.25f), null, 0x0102);
        var frame = Frames.Encode(heartbeat.Write);
        Assert.Equal(Frames.Hex("00000022 06 00000000000003E8  3F800000 C0000000 3F000000 3E800000  00  0000000000000102"), frame);
        var reader = new SequenceReader<byte>(Frames.Body(frame));
        Assert.True(Heartbeat.TryRead(ref reader, out var read));
        Assert.Equal(0x0102UL, read.Head);
        Assert.Equal([], read.ParentRtts!);

        // A head cut short, or a byte after it: malformed.
        foreach (var body in new[] { Frames.Body(frame).ToArray()[..^1], [.. Frames.Body(frame).ToArray(), 0] })
        {
            reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
            Assert.False(Heartbeat.TryRead(ref reader, out _));
        }
    }

    [Fact]
    public void A_version_6_hello_carries_the_coordinate_and_the_measured_rtts()
    {
        var hello = new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 77, Hello.DefaultUpload, [], "p1:1", new byte[Protocol.NonceLength], null,
            Somewhere, [new MeasuredRtt(0, 80_000), new MeasuredRtt(4, 12_345)]);
        var reader = new SequenceReader<byte>(Frames.Body(Frames.Encode(hello.Write)));
        Assert.True(Hello.TryRead(ref reader, out var read));
        Assert.Equal(Somewhere, read.Coordinate);
        Assert.Equal(hello.Measured, read.Measured);
    }

    [Fact]
    public void A_version_5_hello_has_no_coordinate()
    {
        var hello = new Hello(Protocol.MinVersion, 5, HelloRole.Join, 77, Hello.DefaultUpload, [], "p1:1", new byte[Protocol.NonceLength], null, Somewhere);
        var frame = Frames.Encode(hello.Write);
        var reader = new SequenceReader<byte>(Frames.Body(frame));
        Assert.True(Hello.TryRead(ref reader, out var read));
        Assert.Null(read.Coordinate);
        var v6 = Frames.Encode((hello with { MaxVersion = 6 }).Write);
        Assert.Equal(frame.Length + WireCoordinate.Length + 1, v6.Length);
    }

    [Theory]
    [InlineData(float.NaN, 0f, 1f, 0.5f)]
    [InlineData(0f, float.PositiveInfinity, 1f, 0.5f)]
    [InlineData(0f, 0f, -1f, 0.5f)]
    [InlineData(0f, 0f, 1f, 1.5f)]
    [InlineData(0f, 0f, 1f, -0.1f)]
    public void A_coordinate_out_of_range_makes_the_frame_malformed(float x, float y, float height, float error)
    {
        var frame = Frames.Encode(new Pong(1, 0, new WireCoordinate(x, y, height, error)).Write);
        var reader = new SequenceReader<byte>(Frames.Body(frame));
        Assert.False(Pong.TryRead(ref reader, out _));
        var heartbeat = Frames.Encode(new Heartbeat(0, new WireCoordinate(x, y, height, error)).Write);
        reader = new SequenceReader<byte>(Frames.Body(heartbeat));
        Assert.False(Heartbeat.TryRead(ref reader, out _));
    }

    [Theory]
    [InlineData("00")] // no entries
    [InlineData("01 0000000000000000 0000 00000000 00000000 00000000 00000000 FF")] // a byte after the last entry
    [InlineData("01 0000000000000000 0000 00000000 00000000 00000000")] // truncated coordinate
    [InlineData("00000000000000")] // a ping of 7 bytes
    public void Malformed_bodies_are_refused(string hex)
    {
        var body = new ReadOnlySequence<byte>(Frames.Hex(hex));
        var reader = new SequenceReader<byte>(body);
        Assert.False(Landmarks.TryRead(ref reader, out _));
        reader = new SequenceReader<byte>(body);
        Assert.False(Ping.TryRead(ref reader, out _));
    }
}

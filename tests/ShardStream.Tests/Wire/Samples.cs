using System.Buffers;
using ShardStream.Wire;
using W = ShardStream.Wire;

namespace ShardStream.Tests.Wire;

/// <summary>One encoded sample of every frame type, with a check that a parsed body matches it.</summary>
internal static class Samples
{
    public static readonly Hello Hello = new(3, 4, HelloRole.Attach, 0x0102030405060708, 250,
        [new ShardStart(0, 17), new ShardStart(1, ulong.MaxValue), new ShardStart(15, 0)], "peer-7.example:4040");

    public static readonly Welcome Welcome = new(3, 42, 3, 1000, 123_456_789_012, [
        new ShardAssignment(0, AssignmentKind.Served, 0, 1000, ""),
        new ShardAssignment(1, AssignmentKind.Redirect, 9, 1001, "10.0.0.9:7000"),
        new ShardAssignment(2, AssignmentKind.Redirect, 12, 1002, "[::1]:7001"),
    ]);

    public static readonly ChunkHeader ChunkHeader = new(1, 77, 5_000_000_000);

    public static readonly byte[] ChunkPayload = [.. Enumerable.Range(0, 300).Select(i => (byte)(i * 7))];

    public static readonly End End = new(2, 1234, 9_876_543_210, [.. Enumerable.Range(0, 64).Select(i => (byte)(255 - i))]);

    public static readonly HashList HashList = new(3, 1_000_003, [.. Enumerable.Range(0, 3 * 32).Select(i => (byte)i)], [.. Enumerable.Range(0, 64).Select(i => (byte)(i * 3))]);

    public static readonly Goodbye Goodbye = new(GoodbyeCode.TooSlow, "too slow: 70000000 bytes waiting — ünïcödé");

    public static readonly Heartbeat Heartbeat = new(0xDEADBEEFCAFEF00D);

    public static readonly Attached Attached = new(31337);

    public static readonly Move Move = new([
        new ShardAssignment(1, AssignmentKind.Redirect, 5, 0, "host-5:9000"),
        new ShardAssignment(0, AssignmentKind.Redirect, 0, 0, "coordinator:8000"),
    ]);

    public static readonly ParentLost ParentLost = new(5, [new ShardStart(1, 401), new ShardStart(0, 400)], "chunk 7 of shard 1 does not match the stream's signed hash");

    public static readonly Fill Fill = new([new ShardStart(3, 1203), new ShardStart(7, 1207)], 1600);

    public static readonly DropChild DropChild = new(0x0102030405060708);

    public static readonly Detach Detach = new([0, 7, 15]);

    public static readonly Leave Leave = new(0x1122334455667788);

    /// <summary>The version-8 form, with the rates; its first 12 bytes are the older form.</summary>
    public static readonly SlowChild SlowChild = new(424_242, 2750, (1800, 2500));

    public static readonly Notice Notice = new(NoticeCode.Leaf, "nobody could connect to 10.0.0.9:7000 — ünïcödé");

    /// <summary>An FLV file header and the first previous-tag-size; the header bytes run to the end of the body.</summary>
    public static readonly StreamHeader StreamHeader = new(1, 7, 400, [.. "FLV"u8, 1, 5, 0, 0, 0, 9, 0, 0, 0, 0], [.. Enumerable.Range(0, 64).Select(i => (byte)(i * 5))]);

    public static readonly Ping Ping = new(0x0123456789ABCDEF);

    public static readonly Pong Pong = new(0x0123456789ABCDEF, 1500, new WireCoordinate(12.5f, -3.25f, 4f, 0.3f));

    /// <summary>The version-10 form, ending in the version; <see cref="LandmarksV9"/> is the form without it.</summary>
    public static readonly Landmarks Landmarks = new([
        new Landmark(0, "", WireCoordinate.Unknown),
        new Landmark(9, "10.0.0.9:7000", new WireCoordinate(-12.5f, 40.25f, 3.5f, 0.25f)),
        new Landmark(12, "[::1]:7001", new WireCoordinate(0.5f, 0, 0, 0)),
    ], Protocol.OneConnectionVersion);

    public static readonly Landmarks LandmarksV9 = Landmarks with { Version = 0 };

    public static IEnumerable<string> Names => ["hello", "welcome", "chunk", "end", "goodbye", "heartbeat", "attached", "move", "parent-lost", "hashes", "fill", "drop-child",
        "detach", "leave", "slow-child", "notice", "stream-header", "ping", "pong", "landmarks", "landmarks-v9"];

    public static TheoryData<string> NameData() => [.. Names];

    public static byte[] Frame(string name) => Frames.Encode(w =>
    {
        switch (name)
        {
            case "hello": Hello.Write(w); break;
            case "welcome": Welcome.Write(w); break;
            case "chunk": ChunkHeader.Write(w, ChunkPayload); break;
            case "end": End.Write(w); break;
            case "goodbye": Goodbye.Write(w); break;
            case "heartbeat": Heartbeat.Write(w); break;
            case "attached": Attached.Write(w); break;
            case "move": Move.Write(w); break;
            case "parent-lost": ParentLost.Write(w); break;
            case "hashes": HashList.Write(w); break;
            case "fill": Fill.Write(w); break;
            case "drop-child": DropChild.Write(w); break;
            case "detach": Detach.Write(w); break;
            case "leave": Leave.Write(w); break;
            case "slow-child": SlowChild.Write(w); break;
            case "notice": Notice.Write(w); break;
            case "stream-header": StreamHeader.Write(w); break;
            case "ping": Ping.Write(w); break;
            case "pong": Pong.Write(w); break;
            case "landmarks": Landmarks.Write(w); break;
            case "landmarks-v9": LandmarksV9.Write(w); break;
            default: throw new ArgumentOutOfRangeException(nameof(name), name, null);
        }
    });

    public static FrameType TypeOf(string name) => name switch
    {
        "hello" => FrameType.Hello,
        "welcome" => FrameType.Welcome,
        "chunk" => FrameType.Chunk,
        "end" => FrameType.End,
        "goodbye" => FrameType.Goodbye,
        "heartbeat" => FrameType.Heartbeat,
        "attached" => FrameType.Attached,
        "move" => FrameType.Move,
        "parent-lost" => FrameType.ParentLost,
        "hashes" => FrameType.Hashes,
        "fill" => FrameType.Fill,
        "drop-child" => FrameType.DropChild,
        "detach" => FrameType.Detach,
        "leave" => FrameType.Leave,
        "slow-child" => FrameType.SlowChild,
        "notice" => FrameType.Notice,
        "stream-header" => FrameType.StreamHeader,
        "ping" => FrameType.Ping,
        "pong" => FrameType.Pong,
        "landmarks" or "landmarks-v9" => FrameType.Landmarks,
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, null),
    };

    /// <summary>
    /// True when the first <paramref name="length"/> bytes of the sample's body (shorter than the
    /// whole) are themselves a body its reader accepts: a chunk or stream header with fewer payload
    /// bytes, or the older form of a message whose newer form adds an ending.
    /// </summary>
    public static bool PrefixIsWholeBody(string name, int length, int bodyLength) => name switch
    {
        "chunk" => length > Protocol.ChunkHeaderLength,
        "stream-header" => length >= W.StreamHeader.FixedLength,
        "slow-child" => length == W.SlowChild.BodyLength,
        "landmarks" => length == bodyLength - 2,
        _ => false,
    };

    /// <summary>True for the types whose last field runs to the end of the body, so that a trailing byte is part of it.</summary>
    public static bool RunsToTheEnd(FrameType type) => type is FrameType.Chunk or FrameType.StreamHeader;

    /// <summary>Parses <paramref name="body"/> as the sample's type; false when the type's reader refuses it.</summary>
    public static bool TryParse(FrameType type, ReadOnlySequence<byte> body)
    {
        var r = new SequenceReader<byte>(body);
        return type switch
        {
            FrameType.Hello => W.Hello.TryRead(ref r, out _),
            FrameType.Welcome => W.Welcome.TryRead(ref r, out _),
            FrameType.Chunk => W.ChunkHeader.TryRead(body, out _, out _),
            FrameType.End => W.End.TryRead(ref r, out _),
            FrameType.Goodbye => W.Goodbye.TryRead(ref r, out _),
            FrameType.Heartbeat => W.Heartbeat.TryRead(ref r, out _),
            FrameType.Attached => W.Attached.TryRead(ref r, out _),
            FrameType.Move => W.Move.TryRead(ref r, out _),
            FrameType.ParentLost => W.ParentLost.TryRead(ref r, out _),
            FrameType.Detach => W.Detach.TryRead(ref r, out _),
            FrameType.Leave => W.Leave.TryRead(ref r, out _),
            FrameType.SlowChild => W.SlowChild.TryRead(ref r, out _),
            FrameType.Hashes => W.HashList.TryRead(ref r, out _),
            FrameType.Notice => W.Notice.TryRead(ref r, out _),
            FrameType.StreamHeader => W.StreamHeader.TryRead(ref r, out _),
            FrameType.Ping => W.Ping.TryRead(ref r, out _),
            FrameType.Pong => W.Pong.TryRead(ref r, out _),
            FrameType.Landmarks => W.Landmarks.TryRead(ref r, out _),
            FrameType.Fill => W.Fill.TryRead(ref r, out _),
            FrameType.DropChild => W.DropChild.TryRead(ref r, out _),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
        };
    }

    /// <summary>Asserts that <paramref name="body"/> parses to exactly the sample called <paramref name="name"/>.</summary>
    public static void AssertParsesToSample(string name, ReadOnlySequence<byte> body)
    {
        switch (name)
        {
            case "hello": AssertEqual(Hello, Read<Hello>(W.Hello.TryRead, body)); break;
            case "welcome": AssertEqual(Welcome, Read<Welcome>(W.Welcome.TryRead, body)); break;
            case "chunk":
                Assert.True(W.ChunkHeader.TryRead(body, out var header, out var payload));
                Assert.Equal(ChunkHeader, header);
                Assert.Equal(ChunkPayload, payload.ToArray());
                break;
            case "end":
                var end = Read<End>(W.End.TryRead, body);
                Assert.Equal((End.Shard, End.FinalSeq, End.FinalOffset), (end.Shard, end.FinalSeq, end.FinalOffset));
                Assert.Equal(End.Signature, end.Signature);
                break;
            case "goodbye": Assert.Equal(Goodbye, Read<Goodbye>(W.Goodbye.TryRead, body)); break;
            case "heartbeat": Assert.Equal(Heartbeat, Read<Heartbeat>(W.Heartbeat.TryRead, body)); break;
            case "attached": Assert.Equal(Attached, Read<Attached>(W.Attached.TryRead, body)); break;
            case "move": Assert.Equal(Move.Shards, Read<Move>(W.Move.TryRead, body).Shards); break;
            case "parent-lost":
                var lost = Read<ParentLost>(W.ParentLost.TryRead, body);
                Assert.Equal(ParentLost.ParentId, lost.ParentId);
                Assert.Equal(ParentLost.Shards, lost.Shards);
                Assert.Equal(ParentLost.Violation, lost.Violation);
                break;
            case "hashes":
                var list = Read<HashList>(W.HashList.TryRead, body);
                Assert.Equal((HashList.Shard, HashList.FirstSeq, HashList.Count), (list.Shard, list.FirstSeq, list.Count));
                Assert.Equal(HashList.Hashes, list.Hashes);
                Assert.Equal(HashList.Signature, list.Signature);
                break;
            case "fill":
                var fill = Read<Fill>(W.Fill.TryRead, body);
                Assert.Equal(Fill.Shards, fill.Shards);
                Assert.Equal(Fill.UntilSeq, fill.UntilSeq);
                break;
            case "drop-child": Assert.Equal(DropChild, Read<DropChild>(W.DropChild.TryRead, body)); break;
            case "detach": Assert.Equal(Detach.Shards, Read<Detach>(W.Detach.TryRead, body).Shards); break;
            case "leave": Assert.Equal(Leave, Read<Leave>(W.Leave.TryRead, body)); break;
            case "slow-child": Assert.Equal(SlowChild, Read<SlowChild>(W.SlowChild.TryRead, body)); break;
            case "notice": Assert.Equal(Notice, Read<Notice>(W.Notice.TryRead, body)); break;
            case "stream-header":
                var streamHeader = Read<StreamHeader>(W.StreamHeader.TryRead, body);
                Assert.Equal((StreamHeader.Format, StreamHeader.Generation, StreamHeader.FromSeq), (streamHeader.Format, streamHeader.Generation, streamHeader.FromSeq));
                Assert.Equal(StreamHeader.Bytes, streamHeader.Bytes);
                Assert.Equal(StreamHeader.Signature, streamHeader.Signature);
                break;
            case "ping": Assert.Equal(Ping, Read<Ping>(W.Ping.TryRead, body)); break;
            case "pong": Assert.Equal(Pong, Read<Pong>(W.Pong.TryRead, body)); break;
            case "landmarks" or "landmarks-v9":
                var expected = name == "landmarks" ? Landmarks : LandmarksV9;
                var landmarks = Read<Landmarks>(W.Landmarks.TryRead, body);
                Assert.Equal(expected.Nodes, landmarks.Nodes);
                Assert.Equal(expected.Version, landmarks.Version);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(name), name, null);
        }
    }

    private delegate bool Reader<T>(ref SequenceReader<byte> r, out T value);

    /// <summary>Asserts that <paramref name="read"/> accepts <paramref name="body"/>, and returns what it read.</summary>
    private static T Read<T>(Reader<T> read, ReadOnlySequence<byte> body)
    {
        var r = new SequenceReader<byte>(body);
        Assert.True(read(ref r, out var value));
        return value;
    }

    /// <summary>Field by field; the arrays element by element (a record's own equality compares array references).</summary>
    public static void AssertEqual(Hello expected, Hello actual)
    {
        Assert.Equal(expected.MinVersion, actual.MinVersion);
        Assert.Equal(expected.MaxVersion, actual.MaxVersion);
        Assert.Equal(expected.Role, actual.Role);
        Assert.Equal(expected.PeerId, actual.PeerId);
        Assert.Equal(expected.UploadPercent, actual.UploadPercent);
        Assert.Equal(expected.Shards, actual.Shards);
        Assert.Equal(expected.ListenAddress, actual.ListenAddress);
    }

    public static void AssertEqual(Welcome expected, Welcome actual)
    {
        Assert.Equal(expected.Version, actual.Version);
        Assert.Equal(expected.PeerId, actual.PeerId);
        Assert.Equal(expected.ShardCount, actual.ShardCount);
        Assert.Equal(expected.StartSeq, actual.StartSeq);
        Assert.Equal(expected.StartOffset, actual.StartOffset);
        Assert.Equal(expected.Shards, actual.Shards);
    }
}

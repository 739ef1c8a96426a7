using System.Buffers;
using ShardStream.Wire;

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

    public static IEnumerable<string> Names => ["hello", "welcome", "chunk", "end", "goodbye", "heartbeat", "attached", "move", "parent-lost", "hashes", "fill", "drop-child"];

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
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, null),
    };

    /// <summary>Parses <paramref name="body"/> as the sample's type; false when the type's reader refuses it.</summary>
    public static bool TryParse(FrameType type, ReadOnlySequence<byte> body)
    {
        var r = new SequenceReader<byte>(body);
        return type switch
        {
            FrameType.Hello => global::ShardStream.Wire.Hello.TryRead(ref r, out _),
            FrameType.Welcome => global::ShardStream.Wire.Welcome.TryRead(ref r, out _),
            FrameType.Chunk => global::ShardStream.Wire.ChunkHeader.TryRead(body, out _, out _),
            FrameType.End => global::ShardStream.Wire.End.TryRead(ref r, out _),
            FrameType.Goodbye => global::ShardStream.Wire.Goodbye.TryRead(ref r, out _),
            FrameType.Heartbeat => global::ShardStream.Wire.Heartbeat.TryRead(ref r, out _),
            FrameType.Attached => global::ShardStream.Wire.Attached.TryRead(ref r, out _),
            FrameType.Move => global::ShardStream.Wire.Move.TryRead(ref r, out _),
            FrameType.ParentLost => global::ShardStream.Wire.ParentLost.TryRead(ref r, out _),
            FrameType.Hashes => global::ShardStream.Wire.HashList.TryRead(ref r, out _),
            FrameType.Notice => global::ShardStream.Wire.Notice.TryRead(ref r, out _),
            FrameType.StreamHeader => global::ShardStream.Wire.StreamHeader.TryRead(ref r, out _),
            FrameType.Fill => global::ShardStream.Wire.Fill.TryRead(ref r, out _),
            FrameType.DropChild => global::ShardStream.Wire.DropChild.TryRead(ref r, out _),
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
        };
    }

    /// <summary>Asserts that <paramref name="body"/> parses to exactly the sample called <paramref name="name"/>.</summary>
    public static void AssertParsesToSample(string name, ReadOnlySequence<byte> body)
    {
        var r = new SequenceReader<byte>(body);
        switch (name)
        {
            case "hello":
                Assert.True(global::ShardStream.Wire.Hello.TryRead(ref r, out var hello));
                AssertEqual(Hello, hello);
                break;
            case "welcome":
                Assert.True(global::ShardStream.Wire.Welcome.TryRead(ref r, out var welcome));
                AssertEqual(Welcome, welcome);
                break;
            case "chunk":
                Assert.True(global::ShardStream.Wire.ChunkHeader.TryRead(body, out var header, out var payload));
                Assert.Equal(ChunkHeader, header);
                Assert.Equal(ChunkPayload, payload.ToArray());
                break;
            case "end":
                Assert.True(global::ShardStream.Wire.End.TryRead(ref r, out var end));
                Assert.Equal((End.Shard, End.FinalSeq, End.FinalOffset), (end.Shard, end.FinalSeq, end.FinalOffset));
                Assert.Equal(End.Signature, end.Signature);
                break;
            case "goodbye":
                Assert.True(global::ShardStream.Wire.Goodbye.TryRead(ref r, out var goodbye));
                Assert.Equal(Goodbye, goodbye);
                break;
            case "heartbeat":
                Assert.True(global::ShardStream.Wire.Heartbeat.TryRead(ref r, out var heartbeat));
                Assert.Equal(Heartbeat, heartbeat);
                break;
            case "attached":
                Assert.True(global::ShardStream.Wire.Attached.TryRead(ref r, out var attached));
                Assert.Equal(Attached, attached);
                break;
            case "move":
                Assert.True(global::ShardStream.Wire.Move.TryRead(ref r, out var move));
                Assert.Equal(Move.Shards, move.Shards);
                break;
            case "parent-lost":
                Assert.True(global::ShardStream.Wire.ParentLost.TryRead(ref r, out var lost));
                Assert.Equal(ParentLost.ParentId, lost.ParentId);
                Assert.Equal(ParentLost.Shards, lost.Shards);
                Assert.Equal(ParentLost.Violation, lost.Violation);
                break;
            case "hashes":
                Assert.True(global::ShardStream.Wire.HashList.TryRead(ref r, out var list));
                Assert.Equal((HashList.Shard, HashList.FirstSeq, HashList.Count), (list.Shard, list.FirstSeq, list.Count));
                Assert.Equal(HashList.Hashes, list.Hashes);
                Assert.Equal(HashList.Signature, list.Signature);
                break;
            case "fill":
                Assert.True(global::ShardStream.Wire.Fill.TryRead(ref r, out var fill));
                Assert.Equal(Fill.Shards, fill.Shards);
                Assert.Equal(Fill.UntilSeq, fill.UntilSeq);
                break;
            case "drop-child":
                Assert.True(global::ShardStream.Wire.DropChild.TryRead(ref r, out var drop));
                Assert.Equal(DropChild, drop);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(name), name, null);
        }
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

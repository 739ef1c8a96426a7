using System.Buffers;
using ShardStream.Wire;

namespace ShardStream.Tests.Wire;

/// <summary>
/// Hand-written byte vectors pin the wire layout (docs/protocol.md): every integer big-endian,
/// the length counting the type byte and the body, strings as u16 length then UTF-8.
/// </summary>
public class ByteLayoutTests
{
    [Theory]
    // length 9 | type 6 | u64 value
    [InlineData("heartbeat", "00000009 06 0102030405060708")]
    // length 9 | type 7 | u64 peer id
    [InlineData("attached", "00000009 07 000000000000002A")]
    // length 20 | type 3 | shard 1 | seq 2 | offset 0x1000 | payload "AB"
    [InlineData("chunk", "00000014 03 01 0000000000000002 0000000000001000 4142")]
    // length 82 | type 4 | shard 1 | final seq 10 | final offset 0x0102 | signature (64 bytes, here 0x11 each)
    [InlineData("end", "00000052 04 01 000000000000000A 0000000000000102 " + Sig11)]
    // length 139 | type 13 | shard 1 | first seq 3 | 2 hashes (0xAA…, 0xBB…) | signature (0x11 each)
    [InlineData("hashes", "0000008B 0D 01 0000000000000003 02 " + HashAA + " " + HashBB + " " + Sig11)]
    // length 9 | type 5 | code 3 (too slow) | reason: u16 4 | "slow"
    [InlineData("goodbye", "00000009 05 0003 0004 736C6F77")]
    // length 5 | type 5 | code 0 (normal) | empty reason
    [InlineData("goodbye-empty", "00000005 05 0000 0000")]
    // length 54 | type 1 | "SHST" | min 3 | max 3 | role 2 (attach) | peer 5 | upload 150 | 1 shard: shard 1 from seq 7 | "a:1"
    //   | nonce (16 bytes, 0x01…0x10) | ticket: u8 2 | CAFE
    [InlineData("hello", "00000036 01 53485354 0003 0003 02 0000000000000005 0096 01 01 0000000000000007 0003 613A31 0102030405060708090A0B0C0D0E0F10 02 CAFE")]
    // length 35 | type 1 | "SHST" | min 1 | max 1 | …: a version-1 hello has no nonce and no ticket
    [InlineData("hello-v1", "00000023 01 53485354 0001 0001 02 0000000000000005 0096 01 01 0000000000000007 0003 613A31")]
    // length 55 | type 2 | version 3 | peer 9 | K 2 | start seq 4 | start offset 0x100 | 1 entry:
    //   shard 1 | redirect | parent 3 | from seq 5 | "b:2" | ticket: u8 0 | proof: u8 0 | run id: u8 0
    [InlineData("welcome", "00000037 02 0003 0000000000000009 02 0000000000000004 0000000000000100 01 01 01 0000000000000003 0000000000000005 0003 623A32 00 00 00")]
    // length 26 | type 8 | 1 entry: shard 0 | redirect | parent 0 | from seq 0 | "c:3" | ticket: u8 0
    [InlineData("move", "0000001A 08 01 00 01 0000000000000000 0000000000000000 0003 633A33 00")]
    // length 24 | type 9 | parent 4 | 1 entry: shard 1 from seq 0x0203 | violation: "bad"
    [InlineData("parent-lost", "00000018 09 0000000000000004 01 01 0000000000000203 0003 626164")]
    // length 13 | type 12 | child 7 | queue age 2500 ms (version 2)
    [InlineData("slow-child", "0000000D 0C 0000000000000007 000009C4")]
    // length 9 | type 20 | child 7 (version 12)
    [InlineData("drop-child", "00000009 14 0000000000000007")]
    public void Frames_have_the_documented_big_endian_layout(string name, string hex)
    {
        var expected = Frames.Hex(hex);

        var written = Frames.Encode(w => Write(name, w));

        Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(written));
    }

    [Theory]
    [InlineData("heartbeat", "00000009 06 0102030405060708")]
    [InlineData("chunk", "00000014 03 01 0000000000000002 0000000000001000 4142")]
    [InlineData("goodbye", "00000009 05 0003 0004 736C6F77")]
    [InlineData("hello", "00000036 01 53485354 0003 0003 02 0000000000000005 0096 01 01 0000000000000007 0003 613A31 0102030405060708090A0B0C0D0E0F10 02 CAFE")]
    public void Hand_written_vectors_decode_to_the_expected_message(string name, string hex)
    {
        var (type, body) = Frames.ReadSingle(Frames.Hex(hex));
        var reader = new SequenceReader<byte>(body);

        switch (name)
        {
            case "heartbeat":
                Assert.Equal(FrameType.Heartbeat, type);
                Assert.True(Heartbeat.TryRead(ref reader, out var heartbeat));
                Assert.Equal(0x0102030405060708UL, heartbeat.Value);
                break;
            case "chunk":
                Assert.Equal(FrameType.Chunk, type);
                Assert.True(ChunkHeader.TryRead(body, out var header, out var payload));
                Assert.Equal(new ChunkHeader(1, 2, 0x1000), header);
                Assert.Equal("AB"u8.ToArray(), payload.ToArray());
                break;
            case "goodbye":
                Assert.Equal(FrameType.Goodbye, type);
                Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
                Assert.Equal(new Goodbye(GoodbyeCode.TooSlow, "slow"), goodbye);
                break;
            case "hello":
                Assert.Equal(FrameType.Hello, type);
                Assert.True(Hello.TryRead(ref reader, out var hello));
                Samples.AssertEqual(new Hello(3, 3, HelloRole.Attach, 5, 150, [new ShardStart(1, 7)], "a:1"), hello);
                Assert.Equal(Nonce, hello.Nonce);
                Assert.Equal([0xCA, 0xFE], hello.Ticket);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(name), name, null);
        }
    }

    [Theory]
    [InlineData("00000001 06", FrameType.Heartbeat, 0)]
    [InlineData("00000003 05 AABB", FrameType.Goodbye, 2)]
    [InlineData("00000002 09 FF 00000001", FrameType.ParentLost, 1)]
    public void Frame_header_is_a_big_endian_length_then_the_type(string hex, FrameType expectedType, int expectedBodyLength)
    {
        var bytes = Frames.Hex(hex);
        var buffer = new ReadOnlySequence<byte>(bytes);

        Assert.True(FrameCodec.TryReadFrame(ref buffer, out var type, out var body));

        Assert.Equal(expectedType, type);
        Assert.Equal(expectedBodyLength, body.Length);
        Assert.Equal(bytes.Length - 5 - expectedBodyLength, buffer.Length);
    }

    [Fact]
    public void Write_header_counts_the_type_byte_in_the_length()
    {
        var written = Frames.Encode(w => FrameCodec.WriteHeader(w, FrameType.Chunk, 0x0102));

        Assert.Equal("0000010303", Convert.ToHexString(written));
    }

    [Fact]
    public void A_slow_child_report_reads_back_and_a_short_or_long_body_is_refused()
    {
        var body = Frames.Body(Frames.Encode(new SlowChild(7, 2500).Write)).ToArray();
        var r = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.True(SlowChild.TryRead(ref r, out var report));
        Assert.Equal(new SlowChild(7, 2500), report);

        var shortBody = new SequenceReader<byte>(new ReadOnlySequence<byte>(body[..^1]));
        Assert.False(SlowChild.TryRead(ref shortBody, out _));
        var longBody = new SequenceReader<byte>(new ReadOnlySequence<byte>([.. body, 0]));
        Assert.False(SlowChild.TryRead(ref longBody, out _));
    }

    [Fact]
    public void A_version_8_slow_child_report_carries_the_rates_after_the_age_and_only_12_or_20_bytes_are_taken()
    {
        var body = Frames.Body(Frames.Encode(new SlowChild(7, 2500, (1000, 16800)).Write)).ToArray();
        // child 7, 2,500 ms, then 1,000 and 16,800 kbit/s.
        Assert.Equal("0000000000000007" + "000009C4" + "000003E8" + "000041A0", Convert.ToHexString(body));
        var r = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.True(SlowChild.TryRead(ref r, out var report));
        Assert.Equal((1000u, 16800u), report.Rates);

        foreach (int length in new[] { 13, 16, 19, 21 })
        {
            byte[] other = length <= body.Length ? body[..length] : [.. body, 0];
            var odd = new SequenceReader<byte>(new ReadOnlySequence<byte>(other));
            Assert.False(SlowChild.TryRead(ref odd, out _), $"a {length}-byte body was taken");
        }
    }

    private const string Sig11 = "11111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111";
    private const string HashAA = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    private const string HashBB = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    private static readonly byte[] Nonce = [.. Enumerable.Range(1, 16).Select(i => (byte)i)];

    private static byte[] Fill(byte value, int count) => Enumerable.Repeat(value, count).ToArray();

    private static void Write(string name, IBufferWriter<byte> w)
    {
        switch (name)
        {
            case "heartbeat": new Heartbeat(0x0102030405060708).Write(w); break;
            case "attached": new Attached(42).Write(w); break;
            case "chunk": new ChunkHeader(1, 2, 0x1000).Write(w, "AB"u8); break;
            case "end": new End(1, 10, 0x0102, Fill(0x11, 64)).Write(w); break;
            case "hashes": new HashList(1, 3, [.. Fill(0xAA, 32), .. Fill(0xBB, 32)], Fill(0x11, 64)).Write(w); break;
            case "goodbye": new Goodbye(GoodbyeCode.TooSlow, "slow").Write(w); break;
            case "goodbye-empty": new Goodbye(GoodbyeCode.Normal, "").Write(w); break;
            case "hello": new Hello(3, 3, HelloRole.Attach, 5, 150, [new ShardStart(1, 7)], "a:1", Nonce, [0xCA, 0xFE]).Write(w); break;
            case "hello-v1": new Hello(1, 1, HelloRole.Attach, 5, 150, [new ShardStart(1, 7)], "a:1").Write(w); break;
            case "welcome": new Welcome(3, 9, 2, 4, 0x100, [new ShardAssignment(1, AssignmentKind.Redirect, 3, 5, "b:2")]).Write(w); break;
            case "move": new Move([new ShardAssignment(0, AssignmentKind.Redirect, 0, 0, "c:3")]).Write(w); break;
            case "parent-lost": new ParentLost(4, [new ShardStart(1, 0x0203)], "bad").Write(w); break;
            case "slow-child": new SlowChild(7, 2500).Write(w); break;
            case "drop-child": new DropChild(7).Write(w); break;
            default: throw new ArgumentOutOfRangeException(nameof(name), name, null);
        }
    }

    [Fact]
    public void A_forwarded_hash_list_frame_is_the_encoding_byte_for_byte()
    {
        var list = new HashList(1, 3, [.. Fill(0xAA, 32), .. Fill(0xBB, 32)], Fill(0x11, 64));
        byte[] encoded = FrameWriting.ToArray(list.Write);
        Assert.Equal(encoded.Length, list.FrameLength);
        Assert.Equal(encoded, FrameWriting.ToArray(list.Write, list.FrameLength));

        // As a peer receives it (the body after length and type), then forwards it.
        var buffer = new ReadOnlySequence<byte>(encoded);
        Assert.True(FrameCodec.TryReadFrame(ref buffer, out var type, out var body));
        Assert.Equal(FrameType.Hashes, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(HashList.TryRead(ref reader, out var read));
        Assert.Equal(list.Hashes, read.Hashes);
        Assert.Equal(encoded, FrameWriting.FromBody(FrameType.Hashes, body));
    }
}

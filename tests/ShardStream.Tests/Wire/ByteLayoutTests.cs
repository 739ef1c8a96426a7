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
    // length 22 | type 9 | parent 4 | 1 entry: shard 1 from seq 0x0203 | violation: "" | cause 1 (a lag never made up; version 15)
    [InlineData("parent-lost-lag", "00000016 09 0000000000000004 01 01 0000000000000203 0000 01")]
    // length 13 | type 12 | child 7 | queue age 2500 ms (version 2)
    [InlineData("slow-child", "0000000D 0C 0000000000000007 000009C4")]
    // length 9 | type 20 | child 7 (version 12)
    [InlineData("drop-child", "00000009 14 0000000000000007")]
    // length 4 | type 10 | 2 shards: 0, 1
    [InlineData("detach", "00000004 0A 02 00 01")]
    // length 9 | type 11 | peer 7
    [InlineData("leave", "00000009 0B 0000000000000007")]
    // length 6 | type 14 | code 1 (leaf) | text: u16 1 | "x"
    [InlineData("notice", "00000006 0E 0001 0001 78")]
    // length 19 | type 19 | 1 shard: shard 2 from seq 5 | until seq 9 (version 7)
    [InlineData("fill", "00000013 13 01 02 0000000000000005 0000000000000009")]
    // length 81 | type 15 | format 1 (FLV) | generation 2 | from seq 3 | signature (0x11 each) | "FLV" to the end (version 5)
    [InlineData("stream-header", "00000051 0F 01 00000002 0000000000000003 " + Sig11 + " 464C56")]
    // length 25 | type 6 | u64 5 | coordinate x 1, y -2, height 0.5, error 0.25 (big-endian singles; version 6)
    [InlineData("heartbeat-coordinate", "00000019 06 0000000000000005 " + Coord)]
    // length 44 | type 6 | u64 5 | coordinate | 1 parent RTT: node 3, SRTT 1000 us, least 900 us, 6 samples (version 11)
    [InlineData("heartbeat-parent-rtts", "0000002C 06 0000000000000005 " + Coord + " 01 0000000000000003 000003E8 00000384 0006")]
    // length 57 | type 18 | 2 nodes: node 0, "" (the coordinator), coordinate | node 4, "d:4", coordinate (version 6)
    [InlineData("landmarks-v6", "00000039 12 02 0000000000000000 0000 " + Coord + " 0000000000000004 0003 643A34 " + Coord)]
    // the same | version 12 (u16; version 10 and later)
    [InlineData("landmarks-v10", "0000003B 12 02 0000000000000000 0000 " + Coord + " 0000000000000004 0003 643A34 " + Coord + " 000C")]
    // length 84 | type 1 | "SHST" | min 12 | max 12 | role 1 (join) | token 42 | upload 0xFFFF (default) | no shards | "a:1"
    //   | nonce (0x01…0x10) | ticket: u8 0 | coordinate | 2 measured RTTs: node 0 1500 us, node 4 2000 us (version 6)
    [InlineData("hello-v6-join", "00000054 01 53485354 000C 000C 01 000000000000002A FFFF 00 0003 613A31 0102030405060708090A0B0C0D0E0F10 00 " + Coord + " 02 0000000000000000 000005DC 0000000000000004 000007D0")]
    // length 92 | type 1 | "SHST" | min 13 | max 13 | role 1 (join) | token 42 | upload default | no shards | "a:1"
    //   | nonce | ticket: u8 0 | coordinate | no measured RTTs | stream: the key asked for (32 bytes, 0x22 each; version 13)
    [InlineData("hello-v13-join-stream", "0000005C 01 53485354 000D 000D 01 000000000000002A FFFF 00 0003 613A31 0102030405060708090A0B0C0D0E0F10 00 " + Coord + " 00 " + Key22)]
    // length 118 | type 5 | code 8 (other stream) | reason "x" | proof: key and signature (96 bytes, 0x33 each) | run id (16, 0x44 each; version 13)
    [InlineData("goodbye-other-stream", "00000076 05 0008 0001 78 " + Proof33 + " " + Run44)]
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
    [InlineData("heartbeat-parent-rtts", "0000002C 06 0000000000000005 " + Coord + " 01 0000000000000003 000003E8 00000384 0006")]
    [InlineData("hello-v6-join", "00000054 01 53485354 000C 000C 01 000000000000002A FFFF 00 0003 613A31 0102030405060708090A0B0C0D0E0F10 00 " + Coord + " 02 0000000000000000 000005DC 0000000000000004 000007D0")]
    [InlineData("hello-v13-join-stream", "0000005C 01 53485354 000D 000D 01 000000000000002A FFFF 00 0003 613A31 0102030405060708090A0B0C0D0E0F10 00 " + Coord + " 00 " + Key22)]
    [InlineData("goodbye-other-stream", "00000076 05 0008 0001 78 " + Proof33 + " " + Run44)]
    [InlineData("parent-lost", "00000018 09 0000000000000004 01 01 0000000000000203 0003 626164")]
    [InlineData("parent-lost-lag", "00000016 09 0000000000000004 01 01 0000000000000203 0000 01")]
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
            case "heartbeat-parent-rtts":
                Assert.Equal(FrameType.Heartbeat, type);
                Assert.True(Heartbeat.TryRead(ref reader, out var withRtts));
                Assert.Equal(5UL, withRtts.Value);
                Assert.Equal(Coordinate, withRtts.Coordinate);
                Assert.Equal([new ParentRtt(3, 1000, 900, 6)], withRtts.ParentRtts!);
                break;
            case "parent-lost" or "parent-lost-lag":
                Assert.Equal(FrameType.ParentLost, type);
                Assert.True(ParentLost.TryRead(ref reader, out var lost));
                Assert.Equal(4UL, lost.ParentId);
                Assert.Equal([new ShardStart(1, 0x0203)], lost.Shards);
                Assert.Equal(name == "parent-lost" ? ("bad", LossCause.Lost) : ("", LossCause.Lag), (lost.Violation, lost.Cause));
                break;
            case "hello-v6-join":
                Assert.Equal(FrameType.Hello, type);
                Assert.True(Hello.TryRead(ref reader, out var join));
                Samples.AssertEqual(new Hello(12, 12, HelloRole.Join, 42, Hello.DefaultUpload, [], "a:1"), join);
                Assert.Null(join.Ticket);
                Assert.Equal(Coordinate, join.Coordinate);
                Assert.Equal([new MeasuredRtt(0, 1500), new MeasuredRtt(4, 2000)], join.Measured!);
                break;
            case "hello-v13-join-stream":
                Assert.Equal(FrameType.Hello, type);
                Assert.True(Hello.TryRead(ref reader, out var named));
                Samples.AssertEqual(new Hello(13, 13, HelloRole.Join, 42, Hello.DefaultUpload, [], "a:1"), named);
                Assert.Equal(Fill(0x22, 32), named.Stream);
                break;
            case "goodbye-other-stream":
                Assert.Equal(FrameType.Goodbye, type);
                Assert.True(Goodbye.TryRead(ref reader, out var other));
                Assert.Equal(GoodbyeCode.OtherStream, other.Code);
                Assert.Equal("x", other.Reason);
                Assert.Equal(Fill(0x33, 96), other.Proof);
                Assert.Equal(Fill(0x44, 16), other.RunId);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(name), name, null);
        }
    }

    /// <summary>
    /// A version-13 Join ends with the stream asked for only when it names one: without it, it is a
    /// version-12 Join's layout, which an older node reads. The stream is refused in any other hello,
    /// in a Join of an older version, and at any other length; the longest Join that names its stream
    /// fits the hello's limit, which did not grow (it leaves the ticket empty).
    /// </summary>
    [Fact]
    public void A_join_names_its_stream_only_at_version_13_and_within_the_hello_limit()
    {
        var plain = Frames.Encode(new Hello(12, 13, HelloRole.Join, 42, Hello.DefaultUpload, [], "a:1", Nonce, null, Coordinate, []).Write);
        var named = Frames.Encode(new Hello(12, 13, HelloRole.Join, 42, Hello.DefaultUpload, [], "a:1", Nonce, null, Coordinate, [], Fill(0x22, 32)).Write);
        // The same frame with 32 more bytes at its end (and a length 32 higher).
        Assert.Equal(Convert.ToHexString(plain.AsSpan(4)), Convert.ToHexString(named.AsSpan(4, named.Length - 4 - 32)));
        Assert.Equal(plain.Length + 32, named.Length);
        Assert.True(Decodes(named));
        Assert.True(Decodes(plain));
        // Tampered: the same bytes in a version-12 Join, an attach, or 31 or 33 bytes.
        Assert.False(Decodes(WithMax(named, 12)));
        var attach = (byte[])named.Clone();
        attach[13] = (byte)HelloRole.Attach;
        Assert.False(Decodes(attach));
        Assert.False(Decodes(Lengthened(named, -1)));
        Assert.False(Decodes(Lengthened(named, 1)));

        ShardStart[] sixteen = [.. Enumerable.Range(0, Protocol.MaxShards).Select(i => new ShardStart((byte)i, 1))];
        MeasuredRtt[] measured = [.. Enumerable.Range(0, Protocol.MaxShards).Select(i => new MeasuredRtt((ulong)i, 1))];
        var longest = Frames.Encode(new Hello(13, 13, HelloRole.Join, 42, 100, sixteen, new string('a', Protocol.MaxStringLength), Nonce, null, Coordinate, measured, Fill(0x22, 32)).Write);
        Assert.True(longest.Length - 4 <= Hello.MaxFrameLength, $"a Join of {longest.Length - 4} bytes is over the hello limit of {Hello.MaxFrameLength}");

        static bool Decodes(byte[] frame)
        {
            var (_, body) = Frames.ReadSingle(frame);
            var r = new SequenceReader<byte>(body);
            return Hello.TryRead(ref r, out _);
        }

        static byte[] WithMax(byte[] frame, ushort max)
        {
            var copy = (byte[])frame.Clone();
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(copy.AsSpan(11), max);
            return copy;
        }

        static byte[] Lengthened(byte[] frame, int by)
        {
            byte[] copy = by < 0 ? frame[..^(-by)] : [.. frame, .. new byte[by]];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(copy, (uint)(copy.Length - 4));
            return copy;
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
    // x 1, y -2, height 0.5, error 0.25
    private const string Coord = "3F800000 C0000000 3F000000 3E800000";
    private const string Key22 = "2222222222222222222222222222222222222222222222222222222222222222";
    private const string Proof33 = "333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333";
    private const string Run44 = "44444444444444444444444444444444";
    private static readonly WireCoordinate Coordinate = new(1f, -2f, 0.5f, 0.25f);
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
            case "parent-lost-lag": new ParentLost(4, [new ShardStart(1, 0x0203)], Cause: LossCause.Lag).Write(w); break;
            case "slow-child": new SlowChild(7, 2500).Write(w); break;
            case "drop-child": new DropChild(7).Write(w); break;
            case "detach": new Detach([0, 1]).Write(w); break;
            case "leave": new Leave(7).Write(w); break;
            case "notice": new Notice(NoticeCode.Leaf, "x").Write(w); break;
            case "fill": new Fill([new ShardStart(2, 5)], 9).Write(w); break;
            case "stream-header": new StreamHeader(1, 2, 3, [.. "FLV"u8], Fill(0x11, 64)).Write(w); break;
            case "heartbeat-coordinate": new Heartbeat(5, Coordinate).Write(w); break;
            case "heartbeat-parent-rtts": new Heartbeat(5, Coordinate, [new ParentRtt(3, 1000, 900, 6)]).Write(w); break;
            case "landmarks-v6": new Landmarks([new Landmark(0, "", Coordinate), new Landmark(4, "d:4", Coordinate)]).Write(w); break;
            case "landmarks-v10": new Landmarks([new Landmark(0, "", Coordinate), new Landmark(4, "d:4", Coordinate)], 12).Write(w); break;
            case "hello-v13-join-stream": new Hello(13, 13, HelloRole.Join, 42, Hello.DefaultUpload, [], "a:1", Nonce, null, Coordinate, [], Fill(0x22, 32)).Write(w); break;
            case "goodbye-other-stream": new Goodbye(GoodbyeCode.OtherStream, "x", Fill(0x33, 96), Fill(0x44, 16)).Write(w); break;
            case "hello-v6-join": new Hello(12, 12, HelloRole.Join, 42, Hello.DefaultUpload, [], "a:1", Nonce, null, Coordinate, [new MeasuredRtt(0, 1500), new MeasuredRtt(4, 2000)]).Write(w); break;
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

using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

/// <summary>
/// The chunk stream against byte sequences written out by hand from the RTMP specification (Adobe,
/// 2012, section 5.3): basic header fmt(2 bits) + csid, message header by type, extended timestamp.
/// Each case is also fed one byte at a time: the result must not depend on how reads split it.
/// </summary>
public class ChunkReaderTests
{
    private static List<RtmpMessage> Read(string hex, RtmpLimits? limits = null)
    {
        var bytes = Hex.Bytes(hex);
        var whole = Hex.ReadAll(new ChunkReader(limits ?? new RtmpLimits()), bytes);
        var byByte = Hex.ReadAll(new ChunkReader(limits ?? new RtmpLimits()), bytes, piece: 1);
        Assert.Equal(whole.Count, byByte.Count);
        for (int i = 0; i < whole.Count; i++)
        {
            Assert.Equal(whole[i] with { Payload = [] }, byByte[i] with { Payload = [] });
            Assert.Equal(whole[i].Payload, byByte[i].Payload);
        }
        return whole;
    }

    [Fact]
    public void Type0_header_gives_timestamp_length_type_and_little_endian_stream_id()
    {
        // fmt 0, csid 3 | ts 0x000102 | length 3 | type 20 | msid 0x04030201 (little-endian) | payload
        var m = Assert.Single(Read("03 000102 000003 14 01020304 AABBCC"));
        Assert.Equal(3, m.ChunkStreamId);
        Assert.Equal(0x102u, m.Timestamp);
        Assert.Equal(RtmpMessageType.CommandAmf0, m.Type);
        Assert.Equal(0x04030201u, m.StreamId);
        Assert.Equal(Hex.Bytes("AABBCC"), m.Payload);
    }

    [Fact]
    public void A_message_longer_than_the_chunk_size_continues_in_type3_chunks()
    {
        string first = "04 000010 000130 09 01000000 " + new string('A', 256); // 128 bytes of 0xAA
        string second = "C4 " + new string('B', 256);                            // type 3, csid 4: 128 bytes 0xBB
        string third = "C4 " + new string('C', 96);                              // 48 bytes 0xCC (0x130 = 304)
        var m = Assert.Single(Read(first + second + third));
        Assert.Equal(304, m.Payload.Length);
        Assert.Equal(0xAA, m.Payload[0]);
        Assert.Equal(0xBB, m.Payload[128]);
        Assert.Equal(0xCC, m.Payload[303]);
        Assert.Equal(RtmpMessageType.Video, m.Type);
        Assert.Equal(0x10u, m.Timestamp);
    }

    [Fact]
    public void Extended_timestamp_is_read_on_type0_and_again_on_every_type3_chunk()
    {
        // ts field 0xFFFFFF -> 4-byte extended timestamp 0x01000000 follows the header; the type-3
        // continuation repeats it (5.3.1.3); 130 bytes at chunk size 128.
        string hex = "06 FFFFFF 000082 08 01000000 01000000 " + new string('1', 256)
                   + "C6 01000000 2222";
        var m = Assert.Single(Read(hex));
        Assert.Equal(0x01000000u, m.Timestamp);
        Assert.Equal(130, m.Payload.Length);
        Assert.Equal(0x22, m.Payload[129]);
    }

    [Fact]
    public void Extended_timestamp_on_a_type3_chunk_that_opens_a_message()
    {
        // type 0 with extended ts 0x01000000, then a type-3 chunk opening a new message: it carries
        // the extended field again and its timestamp is the previous plus the same delta, which after
        // a type-0 header is the type-0 timestamp itself (5.3.1.2.4).
        string hex = "06 FFFFFF 000001 08 01000000 01000000 AA"
                   + "C6 01000000 BB";
        var ms = Read(hex);
        Assert.Equal(2, ms.Count);
        Assert.Equal(0x01000000u, ms[0].Timestamp);
        Assert.Equal(0x02000000u, ms[1].Timestamp);
        Assert.Equal(Hex.Bytes("BB"), ms[1].Payload);
        Assert.Equal(1u, ms[1].StreamId);
    }

    [Fact]
    public void Type1_and_type2_headers_add_deltas_and_type3_repeats_the_last_delta()
    {
        string hex = "08 000064 000001 08 01000000 01"   // type 0: ts 100, len 1, audio, msid 1
                   + "48 000014 000002 09 0202"         // type 1: delta 20, len 2, video (msid kept)
                   + "88 00000A 0303"                    // type 2: delta 10 (len 2, video kept)
                   + "C8 0404";                          // type 3: delta 10 again
        var ms = Read(hex);
        Assert.Equal([100u, 120u, 130u, 140u], ms.Select(m => m.Timestamp));
        Assert.Equal([RtmpMessageType.Audio, RtmpMessageType.Video, RtmpMessageType.Video, RtmpMessageType.Video], ms.Select(m => m.Type));
        Assert.All(ms, m => Assert.Equal(1u, m.StreamId));
        Assert.Equal(Hex.Bytes("0404"), ms[3].Payload);
    }

    [Fact]
    public void Two_byte_and_three_byte_basic_headers()
    {
        // csid 0 in the first byte: csid = next byte + 64 -> 0x10 + 64 = 80
        // csid 1: csid = third * 256 + second + 64 -> 0x01 * 256 + 0x02 + 64 = 322
        var ms = Read("00 10 000000 000001 12 00000000 01" + "01 02 01 000000 000001 12 00000000 02");
        Assert.Equal([80, 322], ms.Select(m => m.ChunkStreamId));
    }

    [Fact]
    public void Set_chunk_size_changes_how_the_following_chunks_are_cut()
    {
        // Set Chunk Size 200 on csid 2, then a 150-byte message in one chunk.
        string hex = "02 000000 000004 01 00000000 000000C8"
                   + "04 000000 000096 09 01000000 " + string.Concat(Enumerable.Repeat("5A", 150));
        var ms = Read(hex);
        Assert.Equal(150, ms[1].Payload.Length);
    }

    [Fact]
    public void An_Enhanced_RTMP_HEVC_tag_passes_through_byte_for_byte()
    {
        // Enhanced RTMP v2 ExVideoTagHeader: 0x91 = IsExHeader 1 | FrameType 1 (key) | PacketType 1
        // (CodedFrames), FourCC 'hvc1', SI24 composition time 0, then one NAL unit (length 4, IDR_W_RADL 0x26 0x01...).
        string body = "91 68766331 000000 00000004 26 01 AF 08";
        var m = Assert.Single(Read("06 000021 000010 09 01000000 " + body));
        Assert.Equal(Hex.Bytes(body), m.Payload);
        Assert.Equal(0x80, m.Payload[0] & 0x80);
        Assert.Equal("hvc1"u8.ToArray(), m.Payload[1..5]);
    }

    [Fact]
    public void A_zero_length_message_completes_at_its_header()
    {
        var m = Assert.Single(Read("03 000000 000000 14 00000000"));
        Assert.Empty(m.Payload);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(0x80000000u)]
    public void Invalid_chunk_sizes_are_refused(uint size)
    {
        var e = Assert.Throws<RtmpProtocolException>(() => new ChunkReader(new RtmpLimits()).SetChunkSize(size));
        Assert.Contains("invalid chunk size", e.Message);
    }

    [Fact]
    public void Chunk_sizes_above_16MiB_act_as_16MiB()
    {
        var reader = new ChunkReader(new RtmpLimits());
        reader.SetChunkSize(0x7FFFFFFF);
        Assert.Equal(0xFFFFFF, reader.ChunkSize);
    }

    [Fact]
    public void A_message_over_the_length_limit_is_refused_at_its_header()
    {
        var e = Assert.Throws<RtmpProtocolException>(() => Read("04 000000 100001 09 01000000", new RtmpLimits { MaxMessageLength = 1 << 20 }));
        Assert.Contains("over the limit", e.Message);
    }

    [Theory]
    [InlineData("44 000000 000001 09 00")] // type 1 on a chunk stream never opened
    [InlineData("84 000000 00")]           // type 2
    [InlineData("C4 00")]                  // type 3
    public void A_chunk_stream_must_open_with_a_type0_header(string hex)
    {
        var e = Assert.Throws<RtmpProtocolException>(() => Read(hex));
        Assert.Contains("needs type 0", e.Message);
    }

    [Fact]
    public void Abort_drops_the_partial_message_and_the_next_one_reads_whole()
    {
        var reader = new ChunkReader(new RtmpLimits());
        var part = Hex.Bytes("04 000000 0000C8 09 01000000 " + string.Concat(Enumerable.Repeat("11", 128)));
        Assert.Empty(Hex.ReadAll(reader, part));
        Assert.Equal(200, reader.BufferedBytes); // grown to the message length, no more
        reader.Abort(4);
        Assert.Equal(0, reader.BufferedBytes);
        var m = Assert.Single(Hex.ReadAll(reader, Hex.Bytes("04 000010 000001 09 01000000 EE")));
        Assert.Equal(Hex.Bytes("EE"), m.Payload);
    }

    [Fact]
    public void Partial_messages_are_bounded_across_chunk_streams()
    {
        var limits = new RtmpLimits { MaxBufferedBytes = 8000 };
        // Two chunk streams each start a 6000-byte message with a 128-byte chunk: the buffers grow
        // to the message length (under 64 KiB), the second pushes the total over the 8000-byte limit.
        var reader = new ChunkReader(limits);
        Hex.ReadAll(reader, Hex.Bytes("04 000000 001770 09 01000000 " + string.Concat(Enumerable.Repeat("11", 128))));
        var e = Assert.Throws<RtmpProtocolException>(() => Hex.ReadAll(reader, Hex.Bytes("05 000000 001770 09 01000000 " + string.Concat(Enumerable.Repeat("11", 128)))));
        Assert.Contains("partly received", e.Message);
    }

    [Fact]
    public void A_long_message_announced_holds_only_what_arrived_not_what_it_announced()
    {
        var reader = new ChunkReader(new RtmpLimits());
        // 8 MiB announced, 128 bytes sent: 64 KiB held, not 8 MiB.
        Hex.ReadAll(reader, Hex.Bytes("04 000000 800000 09 01000000 " + string.Concat(Enumerable.Repeat("11", 128))));
        Assert.Equal(64 * 1024, reader.BufferedBytes);
    }

    [Fact]
    public void A_new_header_in_the_middle_of_a_message_is_refused()
    {
        string hex = "04 000000 0000C8 09 01000000 " + string.Concat(Enumerable.Repeat("11", 128)) + "44 000000 000001 09 00";
        Assert.Throws<RtmpProtocolException>(() => Read(hex));
    }
}

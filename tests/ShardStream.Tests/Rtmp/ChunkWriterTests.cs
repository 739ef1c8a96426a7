using System.Buffers;
using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

/// <summary>What we send, against bytes written out by hand from the specification (section 5.3).</summary>
public class ChunkWriterTests
{
    private static byte[] Write(ChunkWriter writer, int csid, uint ts, RtmpMessageType type, uint msid, byte[] payload)
    {
        var output = new ArrayBufferWriter<byte>();
        writer.Write(output, csid, ts, type, msid, payload);
        return output.WrittenSpan.ToArray();
    }

    [Fact]
    public void One_chunk_message_has_a_type0_header_with_little_endian_stream_id()
    {
        var bytes = Write(new ChunkWriter(), 3, 0x10203, RtmpMessageType.CommandAmf0, 1, Hex.Bytes("0102"));
        Assert.Equal(Hex.Bytes("03 010203 000002 14 01000000 0102"), bytes);
    }

    [Fact]
    public void A_long_message_is_cut_at_the_chunk_size_with_type3_continuations()
    {
        var writer = new ChunkWriter();
        writer.SetChunkSize(4);
        var bytes = Write(writer, 6, 5, RtmpMessageType.Video, 1, Hex.Bytes("AABBCCDD EEFF"));
        Assert.Equal(Hex.Bytes("06 000005 000006 09 01000000 AABBCCDD" + "C6 EEFF"), bytes);
    }

    [Fact]
    public void A_large_timestamp_goes_in_the_extended_field_repeated_on_each_type3_chunk()
    {
        var writer = new ChunkWriter();
        writer.SetChunkSize(2);
        var bytes = Write(writer, 4, 0x12345678, RtmpMessageType.Audio, 1, Hex.Bytes("AABB CC"));
        Assert.Equal(Hex.Bytes("04 FFFFFF 000003 08 01000000 12345678 AABB" + "C4 12345678 CC"), bytes);
    }

    [Theory]
    [InlineData(64, "00 00")]
    [InlineData(319, "00 FF")]
    [InlineData(320, "01 00 01")]
    [InlineData(65599, "01 FF FF")]
    public void Basic_header_forms(int csid, string expected)
    {
        var span = new byte[3];
        int n = ChunkWriter.WriteBasicHeader(span, 0, csid);
        Assert.Equal(Hex.Bytes(expected), span[..n]);
    }

    [Fact]
    public void What_the_writer_cuts_the_reader_reassembles()
    {
        var writer = new ChunkWriter();
        writer.SetChunkSize(100);
        var payload = Enumerable.Range(0, 1000).Select(i => (byte)i).ToArray();
        var bytes = Write(writer, 400, 0xFFFFFF, RtmpMessageType.Video, 7, payload);
        var reader = new ChunkReader(new RtmpLimits());
        reader.SetChunkSize(100);
        var m = Assert.Single(Hex.ReadAll(reader, bytes, piece: 7));
        Assert.Equal(payload, m.Payload);
        Assert.Equal(0xFFFFFFu, m.Timestamp);
        Assert.Equal(400, m.ChunkStreamId);
        Assert.Equal(7u, m.StreamId);
    }
}

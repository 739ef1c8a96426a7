using ShardStream.Media;

namespace ShardStream.Tests.Media;

/// <summary>The FLV layout and tag kinds, against bytes written out by hand from FLV v10.1 annex E and Enhanced RTMP v2.</summary>
public sealed class FlvTests
{
    [Fact]
    public void A_tag_is_written_with_its_header_and_previous_tag_size()
    {
        // Video, 3 bytes of data, timestamp 0x01020304 (24 bits 0x020304, extension 0x01), stream id 0.
        byte[] expected = Convert.FromHexString("09000003020304010000001701020000000E");
        Assert.Equal(expected, Flv.TagBytes(FlvTagType.Video, 0x01020304, [0x17, 0x01, 0x02]));
        Assert.True(Flv.TryReadTag(expected, out var type, out uint timestamp, out int bodyLength, out int length));
        Assert.Equal((FlvTagType.Video, 0x01020304u, 3, 18), (type, timestamp, bodyLength, length));
    }

    [Fact]
    public void The_preamble_carries_the_track_flags()
    {
        var bytes = new byte[Flv.PreambleLength];
        Flv.WritePreamble(bytes, Flv.HasAudio | Flv.HasVideo);
        Assert.Equal(Convert.FromHexString("464C5601050000000900000000"), bytes);
        Assert.True(Flv.TryReadPreamble(bytes, out byte flags, out int length));
        Assert.Equal((5, 13), (flags, length));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(12)]
    [InlineData(17)]
    public void A_truncated_tag_asks_for_more(int have)
    {
        byte[] tag = Flv.TagBytes(FlvTagType.Audio, 0, [0xAF, 0x01, 0x21]);
        Assert.False(Flv.TryReadTag(tag.AsSpan(0, have), out _, out _, out _, out _));
    }

    [Fact]
    public void An_unknown_tag_type_is_not_flv()
    {
        byte[] tag = Flv.TagBytes(FlvTagType.Audio, 0, [0xAF, 0x01]);
        tag[0] = 7;
        Assert.Throws<InvalidDataException>(() => Flv.TryReadTag(tag, out _, out _, out _, out _));
    }

    [Theory]
    [InlineData("1700000000", FlvTagKind.VideoSequenceHeader)]  // AVC key frame, AVCPacketType 0
    [InlineData("1701000000", FlvTagKind.Keyframe)]             // AVC key frame, NALU
    [InlineData("2701000000", FlvTagKind.Other)]                // AVC inter frame
    [InlineData("1C01000000", FlvTagKind.Keyframe)]             // HEVC with ffmpeg's legacy codec id 12
    [InlineData("9068766331", FlvTagKind.VideoSequenceHeader)]  // Enhanced: key, SequenceStart, 'hvc1'
    [InlineData("9168766331", FlvTagKind.Keyframe)]             // Enhanced: key, CodedFrames, 'hvc1'
    [InlineData("9361763031", FlvTagKind.Keyframe)]             // Enhanced: key, CodedFramesX, 'av01'
    [InlineData("A168766331", FlvTagKind.Other)]                // Enhanced: inter frame, CodedFrames
    [InlineData("D068766331", FlvTagKind.Other)]                // Enhanced: command frame (5)
    [InlineData("1268766331", FlvTagKind.Keyframe)]             // Sorenson H.263 key frame
    public void Video_tags_are_classified(string body, FlvTagKind kind) =>
        Assert.Equal(kind, FlvTagInfo.Classify(FlvTagType.Video, Convert.FromHexString(body)));

    [Theory]
    [InlineData("AF001210", FlvTagKind.AudioSequenceHeader)]   // AAC, AACPacketType 0
    [InlineData("AF01", FlvTagKind.Other)]                     // AAC raw
    [InlineData("906D703461", FlvTagKind.AudioSequenceHeader)] // Enhanced audio: SequenceStart, 'mp4a'
    [InlineData("2F", FlvTagKind.Other)]                       // MP3
    public void Audio_tags_are_classified(string body, FlvTagKind kind) =>
        Assert.Equal(kind, FlvTagInfo.Classify(FlvTagType.Audio, Convert.FromHexString(body)));

    [Fact]
    public void Only_script_data_named_onMetaData_is_metadata()
    {
        Assert.Equal(FlvTagKind.Metadata, FlvTagInfo.Classify(FlvTagType.Script, [0x02, 0x00, 0x0A, .. "onMetaData"u8, 0x08]));
        Assert.Equal(FlvTagKind.Other, FlvTagInfo.Classify(FlvTagType.Script, [0x02, 0x00, 0x06, .. "onCues"u8]));
    }
}

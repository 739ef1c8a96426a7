using System.Buffers.Binary;

namespace ShardStream.Media;

/// <summary>What an FLV tag is to a viewer that starts with it.</summary>
public enum FlvTagKind
{
    /// <summary>Anything else: an inter frame, an audio frame, other script data.</summary>
    Other,

    /// <summary>A video frame a decoder can start at (frame type 1, coded frames).</summary>
    Keyframe,

    /// <summary>A video decoder configuration: AVC/HEVC sequence header or Enhanced RTMP SequenceStart.</summary>
    VideoSequenceHeader,

    /// <summary>An audio decoder configuration: AAC sequence header or Enhanced RTMP audio SequenceStart.</summary>
    AudioSequenceHeader,

    /// <summary>Script data named onMetaData.</summary>
    Metadata,
}

/// <summary>
/// Reads the first bytes of a tag body, as the FLV specification (v10.1, E.4.2 and E.4.3) and
/// Enhanced RTMP (veovera, v2: ExVideoTagHeader and ExAudioTagHeader) lay them out.
/// </summary>
public static class FlvTagInfo
{
    private const int CodecAvc = 7;
    private const int CodecHevcLegacy = 12;
    private const int SoundAac = 10;
    private const int SoundExHeader = 9;
    private const int FrameKey = 1;

    /// <summary>Classifies a tag from its type and the first bytes of its body.</summary>
    public static FlvTagKind Classify(FlvTagType type, ReadOnlySpan<byte> body) => type switch
    {
        FlvTagType.Video => ClassifyVideo(body),
        FlvTagType.Audio => ClassifyAudio(body),
        FlvTagType.Script => IsOnMetaData(body) ? FlvTagKind.Metadata : FlvTagKind.Other,
        _ => FlvTagKind.Other,
    };

    private static FlvTagKind ClassifyVideo(ReadOnlySpan<byte> body)
    {
        if (body.IsEmpty) return FlvTagKind.Other;
        byte first = body[0];
        if ((first & 0x80) != 0)
        {
            // Enhanced RTMP: IsExHeader, 3 bits of frame type, 4 bits of packet type, then a FourCC.
            int frameType = (first >> 4) & 0x07;
            int packetType = first & 0x0F;
            if (frameType == 5) return FlvTagKind.Other; // a command frame carries no picture
            return packetType switch
            {
                0 => FlvTagKind.VideoSequenceHeader,      // SequenceStart
                1 or 3 => frameType == FrameKey ? FlvTagKind.Keyframe : FlvTagKind.Other, // CodedFrames, CodedFramesX
                _ => FlvTagKind.Other,                   // SequenceEnd, Metadata, multitrack, …
            };
        }
        int legacyFrame = first >> 4;
        int codec = first & 0x0F;
        if (codec is CodecAvc or CodecHevcLegacy)
        {
            if (body.Length < 2) return FlvTagKind.Other;
            return body[1] switch
            {
                0 => FlvTagKind.VideoSequenceHeader,
                1 => legacyFrame == FrameKey ? FlvTagKind.Keyframe : FlvTagKind.Other,
                _ => FlvTagKind.Other,
            };
        }
        // Codecs with no configuration record (Sorenson, VP6, …): any key frame starts a decoder.
        return legacyFrame == FrameKey ? FlvTagKind.Keyframe : FlvTagKind.Other;
    }

    private static FlvTagKind ClassifyAudio(ReadOnlySpan<byte> body)
    {
        if (body.IsEmpty) return FlvTagKind.Other;
        int format = body[0] >> 4;
        if (format == SoundAac) return body.Length >= 2 && body[1] == 0 ? FlvTagKind.AudioSequenceHeader : FlvTagKind.Other;
        // Enhanced RTMP audio: packet type in the low nibble, 0 = SequenceStart.
        if (format == SoundExHeader) return (body[0] & 0x0F) == 0 ? FlvTagKind.AudioSequenceHeader : FlvTagKind.Other;
        return FlvTagKind.Other;
    }

    private static ReadOnlySpan<byte> OnMetaData => "onMetaData"u8;

    /// <summary>AMF0 string marker (2), u16 length, "onMetaData".</summary>
    private static bool IsOnMetaData(ReadOnlySpan<byte> body) =>
        body.Length >= 3 + OnMetaData.Length && body[0] == 2
        && BinaryPrimitives.ReadUInt16BigEndian(body[1..]) == OnMetaData.Length
        && body.Slice(3, OnMetaData.Length).SequenceEqual(OnMetaData);
}

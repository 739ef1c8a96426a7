namespace ShardStream.Media;

/// <summary>What the bytes of a stream are, as far as chunking goes.</summary>
public enum MediaFormat : byte
{
    /// <summary>Any byte stream: chunks are whatever a read returned.</summary>
    Raw = 0,

    /// <summary>FLV: chunks cut at tag boundaries, keyframe tags start chunks.</summary>
    Flv = 1,

    /// <summary>MPEG-TS: chunks cut at 188-byte packet boundaries, random-access packets start chunks.</summary>
    MpegTs = 2,
}

/// <summary>
/// What a newcomer must be handed before its first chunk: for FLV the file header (with the
/// source's track flags), onMetaData and the audio and video sequence headers; for MPEG-TS the
/// latest PAT and PMT packets. <see cref="Generation"/> grows when the publisher's headers change.
/// </summary>
public sealed record MediaHeader(MediaFormat Format, uint Generation, byte[] Bytes);

/// <summary>Detecting the format from the first bytes of a stream, and parsing the <c>--format</c> flag.</summary>
public static class MediaFormats
{
    /// <summary>MPEG-TS packet length.</summary>
    public const int TsPacketLength = 188;

    /// <summary>
    /// The format of a stream that starts with <paramref name="first"/> (the first read): FLV when
    /// it starts with the FLV signature and version 1; MPEG-TS when it holds at least one whole
    /// packet and every 188th byte from the first is the sync byte 0x47; anything else is raw.
    /// The decision uses only what the first read returned, so a typed or text stream is never held back.
    /// </summary>
    public static MediaFormat Detect(ReadOnlySpan<byte> first)
    {
        if (Flv.HasSignature(first)) return MediaFormat.Flv;
        if (first.Length < TsPacketLength) return MediaFormat.Raw;
        for (int i = 0; i < first.Length; i += TsPacketLength)
            if (first[i] != 0x47) return MediaFormat.Raw;
        return MediaFormat.MpegTs;
    }

    /// <summary>Parses <c>auto</c> (null), <c>flv</c>, <c>ts</c> or <c>raw</c>.</summary>
    public static MediaFormat? Parse(string? name) => name?.ToLowerInvariant() switch
    {
        null or "auto" => null,
        "flv" => MediaFormat.Flv,
        "ts" or "mpegts" => MediaFormat.MpegTs,
        "raw" => MediaFormat.Raw,
        _ => throw new ArgumentException($"unknown format '{name}': use auto, flv, ts or raw"),
    };

    /// <summary>The MIME type of the format, for HTTP.</summary>
    public static string ContentType(MediaFormat format) => format switch
    {
        MediaFormat.Flv => "video/x-flv",
        MediaFormat.MpegTs => "video/mp2t",
        _ => "application/octet-stream",
    };
}

namespace ShardStream.Media;

/// <summary>
/// Finds the units of a media byte stream (FLV tags, MPEG-TS packets): where a chunk may be cut,
/// which units a decoder can start at, and the stream header a newcomer needs. Fed the bytes in
/// order, each call starting at a unit boundary. Bytes it cannot make sense of (an FLV tag of an
/// unknown type, bytes between TS packets) never stop the stream: they pass as units of their own
/// and <see cref="LostSync"/> says what happened.
/// </summary>
internal abstract class UnitScanner
{
    /// <summary>The format scanned.</summary>
    public abstract MediaFormat Format { get; }

    /// <summary>The header as of the last unit scanned, or null before it is known.</summary>
    public MediaHeader? Header { get; protected set; }

    /// <summary>Why the scanner stopped finding units (it then passes the rest through as raw bytes), or null.</summary>
    public string? LostSync { get; protected set; }

    /// <summary>
    /// The length of the unit at the start of <paramref name="data"/>, or 0 when more bytes are
    /// needed to have it whole. <paramref name="randomAccess"/>: a decoder can start at this unit
    /// (after the header). Updates <see cref="Header"/> when the unit is part of it.
    /// </summary>
    public abstract int Next(ReadOnlySpan<byte> data, out bool randomAccess);

    /// <summary>A scanner for <paramref name="format"/>, or null for raw bytes.</summary>
    public static UnitScanner? For(MediaFormat format) => format switch
    {
        MediaFormat.Flv => new FlvScanner(),
        MediaFormat.MpegTs => new TsScanner(),
        _ => null,
    };
}

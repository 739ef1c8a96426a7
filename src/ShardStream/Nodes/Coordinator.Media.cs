using Microsoft.Extensions.Logging;
using ShardStream.Media;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Media-aware joins (docs/media.md): the coordinator remembers the recent chunks a decoder can
/// start at, starts a joiner at one of them, and hands it the signed header to write first.
/// </summary>
public sealed partial class Coordinator
{
    /// <summary>The most random-access points remembered; older ones go first.</summary>
    private const int MaxRandomAccessPoints = 512;

    private readonly Queue<RandomAccessPoint> _randomAccess = new();

    /// <summary>A chunk that starts with a unit a decoder can start at, and the header in effect there.</summary>
    private readonly record struct RandomAccessPoint(long Seq, long Offset, long At, MediaHeader? Header);

    /// <summary>The format of the source, once its first bytes were read.</summary>
    public MediaFormat? Format { get; private set; }

    /// <summary>Streams a raw byte source (see <see cref="RunAsync(MediaReader, CancellationToken)"/>).</summary>
    public Task RunAsync(Stream source, CancellationToken cancellationToken) => RunAsync(new MediaReader(source, MediaFormat.Raw), cancellationToken);

    /// <summary>Remembers a random-access chunk. Called under the gate.</summary>
    private void NoteRandomAccess(long seq, long offset, long now, MediaHeader? header)
    {
        _randomAccess.Enqueue(new RandomAccessPoint(seq, offset, now, header));
        // Only points the replay windows of the joiner's parents surely still hold: half their age bound.
        var keep = _options.ReplayWindowAge / 2;
        while (_randomAccess.Count > MaxRandomAccessPoints || (_randomAccess.TryPeek(out var oldest) && Time.GetElapsedTime(oldest.At, now) > keep))
            _randomAccess.Dequeue();
    }

    /// <summary>
    /// Moves a joiner's start back (or forward) to a random-access chunk: the latest one at or
    /// before the usual join point whose header is still the current one, else the first one with
    /// the current header. Returns the header the joiner writes first (null: it needs none, as at
    /// offset 0 or in a raw stream). Called under the gate.
    /// </summary>
    private MediaHeader? MediaJoinPoint(ref long startSeq, ref long startOffset)
    {
        if (_randomAccess.Count == 0) return null;
        uint current = _randomAccess.Last().Header?.Generation ?? 0;
        RandomAccessPoint? best = null;
        foreach (var p in _randomAccess)
        {
            if ((p.Header?.Generation ?? 0) != current) continue;
            if (best is null || p.Seq <= startSeq) best = p;
            if (p.Seq >= startSeq) break;
        }
        if (best is not { } chosen) return null;
        startSeq = chosen.Seq;
        startOffset = chosen.Offset;
        return chosen.Offset == 0 ? null : chosen.Header;
    }

    /// <summary>The signed header frame for a joiner that starts at <paramref name="startSeq"/>.</summary>
    private StreamHeader SignedHeader(long startSeq, MediaHeader? header)
    {
        byte[] bytes = header?.Bytes ?? [];
        if (bytes.Length > StreamHeader.MaxBytes)
        {
            MediaLog.HeaderTooLong(Log, bytes.Length, StreamHeader.MaxBytes);
            bytes = [];
        }
        return _signer.SignHeader((byte)(header?.Format ?? MediaFormat.Raw), header?.Generation ?? 0, (ulong)startSeq, bytes);
    }
}

/// <summary>Log lines of the media-aware source and egress (event ids 1200..1299).</summary>
internal static partial class MediaLog
{
    [LoggerMessage(1200, LogLevel.Information, "source format: {Format}{How}", EventName = "SourceFormat")]
    public static partial void SourceFormat(ILogger logger, string format, string how);

    [LoggerMessage(1201, LogLevel.Warning, "{Reason}", EventName = "LostSync")]
    public static partial void LostSync(ILogger logger, string reason);

    [LoggerMessage(1202, LogLevel.Warning, "the stream header is {Length} bytes, over the {Max} one frame carries: joiners get none and start at a keyframe without it", EventName = "HeaderTooLong")]
    public static partial void HeaderTooLong(ILogger logger, int length, int max);

    [LoggerMessage(1203, LogLevel.Information, "writing the {Format} stream header ({Length} bytes) before the first chunk, at offset {Offset}", EventName = "WritingHeader")]
    public static partial void WritingHeader(ILogger logger, string format, int length, long offset);
}

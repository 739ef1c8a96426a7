using System.Buffers;
using System.IO.Pipelines;
using ShardStream.Media;

namespace ShardStream.Rtmp;

/// <summary>
/// The plain FLV byte stream of a publish (FLV specification v10.1, annex E), laid out with the
/// media layer's <see cref="Flv"/> writer: the 9-byte header
/// with the track flags taken from onMetaData (both when there is none), PreviousTagSize0, then
/// each tag with its 11-byte header and its PreviousTagSize. Timestamps continue across a
/// publisher's reconnect (the new publish starts 40 ms after the last tag) so that the byte stream
/// stays one FLV file; onMetaData is at 0 in every publish, where players read it as metadata. <see cref="Reader"/> is what the coordinator reads as its source.
/// The tags of one read of the publisher's connection are flushed together
/// (<see cref="FlushAsync"/>), and the reader runs inline in that flush: the coordinator's source
/// loop cuts the read's tags into as few chunks as keyframes allow, hashes and signs them on the
/// thread that parsed them, instead of being woken on another thread of the pool for each tag
/// (twice, with a flush after the body and another after the trailer);
/// docs/performance.md#rtmp-ingest-issue-11.
/// </summary>
public sealed class FlvByteSink : IFlvTagSink
{
    private readonly Pipe _pipe = new(new PipeOptions(readerScheduler: PipeScheduler.Inline, pauseWriterThreshold: 4 << 20, resumeWriterThreshold: 2 << 20, useSynchronizationContext: false));
    private bool _headerWritten;
    private bool _unflushed;
    private bool _rebase;
    private bool _anyTag;
    private uint _offset;
    private uint _last;

    /// <summary>The FLV bytes, for <c>Coordinator.RunAsync</c>.</summary>
    public Stream Reader { get; }

    public FlvByteSink() => Reader = _pipe.Reader.AsStream();

    public void PublishStarted() => _rebase = true;

    public void PublishEnded() { }

    /// <summary>Ends the byte stream.</summary>
    public void Complete() => _pipe.Writer.Complete();

    /// <summary>Writes the tag to the byte stream; the coordinator sees it at the next <see cref="FlushAsync"/>.</summary>
    public ValueTask WriteTagAsync(FlvTagType type, uint timestamp, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        var w = _pipe.Writer;
        if (!_headerWritten)
        {
            w.Advance(Flv.WritePreamble(w.GetSpan(Flv.PreambleLength), type == FlvTagType.Script ? TrackFlags(body.Span) : (byte)(Flv.HasAudio | Flv.HasVideo)));
            _headerWritten = true;
        }
        if (_rebase)
        {
            _offset = _anyTag ? unchecked(_last + 40 - timestamp) : 0;
            _rebase = false;
        }
        uint at;
        if (FlvTagInfo.Classify(type, body.Span) == FlvTagKind.Metadata)
        {
            // onMetaData stays at 0 in a publish after the first too: ffmpeg (flvdec) reads a
            // script tag at another time as a subtitle stream that starts there. It moves no clock.
            at = 0;
        }
        else
        {
            at = unchecked(timestamp + _offset);
            _last = at;
            _anyTag = true;
        }
        w.Advance(Flv.WriteTagHeader(w.GetSpan(FlvTag.HeaderLength), type, at, body.Length));
        w.Write(body.Span);
        w.Advance(Flv.WriteTagTrailer(w.GetSpan(FlvTag.TrailerLength), body.Length));
        _unflushed = true;
        return ValueTask.CompletedTask;
    }

    /// <summary>Hands the tags written since the last flush to the coordinator (which cuts them inline, see above); waits while it is 4 MiB behind.</summary>
    public async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        if (!_unflushed) return;
        _unflushed = false;
        await _pipe.Writer.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>FLV header flags (4 audio, 1 video) from onMetaData's audiocodecid/videocodecid; both when it names neither.</summary>
    internal static byte TrackFlags(ReadOnlySpan<byte> metadata)
    {
        try
        {
            var reader = new Amf0Reader(metadata, 16);
            if (reader.ReadValue() is not "onMetaData" || reader.ReadValue() is not AmfObject properties) return Flv.HasAudio | Flv.HasVideo;
            byte flags = 0;
            foreach (var (key, _) in properties)
            {
                if (key == "audiocodecid") flags |= Flv.HasAudio;
                if (key == "videocodecid") flags |= Flv.HasVideo;
            }
            return flags == 0 ? (byte)(Flv.HasAudio | Flv.HasVideo) : flags;
        }
        catch (RtmpProtocolException)
        {
            return Flv.HasAudio | Flv.HasVideo;
        }
    }

}

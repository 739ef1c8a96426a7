using System.Buffers.Binary;
using System.IO.Pipelines;
using ShardStream.Media;

namespace ShardStream.Rtmp;

/// <summary>
/// The plain FLV byte stream of a publish (FLV specification v10.1, annex E): the 9-byte header
/// with the track flags taken from onMetaData (both when there is none), PreviousTagSize0, then
/// each tag with its 11-byte header and its PreviousTagSize. Timestamps continue across a
/// publisher's reconnect (the new publish starts 40 ms after the last tag) so that the byte stream
/// stays one FLV file. <see cref="Reader"/> is what the coordinator reads as its source.
/// </summary>
public sealed class FlvByteSink : IFlvTagSink
{
    private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: 4 << 20, resumeWriterThreshold: 2 << 20, useSynchronizationContext: false));
    private bool _headerWritten;
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

    public async ValueTask WriteTagAsync(FlvTagType type, uint timestamp, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        byte tagType = (byte)type;
        var w = _pipe.Writer;
        if (!_headerWritten)
        {
            var header = w.GetSpan(13);
            "FLV"u8.CopyTo(header);
            header[3] = 1;
            header[4] = tagType == 18 ? TrackFlags(body.Span) : (byte)0x05;
            BinaryPrimitives.WriteUInt32BigEndian(header[5..], 9);
            BinaryPrimitives.WriteUInt32BigEndian(header[9..], 0);
            w.Advance(13);
            _headerWritten = true;
        }
        if (_rebase)
        {
            _offset = _anyTag ? unchecked(_last + 40 - timestamp) : 0;
            _rebase = false;
        }
        uint at = unchecked(timestamp + _offset);
        _last = at;
        _anyTag = true;
        var span = w.GetSpan(11);
        span[0] = tagType;
        WriteUInt24(span[1..], (uint)body.Length);
        WriteUInt24(span[4..], at & 0xFFFFFF);
        span[7] = (byte)(at >> 24);
        WriteUInt24(span[8..], 0);
        w.Advance(11);
        await w.WriteAsync(body, cancellationToken).ConfigureAwait(false);
        BinaryPrimitives.WriteUInt32BigEndian(w.GetSpan(4), (uint)(11 + body.Length));
        w.Advance(4);
        await w.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>FLV header flags (4 audio, 1 video) from onMetaData's audiocodecid/videocodecid; both when it names neither.</summary>
    internal static byte TrackFlags(ReadOnlySpan<byte> metadata)
    {
        try
        {
            var reader = new Amf0Reader(metadata, 16);
            if (reader.ReadValue() is not "onMetaData" || reader.ReadValue() is not AmfObject properties) return 0x05;
            byte flags = 0;
            foreach (var (key, _) in properties)
            {
                if (key == "audiocodecid") flags |= 0x04;
                if (key == "videocodecid") flags |= 0x01;
            }
            return flags == 0 ? (byte)0x05 : flags;
        }
        catch (RtmpProtocolException)
        {
            return 0x05;
        }
    }

    private static void WriteUInt24(Span<byte> b, uint v)
    {
        b[0] = (byte)(v >> 16);
        b[1] = (byte)(v >> 8);
        b[2] = (byte)v;
    }
}

using System.Runtime.CompilerServices;
using System.Threading.Channels;
using ShardStream.Media;

namespace ShardStream.Rtmp;

/// <summary>
/// The live FLV stream of a node for its RTMP players (<c>--rtmp-play</c>): fed the FLV bytes the
/// node writes (any split), it keeps what a player needs to start (onMetaData, the audio and video
/// sequence headers, the tags since the last keyframe, within <see cref="MaxCachedBytes"/>) and
/// hands each subscriber the headers, then that keyframe, then the live tags. Each subscriber's
/// queue is bounded by <see cref="MaxQueuedBytes"/>: a player that falls behind skips ahead to the
/// next keyframe instead of holding memory or slowing the node. A stream that does not start with
/// the FLV signature is not served (the hub stays silent and says why in <see cref="NotFlv"/>).
/// </summary>
public sealed class FlvPlayHub : IFlvTagFeed
{
    private readonly object _lock = new();
    private readonly List<Subscriber> _subscribers = [];
    private readonly List<FlvTag> _gop = [];
    private byte[] _pending = new byte[64 * 1024];
    private int _pendingLength;
    private bool _preambleRead;
    private bool _completed;
    private bool _hasVideo;
    private long _gopBytes;
    private FlvTag? _metadata, _videoHeader, _audioHeader;

    public long MaxQueuedBytes { get; init; } = 16 * 1024 * 1024;

    public long MaxCachedBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>Why nothing is served, once the stream turned out not to be FLV.</summary>
    public string? NotFlv { get; private set; }

    private sealed class Subscriber
    {
        public readonly Channel<FlvTag> Queue = Channel.CreateUnbounded<FlvTag>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = true });
        public long QueuedBytes;
        public bool WaitingForKeyframe;
    }

    /// <summary>A write-through stream: what is written goes to <paramref name="output"/> and into the hub; disposing it ends the hub's stream.</summary>
    public Stream Tee(Stream output) => new TeeStream(output, this);

    /// <summary>A read-through stream: what is read from <paramref name="input"/> also goes into the hub; its end ends the hub's stream.</summary>
    public Stream TeeReads(Stream input) => new ReadTeeStream(input, this);

    /// <summary>Bytes of the stream, in order.</summary>
    public void Write(ReadOnlySpan<byte> data)
    {
        lock (_lock)
        {
            if (NotFlv is not null || _completed) return;
            if (_pendingLength + data.Length > _pending.Length)
            {
                int size = Math.Max(_pending.Length * 2, _pendingLength + data.Length);
                if (size > 17 * 1024 * 1024) { NotFlv = "a tag longer than 16 MiB"; return; }
                Array.Resize(ref _pending, size);
            }
            data.CopyTo(_pending.AsSpan(_pendingLength));
            _pendingLength += data.Length;
            int pos = 0;
            if (!_preambleRead)
            {
                if (_pendingLength < 13) return;
                if (_pending[0] != 'F' || _pending[1] != 'L' || _pending[2] != 'V') { NotFlv = "the stream does not start with an FLV header"; return; }
                pos = Math.Max(9, (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(_pending.AsSpan(5))) + 4;
                if (pos > 1024) { NotFlv = "an FLV header over 1 KiB"; return; }
                if (_pendingLength < pos) return;
                _preambleRead = true;
            }
            while (_pendingLength - pos >= 11)
            {
                var h = _pending.AsSpan(pos);
                int size = h[1] << 16 | h[2] << 8 | h[3];
                if (_pendingLength - pos < 11 + size + 4) break;
                uint ts = (uint)(h[7] << 24 | h[4] << 16 | h[5] << 8 | h[6]);
                if (h[0] is 8 or 9 or 18) Publish(new FlvTag((FlvTagType)h[0], ts, h.Slice(11, size).ToArray()));
                pos += 11 + size + 4;
            }
            _pending.AsSpan(pos, _pendingLength - pos).CopyTo(_pending);
            _pendingLength -= pos;
        }
    }

    /// <summary>The stream ended: subscriptions end once their queues are drained.</summary>
    public void Complete()
    {
        lock (_lock)
        {
            _completed = true;
            foreach (var s in _subscribers) s.Queue.Writer.TryComplete();
        }
    }

    private void Publish(FlvTag tag)
    {
        var kind = Classify(tag);
        bool header = kind is Kind.Metadata or Kind.VideoHeader or Kind.AudioHeader;
        switch (kind)
        {
            case Kind.Metadata: _metadata = tag; break;
            case Kind.VideoHeader: _videoHeader = tag; break;
            case Kind.AudioHeader: _audioHeader = tag; break;
        }
        if (tag.Type == FlvTagType.Video) _hasVideo = true;
        if (kind is Kind.VideoHeader or Kind.AudioHeader || kind == Kind.Keyframe)
        {
            _gop.Clear(); // a new sequence (a publisher came back) or a new GOP
            _gopBytes = 0;
        }
        if (_hasVideo && !header && (kind == Kind.Keyframe || _gop.Count > 0))
        {
            if (_gopBytes + tag.Body.Length <= MaxCachedBytes)
            {
                _gop.Add(tag);
                _gopBytes += tag.Body.Length;
            }
            else
            {
                _gop.Clear(); // too long a GOP: newcomers wait for the next keyframe
                _gopBytes = 0;
            }
        }
        // Where a player waiting for a keyframe may start: a keyframe, or any audio frame of a stream without video.
        bool start = kind == Kind.Keyframe || (!_hasVideo && kind == Kind.Frame);
        foreach (var s in _subscribers)
        {
            if (s.WaitingForKeyframe && !header)
            {
                if (!start) continue;
                s.WaitingForKeyframe = false;
            }
            Enqueue(s, tag);
        }
    }

    private void Enqueue(Subscriber s, FlvTag tag)
    {
        if (Interlocked.Read(ref s.QueuedBytes) + tag.Body.Length > MaxQueuedBytes)
        {
            s.WaitingForKeyframe = true; // skipped ahead: the reader drops what is queued
            while (s.Queue.Reader.TryRead(out var dropped)) Interlocked.Add(ref s.QueuedBytes, -dropped.Body.Length);
            return;
        }
        Interlocked.Add(ref s.QueuedBytes, tag.Body.Length);
        s.Queue.Writer.TryWrite(tag);
    }

    public async IAsyncEnumerable<FlvTag> SubscribeAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var s = new Subscriber();
        bool headersSent = true;
        lock (_lock)
        {
            if (_completed || NotFlv is not null) s.Queue.Writer.TryComplete();
            else
            {
                if (_gop.Count > 0 || !_hasVideo)
                {
                    uint at = _gop.Count > 0 ? _gop[0].Timestamp : 0;
                    foreach (var header in new[] { _metadata, _videoHeader, _audioHeader })
                        if (header is { } h) Enqueue(s, h with { Timestamp = at });
                    foreach (var tag in _gop) Enqueue(s, tag);
                }
                else
                {
                    // No keyframe cached: the headers go out just before the next keyframe, with its timestamp.
                    s.WaitingForKeyframe = true;
                    headersSent = false;
                }
                _subscribers.Add(s);
            }
        }
        try
        {
            while (await s.Queue.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                while (s.Queue.Reader.TryRead(out var tag))
                {
                    Interlocked.Add(ref s.QueuedBytes, -tag.Body.Length);
                    if (!headersSent)
                    {
                        headersSent = true;
                        FlvTag?[] headers;
                        lock (_lock) headers = [_metadata, _videoHeader, _audioHeader];
                        foreach (var header in headers)
                            if (header is { } h) yield return h with { Timestamp = tag.Timestamp };
                    }
                    yield return tag;
                }
            }
        }
        finally
        {
            lock (_lock) _subscribers.Remove(s);
        }
    }

    private enum Kind { Metadata, VideoHeader, AudioHeader, Keyframe, Frame, Other }

    /// <summary>
    /// What a tag is to a player (FLV v10.1 annex E; Enhanced RTMP v2 for FourCC video and audio):
    /// onMetaData, a sequence header (AVC/HEVC legacy packet type 0, FourCC SequenceStart, AAC packet
    /// type 0), a keyframe (frame type 1, not a header), another frame, or anything else.
    /// </summary>
    private static Kind Classify(FlvTag tag)
    {
        var b = tag.Body.Span;
        switch ((byte)tag.Type)
        {
            case 18:
                return b.Length > 13 && b[0] == 2 && b[1] == 0 && b[2] == 10 && b.Slice(3, 10).SequenceEqual("onMetaData"u8) ? Kind.Metadata : Kind.Other;
            case 9 when b.Length > 0:
            {
                int frameType = (b[0] >> 4) & 0x07;
                if ((b[0] & 0x80) != 0) // Enhanced RTMP: packet type in the low 4 bits, then a FourCC
                {
                    int packetType = b[0] & 0x0F;
                    if (packetType == 0) return Kind.VideoHeader;
                    if (packetType == 5) return Kind.Other; // frame type 5 command / MPEG-2 TS sequence start
                    return frameType == 1 ? Kind.Keyframe : Kind.Frame;
                }
                int codec = b[0] & 0x0F;
                if (frameType == 5) return Kind.Other; // video info/command frame
                if ((codec == 7 || codec == 12) && b.Length > 1 && b[1] == 0) return Kind.VideoHeader;
                if ((codec == 7 || codec == 12) && b.Length > 1 && b[1] == 2) return Kind.Other; // end of sequence
                return frameType == 1 ? Kind.Keyframe : Kind.Frame;
            }
            case 8 when b.Length > 0:
            {
                int format = b[0] >> 4;
                if (format == 10 && b.Length > 1 && b[1] == 0) return Kind.AudioHeader;
                if (format == 9 && (b[0] & 0x0F) == 0) return Kind.AudioHeader; // Enhanced RTMP audio: SequenceStart
                return Kind.Frame;
            }
            default:
                return Kind.Other;
        }
    }

    private sealed class TeeStream(Stream output, FlvPlayHub hub) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() => output.Flush();
        public override Task FlushAsync(CancellationToken cancellationToken) => output.FlushAsync(cancellationToken);
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            output.Write(buffer);
            hub.Write(buffer);
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await output.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            hub.Write(buffer.Span);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        protected override void Dispose(bool disposing)
        {
            if (disposing) hub.Complete();
            base.Dispose(disposing);
        }
    }

    private sealed class ReadTeeStream(Stream input, FlvPlayHub hub) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n = input.Read(buffer);
            Pass(buffer[..n]);
            return n;
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            int n = await input.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
            Pass(buffer.Span[..n]);
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        private void Pass(ReadOnlySpan<byte> bytes)
        {
            if (bytes.Length == 0) hub.Complete();
            else hub.Write(bytes);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                hub.Complete();
                input.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}

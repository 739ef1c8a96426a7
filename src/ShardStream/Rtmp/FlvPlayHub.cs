using System.Runtime.CompilerServices;
using System.Threading.Channels;
using ShardStream.Media;

namespace ShardStream.Rtmp;

/// <summary>
/// The live FLV stream of a node for its RTMP players (<c>--rtmp-play</c>): fed the FLV bytes the
/// node writes (any split; read and classified with the media layer's <see cref="Flv"/> and
/// <see cref="FlvTagInfo"/>), it keeps what a player needs to start (onMetaData, the audio and video
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
            try
            {
                if (!_preambleRead)
                {
                    if (_pendingLength < Flv.FileHeaderLength) return;
                    if (!Flv.HasSignature(_pending)) { NotFlv = "the stream does not start with an FLV header"; return; }
                    if (!Flv.TryReadPreamble(_pending.AsSpan(0, _pendingLength), out _, out pos)) return;
                    _preambleRead = true;
                }
                // The media layer's reading of the FLV layout (Flv) and of what a tag is (FlvTagInfo), as the coordinator's cutting uses.
                while (Flv.TryReadTag(_pending.AsSpan(pos, _pendingLength - pos), out var type, out uint timestamp, out int bodyLength, out int length))
                {
                    Publish(new FlvTag(type, timestamp, _pending.AsSpan(pos + FlvTag.HeaderLength, bodyLength).ToArray()));
                    pos += length;
                }
            }
            catch (InvalidDataException e)
            {
                NotFlv = $"the FLV stream is not well formed ({e.Message})";
                foreach (var sub in _subscribers) sub.Queue.Writer.TryComplete();
                return;
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
        var kind = tag.Kind;
        bool header = kind is FlvTagKind.Metadata or FlvTagKind.VideoSequenceHeader or FlvTagKind.AudioSequenceHeader;
        switch (kind)
        {
            case FlvTagKind.Metadata: _metadata = tag; break;
            case FlvTagKind.VideoSequenceHeader: _videoHeader = tag; break;
            case FlvTagKind.AudioSequenceHeader: _audioHeader = tag; break;
        }
        if (tag.Type == FlvTagType.Video) _hasVideo = true;
        if (kind is FlvTagKind.VideoSequenceHeader or FlvTagKind.AudioSequenceHeader or FlvTagKind.Keyframe)
        {
            _gop.Clear(); // a new sequence (a publisher came back) or a new GOP
            _gopBytes = 0;
        }
        if (_hasVideo && !header && (kind == FlvTagKind.Keyframe || _gop.Count > 0))
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
        bool start = kind == FlvTagKind.Keyframe || (!_hasVideo && tag.Type == FlvTagType.Audio && kind == FlvTagKind.Other);
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
                        if (header is { } h) Enqueue(s, h with { Timestamp = HeaderTime(h, at) });
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
                            if (header is { } h) yield return h with { Timestamp = HeaderTime(h, tag.Timestamp) };
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

    /// <summary>
    /// A header's time for a player that starts at a keyframe at <paramref name="keyframe"/>: the
    /// sequence headers go at the keyframe's, onMetaData at 0. ffmpeg's
    /// FLV reader (which ffplay and ffmpeg use over RTMP) takes a script tag at another time for a
    /// subtitle stream, listed ahead of the video ("Stream #0:0: Subtitle: text").
    /// </summary>
    private static uint HeaderTime(FlvTag header, uint keyframe) => header.Type == FlvTagType.Script ? 0 : keyframe;

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

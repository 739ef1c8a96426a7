using ShardStream.Transport;

namespace ShardStream.Media;

/// <summary>
/// A run of whole units of a node's output: <see cref="RandomAccess"/> when it starts with a unit a
/// decoder can start at (then <see cref="Header"/> is the header in effect there, and
/// <see cref="StreamStart"/> says it is the stream's own first unit, which needs no header).
/// </summary>
internal sealed record MediaSegment(byte[] Bytes, bool RandomAccess, bool StreamStart, MediaHeader? Header);

/// <summary>
/// A node's live media output for its local viewers (HTTP, RTMP play): fed the bytes the node
/// writes, in order (a peer's output, the coordinator's source), it finds their format and units
/// like the coordinator does, and hands each viewer the header, then the stream from a keyframe.
/// Each viewer has a bounded queue; one that falls behind skips ahead to the next keyframe and
/// never holds the node back (<see cref="Write"/> never waits).
/// </summary>
public sealed class MediaHub
{
    /// <summary>The longest partial unit held while waiting for its end (the largest FLV tag).</summary>
    private const int MaxPending = MediaReader.MaxBuffered;

    private readonly object _gate = new();
    private readonly List<MediaViewer> _viewers = [];
    private readonly TaskCompletionSource<MediaFormat> _format = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private UnitScanner? _scanner;
    private byte[] _pending = new byte[64 * 1024];
    private int _pendingLength;
    private bool _decided;
    private bool _completed;
    private bool _started;
    private AddressShares? _shares;

    /// <summary>The most bytes queued for one viewer before it skips ahead to the next keyframe (default 8 MiB).</summary>
    public long MaxQueuedBytesPerViewer { get; init; } = 8L * 1024 * 1024;

    /// <summary>The most viewers at once (default 64).</summary>
    public int MaxViewers { get; init; } = 64;

    /// <summary>The format of the stream, once its first bytes were written (raw: nothing to serve).</summary>
    public Task<MediaFormat> Format => _format.Task;

    /// <summary>Viewers now.</summary>
    public int ViewerCount
    {
        get
        {
            lock (_gate) return _viewers.Count;
        }
    }

    /// <summary>True once the stream has ended.</summary>
    public bool IsCompleted
    {
        get
        {
            lock (_gate) return _completed;
        }
    }

    /// <summary>The most viewers at once from one address (an IPv6 /64): a quarter of <see cref="MaxViewers"/> (at least 1), so that one stranger cannot take every place; <see cref="MediaHttp"/> does not count the node's own host.</summary>
    public int MaxViewersPerAddress => Math.Max(1, MaxViewers / 4);

    /// <summary>Viewers per address group, under <see cref="_gate"/>; made at the first viewer (<see cref="MaxViewers"/> is set by then).</summary>
    private AddressShares Shares => _shares ??= new AddressShares(MaxViewersPerAddress);

    /// <summary>
    /// A new viewer watching from <paramref name="from"/> (its address group,
    /// <see cref="ConnectionCap.ShareOf"/>; null: not counted per address), or null when
    /// <see cref="MaxViewers"/> are watching already, or <see cref="MaxViewersPerAddress"/> from that group.
    /// </summary>
    public MediaViewer? Subscribe(string? from = null) => Subscribe(from, out _);

    /// <summary>As <see cref="Subscribe(string?)"/>; when it refuses, <paramref name="refusal"/> says which limit, decided under the same lock.</summary>
    public MediaViewer? Subscribe(string? from, out string? refusal)
    {
        lock (_gate)
        {
            refusal = Shares.IsFull(from) ? $"too many viewers from your address ({MaxViewersPerAddress}, a quarter of this node's {MaxViewers})"
                : _viewers.Count >= MaxViewers ? $"too many viewers on this node ({MaxViewers})"
                : null;
            if (refusal is not null) return null;
            var viewer = new MediaViewer(this, MaxQueuedBytesPerViewer) { From = from };
            if (_completed) viewer.End();
            else
            {
                _viewers.Add(viewer);
                Shares.Take(from);
            }
            return viewer;
        }
    }

    internal void Remove(MediaViewer viewer)
    {
        lock (_gate)
        {
            if (_viewers.Remove(viewer)) Shares.Release(viewer.From);
        }
    }

    /// <summary>The next bytes of the node's output. Never blocks on a viewer.</summary>
    public void Write(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        lock (_gate)
        {
            if (_completed) return;
            if (!_decided)
            {
                Append(data);
                // As the coordinator's reader: "F", "FL", "FLV" cannot tell yet.
                if (_pendingLength < 4 && "FLV"u8.StartsWith(_pending.AsSpan(0, _pendingLength))) return;
                _decided = true;
                var format = MediaFormats.Detect(_pending.AsSpan(0, _pendingLength));
                _scanner = UnitScanner.For(format);
                _format.TrySetResult(format);
                if (_scanner is null) _pendingLength = 0;
            }
            else
            {
                if (_scanner is null) return;
                Append(data);
            }
            Publish();
        }
    }

    /// <summary>
    /// Why the viewers' streams ended, when it was not the stream's end: the node stopped before it
    /// (<see cref="Complete"/>'s reason); null at the end of the stream.
    /// </summary>
    public string? StoppedEarly
    {
        get
        {
            lock (_gate) return _stoppedEarly;
        }
    }

    private string? _stoppedEarly;

    /// <summary>
    /// The stream ended, or the node stops before its end (<paramref name="stoppedEarly"/>: why):
    /// every viewer gets what is queued, then the end.
    /// </summary>
    public void Complete(string? stoppedEarly = null)
    {
        lock (_gate)
        {
            if (_completed) return;
            _completed = true;
            _stoppedEarly = stoppedEarly;
            _format.TrySetResult(MediaFormat.Raw);
            foreach (var v in _viewers) v.End();
            _viewers.Clear();
        }
    }

    /// <summary>A stream that writes to <paramref name="output"/> and feeds this hub the same bytes.</summary>
    public Stream Tee(Stream output) => new TeeStream(output, this, onRead: false);

    /// <summary>A stream that reads <paramref name="source"/> and feeds this hub every byte read; the source's end ends the hub's stream.</summary>
    public Stream Tap(Stream source) => new TeeStream(source, this, onRead: true);

    private void Append(ReadOnlySpan<byte> data)
    {
        if (_pendingLength + data.Length > _pending.Length)
        {
            if (_pendingLength + data.Length > MaxPending)
            {
                // Cannot happen with FLV or TS units; a stream that claims it does is passed by.
                _pendingLength = 0;
                return;
            }
            Array.Resize(ref _pending, Math.Min(MaxPending, Math.Max(_pending.Length * 2, _pendingLength + data.Length)));
        }
        data.CopyTo(_pending.AsSpan(_pendingLength));
        _pendingLength += data.Length;
    }

    /// <summary>Cuts the whole units pending into segments (a random-access unit starts one) and offers them to every viewer.</summary>
    private void Publish()
    {
        int at = 0, segmentStart = 0;
        bool segmentRandomAccess = false, segmentStreamStart = false;
        MediaHeader? segmentHeader = null;
        while (at < _pendingLength)
        {
            int length = _scanner!.Next(_pending.AsSpan(at, _pendingLength - at), out bool randomAccess);
            if (length == 0) break;
            if (randomAccess && at > segmentStart)
            {
                Offer(segmentStart, at, segmentRandomAccess, segmentStreamStart, segmentHeader);
                segmentStart = at;
            }
            if (at == segmentStart)
            {
                segmentRandomAccess = randomAccess;
                segmentStreamStart = randomAccess && !_started;
                segmentHeader = _scanner.Header;
            }
            _started = true;
            at += length;
        }
        if (at > segmentStart) Offer(segmentStart, at, segmentRandomAccess, segmentStreamStart, segmentHeader);
        _pending.AsSpan(at, _pendingLength - at).CopyTo(_pending);
        _pendingLength -= at;
    }

    private void Offer(int from, int to, bool randomAccess, bool streamStart, MediaHeader? header)
    {
        if (_viewers.Count == 0) return;
        var segment = new MediaSegment(_pending.AsSpan(from, to - from).ToArray(), randomAccess, streamStart, header);
        foreach (var v in _viewers) v.Offer(segment);
    }

    private sealed class TeeStream(Stream inner, MediaHub hub, bool onRead) : Stream
    {
        public override bool CanRead => onRead;
        public override bool CanSeek => false;
        public override bool CanWrite => !onRead;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = inner.Read(buffer, offset, count);
            Pass(buffer.AsSpan(offset, n), count);
            return n;
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            int n = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
            Pass(buffer.Span[..n], buffer.Length);
            return n;
        }

        /// <summary>
        /// What was read goes to the hub; the source's end (a read of nothing into room for
        /// something) ends the viewers' streams at once, not when the node is done waiting for its
        /// peers to finish (the coordinator's drain, up to its timeout).
        /// </summary>
        private void Pass(ReadOnlySpan<byte> read, int room)
        {
            if (read.Length > 0) hub.Write(read);
            else if (room > 0) hub.Complete();
        }

        public override void Write(byte[] buffer, int offset, int count)
        {
            inner.Write(buffer, offset, count);
            hub.Write(buffer.AsSpan(offset, count));
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await inner.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            hub.Write(buffer.Span);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }
}

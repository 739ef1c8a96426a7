namespace ShardStream.Media;

/// <summary>
/// One local viewer of a <see cref="MediaHub"/>: it gets the header, then the stream from a
/// keyframe on. Its queue holds at most a fixed number of bytes; when the next segment would go
/// over, everything queued is dropped and the viewer waits for the next keyframe (getting the
/// header's parts again first if they changed meanwhile), so a slow viewer costs only itself.
/// </summary>
public sealed class MediaViewer : IDisposable
{
    private readonly MediaHub _hub;
    private readonly long _maxQueued;
    private readonly Queue<byte[]> _queue = new();
    private long _queued;
    private bool _waitingForKeyframe = true;
    private uint _headerGeneration;
    private bool _hasHeader;
    private bool _ended;
    private TaskCompletionSource? _waiter;

    /// <summary>The IP address it watches from, counted against <see cref="MediaHub.MaxViewersPerAddress"/> (null: not counted).</summary>
    internal string? From { get; init; }

    internal MediaViewer(MediaHub hub, long maxQueued)
    {
        _hub = hub;
        _maxQueued = maxQueued;
    }

    /// <summary>How many times this viewer fell behind and skipped ahead to a keyframe.</summary>
    public int Skips { get; private set; }

    /// <summary>Bytes dropped from this viewer's queue by those skips.</summary>
    public long SkippedBytes { get; private set; }

    /// <summary>Bytes queued for this viewer now.</summary>
    public long QueuedBytes
    {
        get
        {
            lock (_queue) return _queued;
        }
    }

    internal void Offer(MediaSegment segment)
    {
        TaskCompletionSource? wake;
        lock (_queue)
        {
            if (_ended) return;
            if (_queued + segment.Bytes.Length > _maxQueued && _queue.Count > 0)
            {
                // Behind: drop what is queued and start again at a keyframe.
                Skips++;
                SkippedBytes += _queued;
                _queue.Clear();
                _queued = 0;
                _waitingForKeyframe = true;
            }
            if (_waitingForKeyframe)
            {
                if (!segment.RandomAccess) return;
                _waitingForKeyframe = false;
                if (segment.StreamStart) _hasHeader = true; // the stream's own first bytes are its header
                else if (segment.Header is { } header && (!_hasHeader || header.Generation != _headerGeneration))
                {
                    // The first time the whole header; after a skip only what a decoder needs again
                    // (an FLV stream has one file header, so its preamble is not repeated).
                    var bytes = _hasHeader && header.Format == MediaFormat.Flv ? header.Bytes[Flv.PreambleLength..] : header.Bytes;
                    Enqueue(bytes);
                }
                if (segment.Header is { } h) _headerGeneration = h.Generation;
                _hasHeader = true;
            }
            Enqueue(segment.Bytes);
            wake = _waiter;
            _waiter = null;
        }
        wake?.TrySetResult();
    }

    private void Enqueue(byte[] bytes)
    {
        if (bytes.Length == 0) return;
        _queue.Enqueue(bytes);
        _queued += bytes.Length;
    }

    internal void End()
    {
        TaskCompletionSource? wake;
        lock (_queue)
        {
            _ended = true;
            wake = _waiter;
            _waiter = null;
        }
        wake?.TrySetResult();
    }

    /// <summary>
    /// Takes everything queued (waiting for something when nothing is): the segments in order, or
    /// an empty list once the stream has ended and all was taken.
    /// </summary>
    public async ValueTask<IReadOnlyList<byte[]>> TakeAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Task wait;
            lock (_queue)
            {
                if (_queue.Count > 0)
                {
                    var taken = _queue.ToArray();
                    _queue.Clear();
                    _queued = 0;
                    return taken;
                }
                if (_ended) return [];
                _waiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                wait = _waiter.Task;
            }
            await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Stops watching.</summary>
    public void Dispose()
    {
        End();
        _hub.Remove(this);
    }
}

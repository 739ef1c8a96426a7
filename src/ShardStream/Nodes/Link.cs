using System.Buffers;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>Handles one complete frame read from a link. Runs on the link's read loop.</summary>
internal delegate void FrameHandler(Link link, FrameType type, ReadOnlySequence<byte> body);

/// <summary>
/// One connection between two nodes: a single read loop that parses frames and hands them to a
/// handler, and a single writer fed by a queue bounded in bytes. A receiver that lets more than
/// <see cref="LinkOptions.MaxQueuedBytes"/> pile up is cut off with a reason instead of holding
/// back its siblings. Heartbeats go out when the link is quiet; a link whose silence its
/// <see cref="FailureDetector"/> judges too long for a living other side is ended.
/// </summary>
internal sealed class Link : IAsyncDisposable
{
    private readonly IConnection _connection;
    // Two readers: the writer, and Finish() draining what will never be sent; a single-reader
    // channel could hand one chunk to both (released twice) or a default item to one.
    private readonly Channel<Outgoing> _queue = Channel.CreateUnbounded<Outgoing>(new UnboundedChannelOptions { SingleReader = false });
    private readonly LinkOptions _options;
    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource<CloseReason> _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly FailureDetector _detector;
    private long _queuedBytes;
    private long _chunkBytesQueued;
    private long _chunkBytesSent;
    private long _inFlightSince;
    private long _lastSent;
    private int _closing;
    private bool _dropChunks;
    private bool _started;
    private Task _writer = Task.CompletedTask;
    private Task _reader = Task.CompletedTask;
    private TimeSpan _heartbeatInterval;
    private TimeSpan _longestHeartbeat;
    private byte[] _heartbeatFrame = PlainHeartbeat;

    /// <summary>A heartbeat that says nothing of the sender's interval; one array for every link (sends only read it).</summary>
    private static readonly byte[] PlainHeartbeat = FrameWriting.ToArray(new Heartbeat(0).Write);

    public Link(IConnection connection, string name, LinkOptions options, ILogger log, TimeProvider time)
    {
        _connection = connection;
        Name = name;
        _options = options;
        _log = log;
        _time = time;
        _detector = new FailureDetector(options.FailureDetector, time);
        _lastSent = time.GetTimestamp();
        _heartbeatInterval = options.HeartbeatInterval;
    }

    /// <summary>How often this link sends a heartbeat when it has nothing else to send.</summary>
    public TimeSpan HeartbeatInterval => _heartbeatInterval;

    /// <summary>
    /// The coordinator's side of a control link: asks the peer (in every heartbeat it sends) to
    /// heartbeat only every <paramref name="interval"/>, and follows once the peer's heartbeats say
    /// it does (docs/protocol.md section 10). Until then both keep the usual interval.
    /// </summary>
    public void OfferLongerHeartbeats(TimeSpan interval)
    {
        _longestHeartbeat = interval;
        _heartbeatFrame = FrameWriting.ToArray(new Heartbeat((ulong)interval.TotalMilliseconds).Write);
    }

    /// <summary>
    /// A peer's side of its control link: when the coordinator's heartbeats ask for a longer
    /// interval, up to <paramref name="longest"/>, heartbeat that often and expect as much.
    /// </summary>
    public void AcceptLongerHeartbeats(TimeSpan longest) => _longestHeartbeat = longest;

    /// <summary>A heartbeat arrived: one that names a longer interval, within what this link accepts, is followed.</summary>
    private void OnHeartbeat(ReadOnlySequence<byte> body)
    {
        if (_longestHeartbeat <= TimeSpan.Zero) return;
        var reader = new SequenceReader<byte>(body);
        if (!Heartbeat.TryRead(ref reader, out var heartbeat) || heartbeat.Value == 0) return;
        var interval = TimeSpan.FromMilliseconds(Math.Min(heartbeat.Value, int.MaxValue));
        if (interval <= _heartbeatInterval || interval > _longestHeartbeat) return;
        _heartbeatInterval = interval;
        _heartbeatFrame = FrameWriting.ToArray(new Heartbeat(heartbeat.Value).Write);
        _detector.Rescale(interval);
        // Say so at once: the other side keeps expecting the old interval until it hears this one.
        Send(_heartbeatFrame);
        _log.LogDebug("{Link}: heartbeats every {Seconds:0.#} s from now on, as the other side does", Name, interval.TotalSeconds);
    }

    /// <summary>For logs: who is on the other side.</summary>
    public string Name { get; set; }

    /// <summary>The remote address as the transport sees it.</summary>
    public string RemoteAddress => _connection.RemoteAddress;

    /// <summary>Bytes waiting in the send queue.</summary>
    public long QueuedBytes => Interlocked.Read(ref _queuedBytes);

    /// <summary>Chunk payload bytes queued on this link since it opened (a running total).</summary>
    public long ChunkBytesQueued => Interlocked.Read(ref _chunkBytesQueued);

    /// <summary>Chunk payload bytes handed to the transport since the link opened (a running total).</summary>
    public long ChunkBytesSent => Interlocked.Read(ref _chunkBytesSent);

    /// <summary>
    /// How long the oldest frame not yet handed to the transport has waited since it was queued
    /// on this link (zero when nothing waits). A receiver slower than what is queued for it shows
    /// here within seconds, long before its queue reaches <see cref="LinkOptions.MaxQueuedBytes"/>.
    /// </summary>
    public TimeSpan QueueAge
    {
        get
        {
            long oldest = Interlocked.Read(ref _inFlightSince);
            if (_queue.Reader.TryPeek(out var head) && (oldest == 0 || head.At < oldest)) oldest = head.At;
            return oldest == 0 ? TimeSpan.Zero : _time.GetElapsedTime(oldest);
        }
    }

    /// <summary>
    /// Completes with the reason once the link is closed, for whatever cause. A link ended because
    /// of what the other side sent (a frame it may not send, a malformed one, data that failed
    /// verification) has a reason whose <see cref="CloseReason.IsViolation"/> is true.
    /// </summary>
    public Task<CloseReason> Closed => _closed.Task;

    /// <summary>The code of the goodbye the other side sent, if it sent one.</summary>
    public GoodbyeCode? ReceivedGoodbye { get; private set; }

    /// <summary>The reason in the goodbye the other side sent, if it sent one.</summary>
    public string? ReceivedGoodbyeReason { get; private set; }

    /// <summary>How long since anything arrived on this link (less the time this node itself did not run).</summary>
    public TimeSpan Silence => _detector.Silence;

    /// <summary>True when the failure detector would take the other side for dead now (see <see cref="Tick"/>).</summary>
    public bool SeemsDead => Volatile.Read(ref _started) && !IsClosing && _detector.IsDead(out _) && !_connection.HasUnreadInput;

    /// <summary>
    /// True when the failure detector's φ is over its threshold and nothing waits unread, whatever
    /// the silence's length: for a decision that other evidence backs (a child lost this peer).
    /// </summary>
    public bool Suspected => _detector.Phi() >= _options.FailureDetector.Threshold && !_connection.HasUnreadInput;

    /// <summary>True once closing has begun.</summary>
    public bool IsClosing => Volatile.Read(ref _closing) != 0;

    /// <summary>What this link is to its owner (a child, a parent, a control link); null until its hello/welcome exchange says.</summary>
    public LinkRole? Role { get; set; }

    /// <summary>Starts the read loop (frames go to <paramref name="handler"/>) and the writer.</summary>
    public void Start(FrameHandler handler)
    {
        Volatile.Write(ref _started, true);
        _writer = Task.Run(WriteLoopAsync);
        _reader = Task.Run(() => ReadLoopAsync(handler));
    }

    /// <summary>
    /// Reads exactly one frame before the loops start (the hello or the welcome). A frame whose
    /// length field is over <paramref name="maxLength"/> is refused before it is buffered, so a
    /// stranger's first frame costs at most that much memory.
    /// </summary>
    public async Task<(FrameType Type, byte[] Body)> ReadOneAsync(CancellationToken cancellationToken, int maxLength = Protocol.MaxFrameLength)
    {
        var input = _connection.Pipe.Input;
        while (true)
        {
            var result = await input.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            bool found;
            FrameType type;
            ReadOnlySequence<byte> body;
            try
            {
                if (buffer.Length >= 4 && FrameCodec.PeekLength(buffer) is var length && length > maxLength)
                    throw new ProtocolException($"a first frame of {length} bytes is over the limit of {maxLength}");
                found = FrameCodec.TryReadFrame(ref buffer, out type, out body);
            }
            catch (ProtocolException)
            {
                // Leave the reader usable so that a goodbye can still be sent and the close drained.
                input.AdvanceTo(result.Buffer.End);
                throw;
            }
            if (found && type == FrameType.Heartbeat)
            {
                input.AdvanceTo(buffer.Start);
                continue;
            }
            if (found)
            {
                var copy = body.ToArray();
                input.AdvanceTo(buffer.Start);
                _detector.Heard();
                return (type, copy);
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) throw new IOException("connection closed before a frame arrived");
        }
    }

    /// <summary>Queues a chunk (retaining it). False when the link is closing or was just cut off for being too slow.</summary>
    public bool TrySend(Chunk chunk)
    {
        if (IsClosing) return false;
        long queued = Interlocked.Add(ref _queuedBytes, chunk.Length);
        if (queued > _options.MaxQueuedBytes)
        {
            Interlocked.Add(ref _queuedBytes, -chunk.Length);
            CloseAsync(GoodbyeCode.TooSlow, $"too slow: {queued - chunk.Length} bytes waiting to be sent, the limit is {_options.MaxQueuedBytes}").Observe(_log, $"{Name}: closing");
            return false;
        }
        if (!_queue.Writer.TryWrite(new Outgoing(chunk.Retain(), null, _time.GetTimestamp())))
        {
            Interlocked.Add(ref _queuedBytes, -chunk.Length);
            chunk.Release();
            return false;
        }
        Interlocked.Add(ref _chunkBytesQueued, chunk.Length);
        return true;
    }

    /// <summary>Queues a control frame.</summary>
    public void Send(Action<IBufferWriter<byte>> write)
    {
        if (IsClosing) return;
        _queue.Writer.TryWrite(new Outgoing(null, FrameWriting.ToArray(write), _time.GetTimestamp()));
    }

    /// <summary>Queues a control frame that was encoded already.</summary>
    public void Send(byte[] frame)
    {
        if (IsClosing) return;
        _queue.Writer.TryWrite(new Outgoing(null, frame, _time.GetTimestamp()));
    }

    /// <summary>Writes a frame at once, before the loops are started (hello, welcome).</summary>
    public async Task WriteNowAsync(Action<IBufferWriter<byte>> write, CancellationToken cancellationToken)
    {
        write(_connection.Pipe.Output);
        await _connection.Pipe.Output.FlushAsync(cancellationToken).ConfigureAwait(false);
        _lastSent = _time.GetTimestamp();
    }

    /// <summary>
    /// Closes in order: a goodbye after everything queued, the send side closed, then a short wait
    /// for the other side to close too so that nothing in flight is reset.
    /// </summary>
    public async Task CloseAsync(GoodbyeCode code, string reason)
    {
        if (Interlocked.Exchange(ref _closing, 1) != 0)
        {
            await Closed.ConfigureAwait(false);
            return;
        }
        if (code != GoodbyeCode.Normal) _log.LogWarning("{Link}: closing: {Reason}", Name, reason);
        else _log.LogDebug("{Link}: closing: {Reason}", Name, reason);
        var closing = new CloseReason(code switch { GoodbyeCode.TooSlow => CloseCode.TooSlow, GoodbyeCode.Timeout => CloseCode.TimedOut, _ => CloseCode.Closed }, reason);
        var goodbye = new Goodbye(code, reason);
        _queue.Writer.TryWrite(new Outgoing(null, FrameWriting.ToArray(goodbye.Write), _time.GetTimestamp()));
        _queue.Writer.TryComplete();
        if (code == GoodbyeCode.TooSlow)
        {
            // A slow receiver would make us wait for its whole backlog: the writer skips the
            // backlog's chunks, so the goodbye that says why goes out next.
            Volatile.Write(ref _dropChunks, true);
        }
        else if (code == GoodbyeCode.Timeout)
        {
            // A silent side (frozen, or its host gone) will not read a goodbye either: waiting for
            // a drain would only delay the repair by the close timeout.
            Finish(closing);
            return;
        }
        var drained = await Task.WhenAny(_writer, Task.Delay(_options.CloseTimeout, _time)).ConfigureAwait(false);
        if (drained == _writer)
        {
            await Task.WhenAny(_reader, Task.Delay(_options.CloseTimeout, _time)).ConfigureAwait(false);
        }
        Finish(closing);
    }

    /// <summary>
    /// Closes the send side (after whatever was written) and waits, reading and discarding, until
    /// the other side closes too or the close timeout passes; then ends the link. A reset right
    /// after a last frame could otherwise destroy that frame before it is read.
    /// </summary>
    public Task ShutdownAsync(string reason) => ShutdownAsync(new CloseReason(CloseCode.Closed, reason));

    private async Task ShutdownAsync(CloseReason reason)
    {
        Interlocked.Exchange(ref _closing, 1);
        _queue.Writer.TryComplete();
        try
        {
            await _connection.CloseOutputAsync().ConfigureAwait(false);
            using var timeout = new CancellationTokenSource(_options.CloseTimeout);
            var input = _connection.Pipe.Input;
            while (true)
            {
                var result = await input.ReadAsync(timeout.Token).ConfigureAwait(false);
                input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted) break;
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or InvalidOperationException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            // Timed out or already gone: the link ends either way.
        }
        Finish(reason);
    }

    /// <summary>Ends the link at once: its owner gave up on it.</summary>
    public void Abort(string reason) => Abort(new CloseReason(CloseCode.Aborted, reason));

    /// <summary>Ends the link at once (the remote side failed or broke the protocol, or its owner gave up on it).</summary>
    public void Abort(CloseReason reason)
    {
        Interlocked.Exchange(ref _closing, 1);
        _queue.Writer.TryComplete();
        Finish(reason);
    }

    private void Finish(CloseReason reason)
    {
        if (!_closed.TrySetResult(reason)) return;
        _stop.Cancel();
        _connection.Abort();
        // Whatever is still queued will never be sent.
        while (_queue.Reader.TryRead(out var item)) item.Chunk?.Release();
    }

    /// <summary>The owner did not run for <paramref name="paused"/> (its timer fired that late): not the other side's silence.</summary>
    public void Excuse(TimeSpan paused) => _detector.Excuse(paused);

    /// <summary>
    /// Called by the owner's timer: sends a heartbeat when quiet, ends the link when its failure
    /// detector takes the other side for dead. <paramref name="lenient"/>: the owner seems stalled (most of its links are silent at once),
    /// so only the longest silence (<see cref="FailureDetectorOptions.MaxSilence"/>) ends the link.
    /// </summary>
    public void Tick(bool lenient = false)
    {
        // Before the loops start, the hello/welcome exchange has its own timeout, and a heartbeat
        // must not slip in ahead of the welcome.
        if (IsClosing || !Volatile.Read(ref _started)) return;
        long now = _time.GetTimestamp();
        if (_detector.IsDead(lenient, out var reason) && _connection.HasUnreadInput)
        {
            // Bytes from the other side wait unread: it is alive, this side is slow to read.
            FailureDetectorLog.UnreadInput(_log, Name, _detector.Silence.TotalSeconds);
            _detector.Heard();
        }
        else if (_detector.IsDead(lenient, out reason))
        {
            ShardStreamMetrics.HeartbeatTimeouts.Add(1);
            CloseAsync(GoodbyeCode.Timeout, reason).Observe(_log, $"{Name}: closing");
            return;
        }
        if (_time.GetElapsedTime(Interlocked.Read(ref _lastSent), now) >= _heartbeatInterval)
            Send(_heartbeatFrame);
    }

    /// <summary>At most this many chunks go into one gathered send.</summary>
    private const int MaxChunksPerSend = 8;

    /// <summary>A send stops taking items from the queue once it holds this many bytes.</summary>
    private const int MaxBytesPerSend = 256 * 1024;

    private async Task WriteLoopAsync()
    {
        var reader = _queue.Reader;
        // One gathered send per batch: each chunk's frame prefix (written here) and its payload
        // straight from the pooled chunk, and control frames as they were encoded. Nothing is
        // copied into a send buffer.
        var batch = new List<ArraySegment<byte>>(2 * MaxChunksPerSend + 8);
        var prefixes = new byte[MaxChunksPerSend * ChunkHeader.FramePrefixLength];
        var sending = new List<Chunk>(MaxChunksPerSend);
        CloseReason? failure = null;
        try
        {
            while (await reader.WaitToReadAsync(_stop.Token).ConfigureAwait(false))
            {
                int bytes = 0;
                while (sending.Count < MaxChunksPerSend && bytes < MaxBytesPerSend && reader.TryRead(out var item))
                {
                    // The batch's oldest item: what QueueAge measures while the send is under way.
                    if (batch.Count == 0) Interlocked.Exchange(ref _inFlightSince, item.At);
                    if (item.Chunk is { } chunk)
                    {
                        if (Volatile.Read(ref _dropChunks))
                        {
                            Interlocked.Add(ref _queuedBytes, -chunk.Length);
                            chunk.Release();
                            continue;
                        }
                        var prefix = new ArraySegment<byte>(prefixes, sending.Count * ChunkHeader.FramePrefixLength, ChunkHeader.FramePrefixLength);
                        new ChunkHeader((byte)chunk.Shard, (ulong)chunk.Seq, (ulong)chunk.Offset).WritePrefix(prefix, chunk.Length);
                        batch.Add(prefix);
                        batch.Add(chunk.Segment);
                        sending.Add(chunk);
                        bytes += prefix.Count + chunk.Length;
                    }
                    else
                    {
                        batch.Add(item.Frame!);
                        bytes += item.Frame!.Length;
                    }
                }
                if (batch.Count == 0)
                {
                    Interlocked.Exchange(ref _inFlightSince, 0);
                    continue;
                }
                try
                {
                    await _connection.SendAsync(batch, _stop.Token).ConfigureAwait(false);
                }
                finally
                {
                    foreach (var chunk in sending)
                    {
                        Interlocked.Add(ref _queuedBytes, -chunk.Length);
                        Interlocked.Add(ref _chunkBytesSent, chunk.Length);
                        chunk.Release();
                    }
                    sending.Clear();
                    batch.Clear();
                    Interlocked.Exchange(ref _inFlightSince, 0);
                }
                _lastSent = _time.GetTimestamp();
            }
            await _connection.CloseOutputAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Finish() stopped us.
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            failure = new CloseReason(CloseCode.ConnectionLost, $"send failed: {e.Message}", e);
        }
        // A send cut short because the link was ended on purpose is not a failure of its own.
        if (failure is not null && !Closed.IsCompleted)
        {
            _log.LogInformation("{Link}: {Reason}", Name, failure.Text);
            Abort(failure);
        }
    }

    private async Task ReadLoopAsync(FrameHandler handler)
    {
        var input = _connection.Pipe.Input;
        var reason = new CloseReason(CloseCode.RemoteClosed, "connection closed by the other side");
        try
        {
            while (true)
            {
                var result = await input.ReadAsync(_stop.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                try
                {
                    while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
                    {
                        if (type == FrameType.Goodbye)
                        {
                            var r = new SequenceReader<byte>(body);
                            reason = Goodbye.TryRead(ref r, out var goodbye)
                                ? new CloseReason(CloseCode.Goodbye, $"the other side said goodbye ({goodbye.Code}): {goodbye.Reason}")
                                : new CloseReason(CloseCode.Goodbye, "malformed goodbye");
                            ReceivedGoodbye = goodbye.Code;
                            ReceivedGoodbyeReason = goodbye.Reason;
                            if (goodbye.Code != GoodbyeCode.Normal) _log.LogWarning("{Link}: {Reason}", Name, reason.Text);
                            handler(this, type, body);
                            continue;
                        }
                        if (type != FrameType.Heartbeat) handler(this, type, body);
                        else OnHeartbeat(body);
                    }
                }
                finally
                {
                    _detector.Heard();
                    input.AdvanceTo(buffer.Start, buffer.End);
                }
                if (result.IsCompleted)
                {
                    if (buffer.Length > 0) reason = new CloseReason(CloseCode.RemoteClosed, $"connection closed in the middle of a frame ({buffer.Length} bytes left)");
                    break;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return;
        }
        catch (ProtocolException e)
        {
            reason = new CloseReason(CloseCode.ProtocolViolation, $"protocol error: {e.Message}", e);
            _log.LogWarning("{Link}: {Reason}", Name, reason.Text);
            // Tell the other side why, after anything already queued, then close gracefully.
            _queue.Writer.TryWrite(new Outgoing(null, FrameWriting.ToArray(new Goodbye(GoodbyeCode.ProtocolError, e.Message).Write), _time.GetTimestamp()));
            Interlocked.Exchange(ref _closing, 1);
            _queue.Writer.TryComplete();
            await Task.WhenAny(_writer, Task.Delay(_options.CloseTimeout, _time)).ConfigureAwait(false);
            await ShutdownAsync(reason).ConfigureAwait(false);
            return;
        }
        catch (InvalidDataException e)
        {
            reason = new CloseReason(CloseCode.BadData, $"bad data: {e.Message}", e);
            _log.LogWarning("{Link}: {Reason}", Name, reason.Text);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or ObjectDisposedException or InvalidOperationException)
        {
            reason = new CloseReason(CloseCode.ConnectionLost, $"connection lost: {e.Message}", e);
        }
        catch (Exception e)
        {
            // A bug in a handler: this link ends with the reason, and the error is logged, instead
            // of a dead read loop on a link that looks open.
            reason = new CloseReason(CloseCode.InternalError, $"internal error: {e.GetType().Name}: {e.Message}", e);
            HardeningLog.BackgroundTaskFailed(_log, $"{Name}: read loop", e);
        }
        if (IsClosing)
        {
            // We are closing on purpose; the other side closed in answer. Let CloseAsync finish.
            if (_writer.IsCompleted) Finish(reason);
            return;
        }
        _log.LogDebug("{Link}: read loop ended: {Reason}", Name, reason.Text);
        Abort(reason);
    }

    public async ValueTask DisposeAsync()
    {
        Abort("disposed");
        try
        {
            await Task.WhenAll(_reader, _writer).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // Stopping is all that was asked.
        }
        await _connection.DisposeAsync().ConfigureAwait(false);
    }

    private readonly record struct Outgoing(Chunk? Chunk, byte[]? Frame, long At);
}

/// <summary>Limits and timers of a link.</summary>
internal sealed record LinkOptions
{
    public long MaxQueuedBytes { get; init; } = 64L * 1024 * 1024;

    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    public FailureDetectorOptions FailureDetector { get; init; } = new();

    public TimeSpan CloseTimeout { get; init; } = TimeSpan.FromSeconds(5);
}

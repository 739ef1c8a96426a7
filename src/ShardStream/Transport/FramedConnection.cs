using System.Buffers;
using Microsoft.Extensions.Logging;
using ShardStream.Streaming;
using ShardStream.Wire;

namespace ShardStream.Transport;

/// <summary>
/// A connection that carries frames, and knows nothing of what they mean to a node (as Kestrel's
/// <c>SocketConnection</c> is apart from <c>Http1Connection</c>): one read loop that parses frames
/// and hands them on, one writer fed by a queue counted in bytes that gathers chunks and control
/// frames into one send, and one way to end it, with a <see cref="CloseReason"/>. Heartbeats,
/// limits and whom to cut off are the owner's policy (<c>Nodes.Link</c>).
/// </summary>
internal sealed class FramedConnection : IAsyncDisposable
{
    private readonly IConnection _connection;
    // Two readers: the writer, and Finish() draining what will never be sent (see OutgoingQueue).
    private readonly OutgoingQueue _queue = new();
    private readonly TimeSpan _closeTimeout;
    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource<CloseReason> _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _queuedBytes;
    private long _chunkBytesQueued;
    private long _chunksQueued;
    private long _chunkBytesSent;
    private long _chunkFootprintQueued;
    private long _chunkFootprintSent;
    private long _inFlightSince;
    private long _lastSent;
    private int _closing;
    private bool _dropChunks;

    /// <summary>Set by a close with dropQueued: the goodbye, the one queued frame still sent.</summary>
    private byte[]? _onlyFrame;
    private Task _writer = Task.CompletedTask;
    private Task _reader = Task.CompletedTask;

    public FramedConnection(IConnection connection, string name, TimeSpan closeTimeout, ILogger log, TimeProvider time)
    {
        _connection = connection;
        Name = name;
        _closeTimeout = closeTimeout;
        _log = log;
        _time = time;
        _lastSent = time.GetTimestamp();
    }

    /// <summary>For logs: who is on the other side.</summary>
    public string Name { get; set; }

    /// <summary>The remote address as the transport sees it.</summary>
    public string RemoteAddress => _connection.RemoteAddress;

    /// <summary>This side's address, the one the other side reached (empty where the transport does not say).</summary>
    public string LocalAddress => _connection.LocalAddress;

    /// <summary>True when bytes from the other side wait unread (see <see cref="IConnection.HasUnreadInput"/>).</summary>
    public bool HasUnreadInput => _connection.HasUnreadInput;

    /// <summary>The handshake's RTT as measured below the process, if the transport has it (see <see cref="IConnection.HandshakeRtt"/>).</summary>
    public TimeSpan? HandshakeRtt => _connection.HandshakeRtt;

    /// <summary>True where the transport measures the handshake, usable sample or not (see <see cref="IConnection.MeasuresHandshake"/>).</summary>
    public bool MeasuresHandshake => _connection.MeasuresHandshake;

    /// <summary>Bytes waiting in the send queue.</summary>
    public long QueuedBytes => Interlocked.Read(ref _queuedBytes);

    /// <summary>Chunk payload bytes queued since the connection opened (a running total).</summary>
    public long ChunkBytesQueued => Interlocked.Read(ref _chunkBytesQueued);

    /// <summary>Chunk payload bytes handed to the transport since the connection opened (a running total).</summary>
    public long ChunkBytesSent => Interlocked.Read(ref _chunkBytesSent);

    /// <summary>
    /// About the chunk bytes one full send hands to the transport: <see cref="MaxChunksPerSend"/>
    /// chunks of the mean length queued so far, at most <see cref="MaxBytesPerSend"/> (0 before
    /// the first chunk). Chunks vary in length, so only their running totals say it.
    /// <see cref="ChunkBytesSent"/> moves in steps of up to this much.
    /// </summary>
    public long ChunkBytesPerSend
    {
        get
        {
            long chunks = Interlocked.Read(ref _chunksQueued);
            return chunks == 0 ? 0 : Math.Min(Interlocked.Read(ref _chunkBytesQueued) / chunks * MaxChunksPerSend, MaxBytesPerSend);
        }
    }

    /// <summary>
    /// The memory (<see cref="Chunk.Footprint"/>) of the chunks queued and not yet handed to the
    /// transport: what a replay window must keep beyond its bound to reach behind this receiver.
    /// </summary>
    public long ChunkFootprintBacklog => Interlocked.Read(ref _chunkFootprintQueued) - Interlocked.Read(ref _chunkFootprintSent);

    /// <summary>When the last send was handed to the transport (a <see cref="TimeProvider"/> timestamp).</summary>
    public long LastSent => Interlocked.Read(ref _lastSent);

    /// <summary>How long the oldest frame not yet handed to the transport has waited since it was queued (zero when nothing waits).</summary>
    public TimeSpan QueueAge
    {
        get
        {
            long oldest = Interlocked.Read(ref _inFlightSince);
            if (_queue.TryPeek(out var head) && (oldest == 0 || head.At < oldest)) oldest = head.At;
            return oldest == 0 ? TimeSpan.Zero : _time.GetElapsedTime(oldest);
        }
    }

    /// <summary>Completes with the reason once the connection is closed, for whatever cause.</summary>
    public Task<CloseReason> Closed => _closed.Task;

    /// <summary>The code of the goodbye the other side sent, if it sent one.</summary>
    public GoodbyeCode? ReceivedGoodbye { get; private set; }

    /// <summary>The reason in the goodbye the other side sent, if it sent one.</summary>
    public string? ReceivedGoodbyeReason { get; private set; }

    /// <summary>True once closing has begun.</summary>
    public bool IsClosing => Volatile.Read(ref _closing) != 0;

    /// <summary>
    /// Starts the read loop and the writer. Every frame but a heartbeat goes to
    /// <paramref name="onFrame"/> (a goodbye after it is recorded), a heartbeat to
    /// <paramref name="onHeartbeat"/>; <paramref name="onReceived"/> runs after every read, whatever it held.
    /// <paramref name="onViolation"/> runs on the read loop when the other side broke the protocol
    /// or sent data that failed verification (in a frame's header or in a handler), before the
    /// connection starts closing.
    /// </summary>
    public void Start(Action<FrameType, ReadOnlySequence<byte>> onFrame, Action<ReadOnlySequence<byte>> onHeartbeat, Action onReceived, Action? onViolation = null)
    {
        Volatile.Write(ref _started, true);
        // Each loop starts on the thread pool (its first step yields), never on the caller's thread.
        _writer = WriteLoopAsync();
        _reader = ReadLoopAsync(onFrame, onHeartbeat, onReceived, onViolation);
    }

    /// <summary>
    /// Reads exactly one frame before the loops start (the hello or the welcome), skipping
    /// heartbeats, refused over <paramref name="maxLength"/> before it is buffered (see <see cref="FirstFrame"/>).
    /// </summary>
    public Task<(FrameType Type, byte[] Body)> ReadOneAsync(int maxLength, CancellationToken cancellationToken) =>
        FirstFrame.ReadAsync(_connection.Pipe.Input, maxLength, cancellationToken);

    /// <summary>
    /// Queues a chunk (retaining it), unless that would put more than <paramref name="maxQueuedBytes"/>
    /// in the queue: then <paramref name="waiting"/> says how many bytes wait already (else it is -1).
    /// False as well when the connection is closing. <paramref name="frameBefore"/>: a control
    /// frame encoded already that goes out right before the chunk, in the same send (the hash list
    /// that covers it): one item of the queue, so the writer wakes once for both.
    /// <paramref name="sendInline"/>: when the writer is idle, the chunk is sent on the caller's
    /// thread (see <see cref="SendInline"/>), which must hold no lock the sending could need.
    /// </summary>
    public bool TrySend(Chunk chunk, long maxQueuedBytes, out long waiting, byte[]? frameBefore = null, bool sendInline = false)
    {
        waiting = -1;
        if (IsClosing) return false;
        long queued = Interlocked.Add(ref _queuedBytes, chunk.Length);
        if (queued > maxQueuedBytes)
        {
            Interlocked.Add(ref _queuedBytes, -chunk.Length);
            waiting = queued - chunk.Length;
            return false;
        }
        if (!_queue.TryWrite(new Outgoing(chunk.Retain(), frameBefore, _time.GetTimestamp())))
        {
            Interlocked.Add(ref _queuedBytes, -chunk.Length);
            chunk.Release();
            return false;
        }
        Interlocked.Add(ref _chunkBytesQueued, chunk.Length);
        Interlocked.Increment(ref _chunksQueued);
        Interlocked.Add(ref _chunkFootprintQueued, chunk.Footprint);
        if (sendInline && Volatile.Read(ref _started)) SendInline();
        else Signal();
        return true;
    }

    /// <summary>Queues a control frame that was encoded already.</summary>
    public void Send(byte[] frame)
    {
        if (IsClosing) return;
        _queue.TryWrite(new Outgoing(null, frame, _time.GetTimestamp()));
        Signal();
    }

    /// <summary>Control frames to send before whatever else is queued (see <see cref="SendAhead"/>).</summary>
    /// Created at the first such frame: most links never send one (a peer's control link gets a
    /// Move now and then), and an empty queue costs 800 bytes (docs/performance.md#the-coordinator-at-scale).
    private System.Collections.Concurrent.ConcurrentQueue<byte[]>? _ahead;

    /// <summary>An empty frame: wakes the writer for a frame queued ahead (it is not sent).</summary>
    private static readonly byte[] Wake = [];

    /// <summary>
    /// Queues a control frame ahead of the chunks (and other frames) already queued: it goes out
    /// with the writer's next send, after at most the batch under way. Frames sent ahead keep
    /// their order among themselves. For frames whose meaning does not depend on what is queued
    /// before them (a repair's Move must not wait behind the seconds of stream it is meant to
    /// repair); never for a frame that must follow others (a hash list before its chunks).
    /// </summary>
    public void SendAhead(byte[] frame)
    {
        if (IsClosing) return;
        var ahead = Volatile.Read(ref _ahead) ?? LazyInitializer.EnsureInitialized(ref _ahead);
        // With its wake-up, under the queue's lock: once a goodbye completed the queue, nothing goes
        // ahead of it any more, and a frame queued before it goes out no later than its wake-up.
        if (_queue.TryWriteAhead(ahead, frame, new Outgoing(null, Wake, _time.GetTimestamp()))) Signal();
    }

    /// <summary>
    /// A frame sent ahead whose bytes the writer completes as it goes out (<see cref="SendAhead(byte[], Action{byte[], long, long})"/>):
    /// at most one at a time, so a link pays one reference for it, not a queue of larger items.
    /// </summary>
    private Stamped? _stamped;

    /// <summary>A frame, when it was queued, and what completes it as it goes out.</summary>
    private sealed record Stamped(byte[] Frame, long At, Action<byte[], long, long> BeforeSend);

    /// <summary>
    /// <see cref="SendAhead(byte[])"/> for a frame that <paramref name="beforeSend"/> completes
    /// as the writer hands it to the transport (as <see cref="Send(byte[], Action{byte[], long, long})"/>):
    /// a pong, whose wait must not count the chunks it went ahead of. One such frame waits at a
    /// time; while one waits, the next is queued as <see cref="Send(byte[], Action{byte[], long, long})"/> queues it.
    /// </summary>
    public void SendAhead(byte[] frame, Action<byte[], long, long> beforeSend)
    {
        if (IsClosing) return;
        var stamped = new Stamped(frame, _time.GetTimestamp(), beforeSend);
        if (Interlocked.CompareExchange(ref _stamped, stamped, null) != null)
        {
            Send(frame, beforeSend);
            return;
        }
        var ahead = Volatile.Read(ref _ahead) ?? LazyInitializer.EnsureInitialized(ref _ahead);
        if (_queue.TryWriteAhead(ahead, frame, new Outgoing(null, Wake, stamped.At))) Signal();
        else Interlocked.CompareExchange(ref _stamped, null, stamped);
    }

    /// <summary>
    /// Queues a control frame; <paramref name="beforeSend"/> runs as the writer hands it to the
    /// transport, with the frame, when it was queued and now (timestamps of the time provider): it
    /// may still change the frame's bytes (a ping's send time, a pong's wait).
    /// </summary>
    public void Send(byte[] frame, Action<byte[], long, long> beforeSend)
    {
        if (IsClosing) return;
        _queue.TryWrite(new Outgoing(null, frame, _time.GetTimestamp(), beforeSend));
        Signal();
    }

    /// <summary>
    /// Writes a frame at once, before the loops are started (hello, welcome, landmarks). Encoded
    /// into an array of its size and handed to the output pipe whole: written into the pipe it took
    /// a 128 KiB buffer, and a coordinator does this up to three times per join (the landmarks, the
    /// candidates, the dial-back's hello), so that a backlog of joins left megabytes of those
    /// buffers in the large object heap (docs/performance.md#the-coordinator-at-scale). A TCP
    /// pipe with nothing buffered writes the array straight to its socket's stream (an
    /// <see cref="IOException"/> when the other side reset it, which every caller takes as gone); the
    /// virtual network's pipe carries it as it carried the frame before, without the downlink's
    /// queue, which <see cref="IConnection.SendAsync"/> would make it wait behind (a slow viewer's
    /// welcome from a new parent waited seconds behind the coordinator's backlog).
    /// </summary>
    public async Task WriteNowAsync(Action<IBufferWriter<byte>> write, CancellationToken cancellationToken)
    {
        byte[] frame = FrameWriting.ToArray(write);
        await _connection.Pipe.Output.WriteAsync(frame, cancellationToken).ConfigureAwait(false);
        _lastSent = _time.GetTimestamp();
    }

    /// <summary>
    /// Why <see cref="CloseAsync"/> is closing this connection, once it is: the reason the
    /// connection ends with, however the other side answers the goodbye (it closes its side, or
    /// resets it, or a send fails meanwhile), unless the other side broke the protocol or sent bad
    /// data first. A peer cut off as too slow that read the goodbye and then closed had the link
    /// end as "connection closed by the other side", and the coordinator kept its place for a
    /// rejoin as for a link the peer lost.
    /// </summary>
    private CloseReason? _closingFor;

    /// <summary>
    /// Closes in order: a goodbye after everything queued, the send side closed, then a short wait
    /// for the other side to close too so that nothing in flight is reset. A goodbye other than
    /// Normal is logged as a warning unless <paramref name="routine"/>: this side only does what
    /// another node decided, and that node logged why. A TooSlow goodbye goes out ahead of the
    /// chunks still queued, which are dropped, as with <paramref name="dropChunks"/>; one with
    /// <paramref name="dropQueued"/> ahead of every frame still queued.
    /// </summary>
    public async Task CloseAsync(GoodbyeCode code, string reason, bool routine = false, bool dropQueued = false, bool dropChunks = false)
    {
        if (Interlocked.Exchange(ref _closing, 1) != 0)
        {
            await Closed.ConfigureAwait(false);
            return;
        }
        if (code != GoodbyeCode.Normal && !routine) ConnectionLog.Closing(_log, Name, reason);
        else ConnectionLog.ClosingNormally(_log, Name, reason);
        var closing = new CloseReason(code switch { GoodbyeCode.TooSlow => CloseCode.TooSlow, GoodbyeCode.Timeout => CloseCode.TimedOut, _ => CloseCode.Closed }, reason);
        Volatile.Write(ref _closingFor, closing);
        var goodbye = new Goodbye(code, reason);
        // A slow receiver would make us wait for its whole backlog: the writer skips the backlog's
        // chunks (from before the goodbye is queued), so the goodbye that says why goes out next.
        if (code == GoodbyeCode.TooSlow || dropChunks) Volatile.Write(ref _dropChunks, true);
        var frame = FrameWriting.ToArray(goodbye.Write);
        // A close with dropQueued (a child the coordinator took out of the overlay, a peer told the
        // coordinator stops) skips every frame queued before the goodbye, not only the chunks: an
        // End after dropped chunks would read as the stream's end with bytes lost.
        if (dropQueued)
        {
            Volatile.Write(ref _onlyFrame, frame);
            Volatile.Write(ref _dropChunks, true);
        }
        // Queued last and the queue completed in one step: no frame sent meanwhile follows it.
        _queue.TryWriteLast(new Outgoing(null, frame, _time.GetTimestamp()));
        Signal();
        if (code == GoodbyeCode.Timeout)
        {
            // A silent side (frozen, or its host gone) will not read a goodbye either: waiting for
            // a drain would only delay the repair by the close timeout.
            Finish(closing);
            return;
        }
        // A TooSlow goodbye crosses a slow link behind the send under way and what the transport
        // holds: it gets three close timeouts, not one, before the link is reset (and lost with it).
        var wait = code == GoodbyeCode.TooSlow ? _closeTimeout * 3 : _closeTimeout;
        var drained = await Task.WhenAny(_writer, Task.Delay(wait, _time)).ConfigureAwait(false);
        if (drained == _writer)
        {
            await Task.WhenAny(_reader, Task.Delay(wait, _time)).ConfigureAwait(false);
        }
        Finish(closing);
    }

    /// <summary>
    /// Closes the send side (after whatever was written) and waits, reading and discarding, until
    /// the other side closes too or the close timeout passes; then ends the connection. A reset
    /// right after a last frame could otherwise destroy that frame before it is read.
    /// </summary>
    public async Task ShutdownAsync(CloseReason reason)
    {
        Interlocked.Exchange(ref _closing, 1);
        _queue.TryComplete();
        Signal();
        try
        {
            await _connection.CloseOutputAsync().ConfigureAwait(false);
            using var timeout = new CancellationTokenSource(_closeTimeout);
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
            // Timed out or already gone: the connection ends either way.
        }
        Finish(reason);
    }

    /// <summary>Ends the connection at once (the remote side failed or broke the protocol, or the owner gave up on it).</summary>
    public void Abort(CloseReason reason)
    {
        Interlocked.Exchange(ref _closing, 1);
        _queue.TryComplete();
        Signal();
        Finish(reason);
    }

    private void Finish(CloseReason reason)
    {
        if (!_closed.TrySetResult(reason)) return;
        _stop.Cancel();
        // A parked writer wakes, sees the stop and ends.
        _wake.Set();
        _connection.Abort();
        // Whatever is still queued will never be sent.
        while (_queue.TryRead(out var item)) item.Chunk?.Release();
    }

    /// <summary>At most this many chunks go into one gathered send.</summary>
    internal const int MaxChunksPerSend = 8;

    /// <summary>A send stops taking items from the queue once it holds this many bytes.</summary>
    private const int MaxBytesPerSend = 256 * 1024;

    /// <summary>
    /// A send that took longer than this marks a slow receiver: the next sends take one item
    /// each, until one is quick again. On a slow link a 256 KiB batch takes seconds (2 s at
    /// 1 Mbit/s), and nothing can pass it: a frame sent ahead, or a TooSlow goodbye, waited behind
    /// it, and the bytes sent (what the slow-child policy measures) moved in 256 KiB steps, so that
    /// a 1.5 s window could see none of them and report a download of 0.0 Mbit/s.
    /// </summary>
    private static readonly TimeSpan SlowSend = TimeSpan.FromMilliseconds(100);

    // One gathered send per batch: each chunk's frame prefix (written here) and its payload
    // straight from the pooled chunk, and control frames as they were encoded. Nothing is copied
    // into a send buffer. Used only by the writer's owner (see _owner).
    // The batch grows as sends need (a control link's holds a frame or two), and the chunk
    // prefixes are made at the first chunk: most of a coordinator's links are control links that
    // never carry one, and the full sizes cost ~600 bytes per link (docs/performance.md#the-coordinator-at-scale).
    private readonly List<ArraySegment<byte>> _batch = [];
    private byte[]? _prefixes;
    private readonly List<Chunk> _sending = [];

    // Until a send shows otherwise: a first batch of 256 KiB to a slow receiver would be its
    // first seconds of bytes sent, counted all at once.
    private bool _slowReceiver = true;

    /// <summary>
    /// 1 while a thread owns the writer (takes items from the queue and sends them): the write
    /// loop, or a caller of <see cref="TrySend"/> sending inline; 0 while the loop is parked on
    /// <see cref="_wake"/> with nothing to send. Whoever queues an item and turns it from 0 to 1
    /// wakes the loop (or sends inline); an owner gives it back only with the queue seen empty.
    /// </summary>
    private int _owner;

    /// <summary>Set (once per hand-over, by the new owner) to run the write loop; also by <see cref="Finish"/> to end it.</summary>
    private readonly WakeSignal _wake = new();

    /// <summary>A send started inline that failed at once: the loop, handed the writer, fails with it.</summary>
    private Exception? _inlineFailure;

    private bool _started;

    /// <summary>Wakes the write loop for what was just queued (or completed), unless the writer is owned already.</summary>
    private void Signal()
    {
        if (Interlocked.CompareExchange(ref _owner, 1, 0) == 0) _wake.Set();
    }

    /// <summary>
    /// Gives the writer up with the queue seen empty. True when it stays given up; false when an
    /// item (or the end of the queue) came meanwhile and the caller owns the writer again.
    /// </summary>
    private bool Park()
    {
        Interlocked.Exchange(ref _owner, 0);
        // A frame sent ahead whose wake-up item a batch already took waits in _ahead alone.
        if (Volatile.Read(ref _ahead) is not { IsEmpty: false } && !_queue.TryPeek(out _) && !_queue.IsDone) return true;
        return Interlocked.CompareExchange(ref _owner, 1, 0) != 0;
    }

    /// <summary>
    /// Sends what was just queued on the caller's thread when the writer is idle: one batch, and
    /// the writer is handed to the loop if more is queued or the send has to wait. A live source
    /// queues a chunk at a time with the writer idle; sending it here saves waking a thread of
    /// the pool for it (docs/performance.md#rtmp-ingest-issue-11). The send never blocks: a full
    /// socket makes it pending, and the rest is the loop's.
    /// </summary>
    private void SendInline()
    {
        if (Interlocked.CompareExchange(ref _owner, 1, 0) != 0) return;
        if (!TakeBatch())
        {
            if (!Park()) _wake.Set();
            return;
        }
        long started = _time.GetTimestamp();
        ValueTask send;
        try
        {
            send = _connection.SendAsync(_batch, _stop.Token);
        }
        catch (Exception e)
        {
            BatchSent();
            _inlineFailure = e;
            _wake.Set();
            return;
        }
        if (!send.IsCompleted)
        {
            _ = FinishInlineSendAsync(send, started);
            return;
        }
        try
        {
            send.GetAwaiter().GetResult();
            _slowReceiver = _time.GetElapsedTime(started) > SlowSend;
        }
        catch (Exception e)
        {
            _inlineFailure = e;
        }
        BatchSent();
        if (_inlineFailure is not null || !Park()) _wake.Set();
    }

    /// <summary>An inline send that had to wait: completed here, then the writer goes to the loop.</summary>
    private async Task FinishInlineSendAsync(ValueTask send, long started)
    {
        try
        {
            await send.ConfigureAwait(false);
            _slowReceiver = _time.GetElapsedTime(started) > SlowSend;
        }
        catch (Exception e)
        {
            _inlineFailure = e;
        }
        BatchSent();
        _wake.Set();
    }

    /// <summary>Adds the frames sent ahead to the batch; returns their bytes.</summary>
    private int TakeAhead()
    {
        int bytes = 0;
        while (Volatile.Read(ref _ahead) is { } ahead && ahead.TryDequeue(out var urgent))
        {
            MarkInFlight(_time.GetTimestamp());
            if (Volatile.Read(ref _stamped) is { } stamped && ReferenceEquals(stamped.Frame, urgent))
            {
                stamped.BeforeSend(urgent, stamped.At, _time.GetTimestamp());
                Volatile.Write(ref _stamped, null);
            }
            _batch.Add(urgent);
            bytes += urgent.Length;
        }
        return bytes;
    }

    /// <summary>Takes the next batch from the queue (frames sent ahead first); false when nothing is to be sent.</summary>
    private bool TakeBatch()
    {
        var reader = _queue;
        int bytes = 0;
        int maxBytes = _slowReceiver ? 1 : MaxBytesPerSend;
        // Frames sent ahead go first (see SendAhead).
        bytes += TakeAhead();
        while (_sending.Count < MaxChunksPerSend && bytes < maxBytes && reader.TryRead(out var item))
        {
            if (item.Chunk is null && item.Frame is { Length: 0 })
            {
                // A wake-up for a frame sent ahead: that frame is in _ahead by now (queued before its
                // wake-up), and goes here at the latest, before anything queued after it (a goodbye).
                bytes += TakeAhead();
                continue;
            }
            if (item.Chunk is { } chunk)
            {
                if (Volatile.Read(ref _dropChunks))
                {
                    Interlocked.Add(ref _queuedBytes, -chunk.Length);
                    chunk.Release();
                    continue;
                }
                MarkInFlight(item.At);
                if (item.Frame is { } before)
                {
                    _batch.Add(before);
                    bytes += before.Length;
                }
                _prefixes ??= new byte[MaxChunksPerSend * ChunkHeader.FramePrefixLength];
                var prefix = new ArraySegment<byte>(_prefixes, _sending.Count * ChunkHeader.FramePrefixLength, ChunkHeader.FramePrefixLength);
                new ChunkHeader((byte)chunk.Shard, (ulong)chunk.Seq, (ulong)chunk.Offset).WritePrefix(prefix, chunk.Length);
                _batch.Add(prefix);
                _batch.Add(chunk.Segment);
                _sending.Add(chunk);
                bytes += prefix.Count + chunk.Length;
            }
            else
            {
                if (Volatile.Read(ref _onlyFrame) is { } only && !ReferenceEquals(item.Frame, only)) continue;
                MarkInFlight(item.At);
                item.BeforeSend?.Invoke(item.Frame!, item.At, _time.GetTimestamp());
                _batch.Add(item.Frame!);
                bytes += item.Frame!.Length;
            }
        }
        if (_batch.Count > 0) return true;
        Interlocked.Exchange(ref _inFlightSince, 0);
        return false;
    }

    /// <summary>Notes when the batch's first item was queued (what <see cref="QueueAge"/> measures while the send is under way); items skipped do not count.</summary>
    private void MarkInFlight(long queuedAt)
    {
        if (_batch.Count == 0) Interlocked.Exchange(ref _inFlightSince, queuedAt);
    }

    /// <summary>After a batch's send (done or failed): its chunks are let go and counted as sent.</summary>
    private void BatchSent()
    {
        foreach (var chunk in _sending)
        {
            Interlocked.Add(ref _queuedBytes, -chunk.Length);
            Interlocked.Add(ref _chunkBytesSent, chunk.Length);
            Interlocked.Add(ref _chunkFootprintSent, chunk.Footprint);
            chunk.Release();
        }
        _sending.Clear();
        _batch.Clear();
        Interlocked.Exchange(ref _inFlightSince, 0);
        _lastSent = _time.GetTimestamp();
    }

    private async Task WriteLoopAsync()
    {
        // On the thread pool, as Task.Run would (without its two task objects held for the life of the link).
        await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
        CloseReason? failure = null;
        try
        {
            while (true)
            {
                // Parked until an item is queued (or the queue ends): the writer is this loop's then.
                await _wake.WaitAsync().ConfigureAwait(false);
                // Finish() stopped us (it wakes a parked writer): whoever owns the writer now, this loop sends nothing more.
                if (_stop.IsCancellationRequested) return;
                if (_inlineFailure is { } inline) throw inline;
                if (await DrainAsync().ConfigureAwait(false))
                {
                    await _connection.CloseOutputAsync().ConfigureAwait(false);
                    return;
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Finish() stopped us.
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            failure = new CloseReason(CloseCode.ConnectionLost, $"send failed: {e.Message}", e);
        }
        // A send cut short because the connection was ended on purpose is not a failure of its own.
        if (failure is not null && !Closed.IsCompleted)
        {
            ConnectionLog.SendFailed(_log, Name, failure.Text);
            // A violation's goodbye that the other side's reset cut short: the violation ended the
            // connection, not the reset (a stranger that reset its link while the goodbye waited
            // behind its backlog was kept by the coordinator for the rejoin grace).
            Abort(Volatile.Read(ref _violation) ?? Volatile.Read(ref _closingFor) ?? failure);
        }
    }

    /// <summary>
    /// Sends batches until the queue is seen empty (the writer is then given up: false), or has
    /// ended with everything in it sent (true).
    /// </summary>
    private async ValueTask<bool> DrainAsync()
    {
        while (true)
        {
            if (!TakeBatch())
            {
                if (_queue.IsDone) return true;
                if (Park()) return false;
                continue;
            }
            long started = _time.GetTimestamp();
            try
            {
                await _connection.SendAsync(_batch, _stop.Token).ConfigureAwait(false);
                _slowReceiver = _time.GetElapsedTime(started) > SlowSend;
            }
            finally
            {
                BatchSent();
            }
        }
    }

    /// <summary>
    /// The other side's protocol violation this connection is closing for (its goodbye queued):
    /// the close's reason even when sending that goodbye fails.
    /// </summary>
    private CloseReason? _violation;

    private async Task ReadLoopAsync(Action<FrameType, ReadOnlySequence<byte>> onFrame, Action<ReadOnlySequence<byte>> onHeartbeat, Action onReceived, Action? onViolation)
    {
        await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
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
                            if (goodbye.Code != GoodbyeCode.Normal) ConnectionLog.GoodbyeReceived(_log, Name, reason.Text);
                            onFrame(type, body);
                            continue;
                        }
                        if (type != FrameType.Heartbeat) onFrame(type, body);
                        else onHeartbeat(body);
                    }
                }
                finally
                {
                    onReceived();
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
            ConnectionLog.Violation(_log, Name, reason.Text);
            onViolation?.Invoke();
            Volatile.Write(ref _violation, reason);
            // Tell the other side why, after anything already queued, then close gracefully.
            Interlocked.Exchange(ref _closing, 1);
            _queue.TryWriteLast(new Outgoing(null, FrameWriting.ToArray(new Goodbye(GoodbyeCode.ProtocolError, e.Message).Write), _time.GetTimestamp()));
            Signal();
            await Task.WhenAny(_writer, Task.Delay(_closeTimeout, _time)).ConfigureAwait(false);
            await ShutdownAsync(reason).ConfigureAwait(false);
            return;
        }
        catch (InvalidDataException e)
        {
            reason = new CloseReason(CloseCode.BadData, $"bad data: {e.Message}", e);
            ConnectionLog.Violation(_log, Name, reason.Text);
            onViolation?.Invoke();
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or ObjectDisposedException or InvalidOperationException)
        {
            // The socket's own words ("Connection reset by peer"), not the runtime's wrapper around
            // them ("Unable to read data from the transport connection: …."): a user reads this in
            // the logs and in a peer's last error line.
            string why = e is IOException { InnerException: System.Net.Sockets.SocketException socket } ? socket.Message : e.Message;
            reason = new CloseReason(CloseCode.ConnectionLost, $"connection lost: {why}", e);
        }
        catch (Exception e)
        {
            // A bug in a handler: this connection ends with the reason, and the error is logged,
            // instead of a dead read loop on a connection that looks open.
            reason = new CloseReason(CloseCode.InternalError, $"internal error: {e.GetType().Name}: {e.Message}", e);
            ConnectionLog.ReadLoopFailed(_log, $"{Name}: read loop", e);
        }
        if (IsClosing)
        {
            // We are closing on purpose; the other side closed in answer. Let CloseAsync finish.
            if (_writer.IsCompleted) Finish(reason.IsViolation ? reason : Volatile.Read(ref _closingFor) ?? reason);
            return;
        }
        ConnectionLog.ReadLoopEnded(_log, Name, reason.Text);
        Abort(reason);
    }

    public async ValueTask DisposeAsync()
    {
        Abort(new CloseReason(CloseCode.Aborted, "disposed"));
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

    /// <summary>
    /// The send queue: a ring buffer under a lock, for any number of readers (the writer, and
    /// Finish() draining what will never be sent: one item goes to one of them). It replaced an
    /// unbounded channel, whose first segment and parked-reader objects cost about 1.9 KB per
    /// connection before anything was queued; this one costs about 250 bytes (a coordinator holds
    /// one per connected peer: docs/performance.md#the-coordinator-at-scale). Once completed it
    /// takes nothing more; <see cref="IsDone"/> is true when it is completed and empty.
    /// </summary>
    private sealed class OutgoingQueue
    {
        /// <summary>A queue that held more than this many items gives its array back once it is empty again.</summary>
        private const int TrimAbove = 256;

        private readonly Queue<Outgoing> _items = new(4);
        private bool _completed;
        private int _most;

        public bool TryWrite(Outgoing item)
        {
            lock (_items)
            {
                if (_completed) return false;
                _items.Enqueue(item);
                if (_items.Count > _most) _most = _items.Count;
                return true;
            }
        }

        public void TryComplete()
        {
            lock (_items) _completed = true;
        }

        /// <summary>Queues <paramref name="item"/> as the last item and completes the queue, in one step.</summary>
        public bool TryWriteLast(Outgoing item)
        {
            lock (_items)
            {
                if (_completed) return false;
                _items.Enqueue(item);
                _completed = true;
                return true;
            }
        }

        /// <summary>Puts <paramref name="frame"/> into <paramref name="ahead"/> and queues its <paramref name="wake"/>, in one step, unless the queue is complete.</summary>
        public bool TryWriteAhead(System.Collections.Concurrent.ConcurrentQueue<byte[]> ahead, byte[] frame, Outgoing wake)
        {
            lock (_items)
            {
                if (_completed) return false;
                ahead.Enqueue(frame);
                _items.Enqueue(wake);
                if (_items.Count > _most) _most = _items.Count;
                return true;
            }
        }

        public bool TryRead(out Outgoing item)
        {
            lock (_items)
            {
                if (!_items.TryDequeue(out item)) return false;
                if (_items.Count == 0 && _most > TrimAbove)
                {
                    // A backlog's array (a slow child's, of small chunks) is not kept for good.
                    _items.TrimExcess();
                    _most = 0;
                }
                return true;
            }
        }

        public bool TryPeek(out Outgoing item)
        {
            lock (_items) return _items.TryPeek(out item);
        }

        public bool IsDone
        {
            get
            {
                lock (_items) return _completed && _items.Count == 0;
            }
        }
    }

    /// <summary>A chunk (with the frame that goes right before it, if any), or a control frame.</summary>
    private readonly record struct Outgoing(Chunk? Chunk, byte[]? Frame, long At, Action<byte[], long, long>? BeforeSend = null);
}

using System.Buffers;
using Microsoft.Extensions.Logging;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>Handles one complete frame read from a link. Runs on the link's read loop.</summary>
internal delegate void FrameHandler(Link link, FrameType type, ReadOnlySequence<byte> body);

/// <summary>
/// One connection between two nodes, as a node sees it: a <see cref="FramedConnection"/> (framing,
/// batching, close) with the node's policy on top. What it is to its owner (<see cref="Role"/>);
/// a receiver that lets more than <see cref="LinkOptions.MaxQueuedBytes"/> pile up is cut off with
/// a reason instead of holding back its siblings; heartbeats go out when the link is quiet; a link
/// whose silence its <see cref="FailureDetector"/> judges too long for a living other side is ended.
/// </summary>
internal sealed partial class Link : IAsyncDisposable
{
    private readonly FramedConnection _connection;
    private readonly LinkOptions _options;
    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly FailureDetector _detector;
    private bool _started;
    private TimeSpan _heartbeatInterval;
    private TimeSpan _offeredHeartbeat;
    private TimeSpan _longestHeartbeat;
    private byte[] _heartbeatFrame = PlainHeartbeat;

    /// <summary>A heartbeat that says nothing of the sender's interval; one array for every link (sends only read it).</summary>
    private static readonly byte[] PlainHeartbeat = FrameWriting.ToArray(new Heartbeat(0).Write);

    public Link(IConnection connection, string name, LinkOptions options, ILogger log, TimeProvider time)
    {
        _connection = new FramedConnection(connection, name, options.CloseTimeout, log, time);
        _options = options;
        _log = log;
        _time = time;
        _detector = new FailureDetector(options.FailureDetector, time);
        _heartbeatInterval = options.HeartbeatInterval;
    }

    /// <summary>How often this link sends a heartbeat when it has nothing else to send.</summary>
    public TimeSpan HeartbeatInterval => _heartbeatInterval;

    /// <summary>
    /// Called (on the read loop) when <see cref="HeartbeatInterval"/> became shorter: the link's
    /// next tick may now be due earlier than its last tick said (a heartbeat, a silence that ends
    /// it), so its owner must tick it again soon (<see cref="Node"/> reschedules it).
    /// </summary>
    public Action<Link>? HeartbeatShortened { get; set; }

    /// <summary>
    /// The coordinator's side of a control link: asks the peer (in every heartbeat it sends, as
    /// <paramref name="frame"/>, a heartbeat whose value is <paramref name="interval"/>) to
    /// heartbeat every <paramref name="interval"/>, longer or shorter than now, and follows once
    /// the peer's heartbeats say it does (docs/protocol.md section 10). Until then both keep the
    /// interval they have. The frame may be shared by every link (sends only read it).
    /// </summary>
    public void OfferHeartbeats(TimeSpan interval, byte[] frame)
    {
        _offeredHeartbeat = interval;
        _heartbeatFrame = frame;
    }

    /// <inheritdoc cref="OfferHeartbeats(TimeSpan, byte[])"/>
    public void OfferHeartbeats(TimeSpan interval) => OfferHeartbeats(interval, ControlHeartbeats.FrameOf(interval));

    /// <summary>The interval this link's side of a control link asks for (<see cref="OfferHeartbeats(TimeSpan, byte[])"/>); zero when it asked for none.</summary>
    public TimeSpan OfferedHeartbeat => _offeredHeartbeat;

    /// <summary>
    /// A peer's side of its control link: when the coordinator's heartbeats ask for another
    /// interval, between this link's own and <paramref name="longest"/>, heartbeat that often and
    /// expect as much.
    /// </summary>
    public void FollowHeartbeatRequests(TimeSpan longest) => _longestHeartbeat = longest;

    /// <summary>
    /// A heartbeat arrived. On a peer's control link, one that asks for another interval within
    /// what this link follows is followed, and said at once. On the coordinator's, one that says
    /// the peer now keeps another interval, no longer than the one asked for (or kept now), is followed.
    /// </summary>
    private void OnHeartbeat(ReadOnlySequence<byte> body)
    {
        bool asking = _offeredHeartbeat > TimeSpan.Zero;
        if (!asking && _longestHeartbeat <= TimeSpan.Zero) return;
        var reader = new SequenceReader<byte>(body);
        if (!Heartbeat.TryRead(ref reader, out var heartbeat) || heartbeat.Value == 0) return;
        var interval = TimeSpan.FromMilliseconds(Math.Min(heartbeat.Value, int.MaxValue));
        var longest = asking ? (_offeredHeartbeat > _heartbeatInterval ? _offeredHeartbeat : _heartbeatInterval) : _longestHeartbeat;
        if (interval == _heartbeatInterval || interval < _options.HeartbeatInterval || interval > longest) return;
        bool shorter = interval < _heartbeatInterval;
        _heartbeatInterval = interval;
        // The coordinator's heartbeats go on carrying what it asks for; a peer's say what it keeps.
        if (!asking) _heartbeatFrame = FrameWriting.ToArray(new Heartbeat(heartbeat.Value).Write);
        // This heartbeat is an arrival: noted before the silences are judged by the new interval.
        // The read loop notes arrivals only after the frames of a read, and a node may tick the
        // link before then (at once after a shorter interval): the silence before this heartbeat,
        // up to the old interval, would then be judged by the shorter one's timeout.
        _detector.Heard();
        _detector.Rescale(interval);
        // Say so at once: the other side keeps expecting the old interval until it hears this one.
        Send(_heartbeatFrame);
        if (shorter) HeartbeatShortened?.Invoke(this);
        NodeLog.HeartbeatIntervalFollowed(_log, Name, interval.TotalSeconds);
    }

    /// <summary>For logs: who is on the other side.</summary>
    public string Name
    {
        get => _connection.Name;
        set => _connection.Name = value;
    }

    /// <summary>The remote address as the transport sees it.</summary>
    public string RemoteAddress => _connection.RemoteAddress;

    /// <summary>This side's address, the one the other side reached (empty where the transport does not say).</summary>
    public string LocalAddress => _connection.LocalAddress;

    /// <summary>The RTT of the connection's handshake as measured below the process, if the transport has it (<see cref="IConnection.HandshakeRtt"/>).</summary>
    public TimeSpan? HandshakeRtt => _connection.HandshakeRtt;

    /// <summary>True where the transport measures the connection's handshake, usable sample or not (<see cref="IConnection.MeasuresHandshake"/>).</summary>
    public bool MeasuresHandshake => _connection.MeasuresHandshake;

    /// <summary>Bytes waiting in the send queue.</summary>
    public long QueuedBytes => _connection.QueuedBytes;

    /// <summary>Chunk payload bytes queued on this link since it opened (a running total).</summary>
    public long ChunkBytesQueued => _connection.ChunkBytesQueued;

    /// <summary>Chunk payload bytes handed to the transport since the link opened (a running total).</summary>
    public long ChunkBytesSent => _connection.ChunkBytesSent;

    /// <summary>About the chunk bytes one full send hands to the transport (see <see cref="FramedConnection.ChunkBytesPerSend"/>).</summary>
    public long ChunkBytesPerSend => _connection.ChunkBytesPerSend;

    /// <summary>The memory of the chunks queued on this link and not yet handed to the transport (see <see cref="FramedConnection.ChunkFootprintBacklog"/>).</summary>
    public long ChunkFootprintBacklog => _connection.ChunkFootprintBacklog;

    /// <summary>
    /// How long the oldest frame not yet handed to the transport has waited since it was queued
    /// on this link (zero when nothing waits). A receiver slower than what is queued for it shows
    /// here within seconds, long before its queue reaches <see cref="LinkOptions.MaxQueuedBytes"/>.
    /// </summary>
    public TimeSpan QueueAge => _connection.QueueAge;

    /// <summary>
    /// Completes with the reason once the link is closed, for whatever cause. A link ended because
    /// of what the other side sent (a frame it may not send, a malformed one, data that failed
    /// verification) has a reason whose <see cref="CloseReason.IsViolation"/> is true.
    /// </summary>
    public Task<CloseReason> Closed => _connection.Closed;

    /// <summary>The code of the goodbye the other side sent, if it sent one.</summary>
    public GoodbyeCode? ReceivedGoodbye => _connection.ReceivedGoodbye;

    /// <summary>The reason in the goodbye the other side sent, if it sent one.</summary>
    public string? ReceivedGoodbyeReason => _connection.ReceivedGoodbyeReason;

    /// <summary>How long since anything arrived on this link (less the time this node itself did not run).</summary>
    public TimeSpan Silence => _detector.Silence;

    /// <summary>True when bytes from the other side wait unread in the transport (this side is slow to read).</summary>
    public bool HasUnreadInput => _connection.HasUnreadInput;

    /// <summary>True when the failure detector would take the other side for dead now (see <see cref="Tick"/>).</summary>
    public bool SeemsDead => Volatile.Read(ref _started) && !IsClosing && _detector.IsDead(LenientUntilHeard && !_heardSinceStart, out _) && !_connection.HasUnreadInput;

    /// <summary>
    /// For the stall rule (<see cref="Node.SeemsStalled"/>): started, open, and silent for at least
    /// <see cref="SilentAtOnceShare"/> of its floor (the heartbeat timeout, 3 s of 5 by default),
    /// nothing waiting unread. Links that went quiet in the same moment reach the floor up to a
    /// heartbeat interval and a tick apart (their last heartbeats were that far apart); at 3 s a
    /// link has missed two heartbeats. Not a placed joiner not heard from yet
    /// (<see cref="LenientUntilHeard"/>): it may be quiet until the ceiling, as for <see cref="SeemsDead"/>.
    /// </summary>
    public bool SilentAtOnce => Volatile.Read(ref _started) && !IsClosing && !(LenientUntilHeard && !_heardSinceStart)
        && _detector.Silence >= _detector.Floor * SilentAtOnceShare && !_connection.HasUnreadInput;

    /// <summary>The share of its floor a link must have been silent to count as silent at once with a link that seems dead.</summary>
    internal const double SilentAtOnceShare = 0.6;

    /// <summary>
    /// True when the failure detector's φ is over its threshold and nothing waits unread, whatever
    /// the silence's length: for a decision that other evidence backs (a child lost this peer).
    /// </summary>
    public bool Suspected => _detector.Phi() >= _options.FailureDetector.Threshold && !_connection.HasUnreadInput;

    /// <summary>True once closing has begun.</summary>
    public bool IsClosing => _connection.IsClosing;

    /// <summary>
    /// True when this link keeps up: neither closing nor closed, and the oldest frame queued on it
    /// (<see cref="QueueAge"/>) younger than <paramref name="queueAge"/>.
    /// </summary>
    public bool KeepsUp(TimeSpan queueAge) => !IsClosing && !Closed.IsCompleted && QueueAge < queueAge;

    /// <summary>True once <see cref="Start"/> was called (the hello/welcome exchange is over and the loops run).</summary>
    public bool IsStarted => Volatile.Read(ref _started);

    /// <summary>What this link is to its owner (a child, a parent, a control link); null until its hello/welcome exchange says.</summary>
    public LinkRole? Role { get; set; }

    /// <summary>
    /// Until the other side has sent anything on the started link, only the longest silence
    /// (<see cref="FailureDetectorOptions.MaxSilence"/>) ends it. For the coordinator's control
    /// link to a joiner: the joiner may read its welcome late on a loaded machine (seen 8 s after it
    /// was placed, at load 250), and one whose new link was closed after the 5 s floor lost its
    /// place before it had started.
    /// </summary>
    public bool LenientUntilHeard { get; set; }

    /// <summary>When an incoming link was accepted, and when its hello was read (timestamps of the node's clock; 0 for a link this node opened): for <see cref="JoinStages"/>.</summary>
    public long AcceptedAt { get; set; }

    /// <inheritdoc cref="AcceptedAt"/>
    public long HelloAt { get; set; }

    private volatile bool _heardSinceStart;

    /// <summary>
    /// True once the read loop read a frame of any type, a heartbeat included (a read that only
    /// found the connection closed is none). A joiner sends nothing on its control link before it
    /// has read its Welcome: until then, the coordinator knows it did not (Admission's Welcome sent again).
    /// </summary>
    public bool ReadFrame => Volatile.Read(ref _frameRead);

    private bool _frameRead;

    /// <summary>
    /// Starts the read loop (frames go to <paramref name="handler"/>) and the writer.
    /// <paramref name="onViolation"/> runs on the read loop, before the link starts closing, when
    /// the other side sent what cuts it off: a frame header or a frame that breaks the protocol
    /// (whether the framing, the RTT machinery or <paramref name="handler"/> found it), or data
    /// that failed verification.
    /// </summary>
    public void Start(FrameHandler handler, Action<Link>? onViolation = null)
    {
        // The other side's silence counts from here, not from its hello: a joiner cannot speak
        // before its welcome, and the time the coordinator took to place it (a probe, its lock, a
        // starved machine) is not the joiner's silence.
        _detector.Restart();
        Volatile.Write(ref _started, true);
        _connection.Start((type, body) =>
        {
            if (!_frameRead) _frameRead = true;
            if (!OnRttFrame(type, body)) handler(this, type, body);
        }, body =>
        {
            if (!_frameRead) _frameRead = true;
            OnHeartbeatCoordinate(body);
            OnHeartbeat(body);
        }, OnReceived, onViolation is null ? null : () => onViolation(this));
    }

    private void OnReceived()
    {
        _heardSinceStart = true;
        _detector.Heard();
    }

    /// <summary>
    /// Reads exactly one frame before the loops start (the hello or the welcome). A frame whose
    /// length field is over <paramref name="maxLength"/> is refused before it is buffered, so a
    /// stranger's first frame costs at most that much memory.
    /// </summary>
    public async Task<(FrameType Type, byte[] Body)> ReadOneAsync(CancellationToken cancellationToken, int maxLength = Protocol.MaxFrameLength)
    {
        var frame = await _connection.ReadOneAsync(maxLength, cancellationToken).ConfigureAwait(false);
        _detector.Heard();
        return frame;
    }

    /// <summary>
    /// Queues a chunk (retaining it), with <paramref name="frameBefore"/> (an encoded frame) right
    /// before it in the same send; <paramref name="sendInline"/>: sent on the caller's thread when
    /// the link's writer is idle (<see cref="FramedConnection.TrySend"/>). False when the link is
    /// closing or was just cut off for being too slow (and then the frame is not queued either).
    /// </summary>
    public bool TrySend(Chunk chunk, byte[]? frameBefore = null, bool sendInline = false)
    {
        if (_connection.TrySend(chunk, _options.MaxQueuedBytes, out long waiting, frameBefore, sendInline)) return true;
        if (waiting >= 0)
            CloseAsync(GoodbyeCode.TooSlow, $"too slow: {waiting} bytes waiting to be sent, the limit is {_options.MaxQueuedBytes}").Observe(_log, $"{Name}: closing");
        return false;
    }

    /// <summary>Queues a control frame.</summary>
    public void Send(Action<IBufferWriter<byte>> write)
    {
        if (IsClosing) return;
        _connection.Send(FrameWriting.ToArray(write));
    }

    /// <summary>Queues a control frame that was encoded already.</summary>
    public void Send(byte[] frame) => _connection.Send(frame);

    /// <summary>
    /// Queues a control frame that was encoded already; <paramref name="beforeSend"/> runs as the
    /// writer takes it (<see cref="FramedConnection.Send(byte[], Action{byte[], long, long})"/>).
    /// </summary>
    public void Send(byte[] frame, Action<byte[], long, long> beforeSend) => _connection.Send(frame, beforeSend);

    /// <summary>Queues a control frame that was encoded already ahead of the chunks already queued (<see cref="FramedConnection.SendAhead(byte[])"/>).</summary>
    public void SendAhead(byte[] frame) => _connection.SendAhead(frame);

    /// <summary>Queues a control frame ahead of the chunks already queued (<see cref="FramedConnection.SendAhead(byte[])"/>).</summary>
    public void SendAhead(Action<IBufferWriter<byte>> write)
    {
        if (IsClosing) return;
        _connection.SendAhead(FrameWriting.ToArray(write));
    }

    /// <summary>Writes a frame at once, before the loops are started (hello, welcome).</summary>
    public Task WriteNowAsync(Action<IBufferWriter<byte>> write, CancellationToken cancellationToken) => _connection.WriteNowAsync(write, cancellationToken);

    /// <summary>
    /// Closes in order: a goodbye after everything queued, the send side closed, then a short wait
    /// for the other side to close too so that nothing in flight is reset; logged at debug level
    /// when <paramref name="routine"/> (see <see cref="FramedConnection.CloseAsync"/>).
    /// </summary>
    public Task CloseAsync(GoodbyeCode code, string reason, bool routine = false, bool dropQueued = false, bool dropChunks = false) => _connection.CloseAsync(code, reason, routine, dropQueued, dropChunks);

    /// <summary>
    /// Closes the send side (after whatever was written) and waits, reading and discarding, until
    /// the other side closes too or the close timeout passes; then ends the link. A reset right
    /// after a last frame could otherwise destroy that frame before it is read.
    /// </summary>
    public Task ShutdownAsync(string reason) => _connection.ShutdownAsync(new CloseReason(CloseCode.Closed, reason));

    /// <summary>Ends the link at once: its owner gave up on it.</summary>
    public void Abort(string reason) => _connection.Abort(new CloseReason(CloseCode.Aborted, reason));

    /// <summary>Ends the link at once (the remote side failed or broke the protocol, or its owner gave up on it).</summary>
    public void Abort(CloseReason reason) => _connection.Abort(reason);

    /// <summary>The owner did not run for <paramref name="paused"/> (its timer fired that late): not the other side's silence.</summary>
    public void Excuse(TimeSpan paused) => _detector.Excuse(paused);

    /// <summary>
    /// Called by the owner's timer: sends a heartbeat when quiet, ends the link when its failure
    /// detector takes the other side for dead. <paramref name="lenient"/>: the owner seems stalled (most of its links are silent at once),
    /// so only the longest silence (<see cref="FailureDetectorOptions.MaxSilence"/>) ends the link.
    /// Returns the earliest time (a timestamp of the node's clock) at which a tick could do anything
    /// here again: a heartbeat due, a ping due, or a silence long enough to end the link; the
    /// owner need not tick the link before then (<see cref="long.MaxValue"/>: never, it is closing;
    /// now: at the next tick). Each of those times only moves later while the link lives, so a tick
    /// at the time returned is never late for any of them.
    /// </summary>
    public long Tick(bool lenient = false)
    {
        if (IsClosing) return long.MaxValue;
        long now = _time.GetTimestamp();
        // Before the loops start, the hello/welcome exchange has its own timeout, and a heartbeat
        // must not slip in ahead of the welcome.
        if (!Volatile.Read(ref _started)) return now;
        lenient |= LenientUntilHeard && !_heardSinceStart;
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
            return long.MaxValue;
        }
        long nextPing = TickPing(now);
        long interval = _time.TimestampTicks(_heartbeatInterval);
        long lastSent = _connection.LastSent;
        if (now - lastSent >= interval)
        {
            Send(HeartbeatToSend());
            // Queued now; the writer stamps its send a moment later. The next one is due an interval from now.
            lastSent = now;
        }
        return Math.Min(Math.Min(lastSent + interval, nextPing), _detector.EarliestDeath);
    }

    public ValueTask DisposeAsync() => _connection.DisposeAsync();
}

/// <summary>Limits and timers of a link.</summary>
internal sealed record LinkOptions
{
    public long MaxQueuedBytes { get; init; } = 64L * 1024 * 1024;

    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    public FailureDetectorOptions FailureDetector { get; init; } = new();

    public TimeSpan CloseTimeout { get; init; } = TimeSpan.FromSeconds(5);
}

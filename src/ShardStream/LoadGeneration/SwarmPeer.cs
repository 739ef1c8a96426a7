using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using ShardStream.Wire;

namespace ShardStream.LoadGeneration;

/// <summary>
/// One lightweight peer of a <see cref="Swarm"/>: it speaks the coordinator's side of the protocol
/// for real (a Join with a token and a nonce, the landmark rounds of a latency-aware coordinator
/// (measuring only the coordinator), the reachability probe answered at its own listener, Attached
/// after the Welcome and after every Move, heartbeats, pongs, Leave and Goodbye), and
/// nothing of the data plane: it attaches to no parent and serves no child (see docs/performance.md,
/// "The coordinator at scale", for what that leaves out). It holds one socket and no buffer while
/// idle: its reads are zero-byte reads until something arrives.
/// </summary>
internal sealed class SwarmPeer
{
    private readonly Socket _socket;
    private readonly Lock _sendLock = new();
    private PipeReader? _input;
    private int _gone;

    private byte[] _heartbeatFrame = PlainHeartbeat;
    private readonly TimeSpan _baseInterval;

    private SwarmPeer(Socket socket, ulong token, TimeSpan heartbeatInterval)
    {
        _socket = socket;
        Token = token;
        HeartbeatInterval = _baseInterval = heartbeatInterval;
    }

    /// <summary>How often this peer heartbeats: the swarm's interval, or the one its coordinator asked for.</summary>
    public TimeSpan HeartbeatInterval { get; private set; }

    /// <summary>The join token: what its answer to a reachability probe proves it holds (never shows).</summary>
    public ulong Token { get; }

    /// <summary>The id the coordinator gave (0 before the Welcome).</summary>
    public ulong Id { get; private set; }

    /// <summary>When the peer last sent anything (a <see cref="Stopwatch"/> timestamp).</summary>
    public long LastSent { get; private set; }

    /// <summary>Moves received (each answered with Attached, as a real peer does once it has applied one).</summary>
    public int Moves { get; private set; }

    /// <summary>True once the control link has ended (left, evicted, or lost).</summary>
    public bool Gone => Volatile.Read(ref _gone) != 0;

    /// <summary>Why the control link ended, when it ended without our asking.</summary>
    public string? EndReason { get; private set; }

    /// <summary>Completes when the control link has ended.</summary>
    public Task Ended { get; private set; } = Task.CompletedTask;

    /// <summary>
    /// Joins: listens for the probe on <paramref name="local"/> (a port of its own, closed once the
    /// Welcome has come: nothing else connects to a swarm peer), connects from the same address,
    /// sends the Join, answers the probe if one comes, and reads the Welcome. Returns the peer and
    /// how long the join took (connect to Welcome), or throws <see cref="SwarmJoinException"/>
    /// with the reason (a refusal, a timeout, a failed connect). <paramref name="keptClosed"/> is
    /// called each time the connection kept after Landmarks was closed before the next Join was
    /// answered (the Join then goes on a new connection).
    /// </summary>
    public static async Task<(SwarmPeer Peer, TimeSpan Took)> JoinAsync(IPAddress local, IPEndPoint coordinator, ushort uploadPercent, TimeSpan heartbeatInterval, TimeSpan timeout, Action<SwarmPeer, FrameType> onFrame, Action keptClosed, CancellationToken cancellationToken)
    {
        ulong token = (ulong)Random.Shared.NextInt64(1, long.MaxValue);
        // Made inside the try: out of descriptors (EMFILE), a socket cannot even be created, and
        // that is a failed join to report, not an exception that ends the whole swarm.
        Socket? listener = null;
        SwarmPeer? peer = null;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        long started = Stopwatch.GetTimestamp();
        try
        {
            listener = new Socket(local.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(local, 0));
            listener.Listen(4);
            var listenAddress = (IPEndPoint)listener.LocalEndPoint!;
            var probe = AnswerProbesAsync(listener, token, deadline.Token);
            // A latency-aware coordinator first answers with landmarks, then with candidate parents
            // (docs/protocol.md, section 17): a swarm peer measures only the coordinator (the round
            // trip of that answer), never the peers, and joins again with what it has: on the same
            // connection when the coordinator speaks version 10 (its Landmarks say so), else on a new one.
            var coordinate = WireCoordinate.Unknown;
            MeasuredRtt[] measured = [];
            Welcome welcome;
            bool kept = false;
            for (int round = 0; ; round++)
            {
                bool reused = kept;
                kept = false;
                if (!reused)
                {
                    var socket = new Socket(local.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                    peer = new SwarmPeer(socket, token, heartbeatInterval);
                    socket.Bind(new IPEndPoint(local, 0));
                    await socket.ConnectAsync(coordinator, deadline.Token).ConfigureAwait(false);
                    peer._input = PipeReader.Create(new NetworkStream(socket, ownsSocket: false),
                        new StreamPipeReaderOptions(bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true, useZeroByteReads: true));
                }
                byte[] nonce = RandomNumberGenerator.GetBytes(Protocol.NonceLength);
                long sent = Stopwatch.GetTimestamp();
                peer!.Send(FrameWriting.ToArray(new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, token, uploadPercent, [], listenAddress.ToString(), nonce, null, coordinate, measured).Write));
                (Welcome Welcome, Landmarks? Landmarks) answered;
                try
                {
                    answered = await peer.ReadWelcomeAsync(deadline.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (reused && e is IOException or SocketException)
                {
                    // The kept connection was closed meanwhile: the Join goes on a new one, as a real peer's does.
                    peer.Abort();
                    keptClosed();
                    round--;
                    continue;
                }
                var (answer, landmarks) = answered;
                if (landmarks is not { } nodes)
                {
                    welcome = answer;
                    break;
                }
                var rtt = Stopwatch.GetElapsedTime(sent);
                if (nodes.Version >= Protocol.OneConnectionVersion) kept = true;
                else await peer.CloseAfterLandmarksAsync(deadline.Token).ConfigureAwait(false);
                if (round >= MaxLandmarkRounds) throw new ProtocolException($"still sent landmarks after {MaxLandmarkRounds} rounds");
                // The coordinator is landmark 0, at the anchor of the coordinates: the swarm peer says it is there.
                if (nodes.Nodes.FirstOrDefault(n => n.Id == 0) is { Coordinate.IsUnknown: false } source)
                {
                    coordinate = source.Coordinate with { Error = 0.95f };
                    measured = [new MeasuredRtt(0, (uint)Math.Clamp(rtt.TotalMicroseconds, 1, uint.MaxValue))];
                }
            }
            var took = Stopwatch.GetElapsedTime(started);
            peer.Id = welcome.PeerId;
            await deadline.CancelAsync().ConfigureAwait(false);
            await probe.ConfigureAwait(false);
            peer.Send(FrameWriting.ToArray(new Attached(peer.Id).Write));
            peer.Ended = peer.ReadLoopAsync(onFrame);
            return (peer, took);
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ProtocolException)
        {
            peer?.Abort();
            string why = e is OperationCanceledException && !cancellationToken.IsCancellationRequested ? $"no welcome within {timeout.TotalSeconds:0.#} s" : e.Message;
            // Connected, and then the coordinator closed or reset the connection with no answer:
            // its hello deadline passed before it read the hello (a starved joiner or coordinator).
            bool interrupted = peer is not null && e is IOException or SocketException { SocketErrorCode: SocketError.ConnectionReset };
            throw new SwarmJoinException(why, e) { Interrupted = interrupted };
        }
        finally
        {
            listener?.Dispose();
        }
    }

    /// <summary>
    /// Answers the coordinator's dial-back (a Hello of role Probe) with a Welcome that carries the
    /// proof of the join token over the probe's nonce (version 16; never the token itself), as a
    /// real peer's listener does, then closes that connection.
    /// </summary>
    private static async Task AnswerProbesAsync(Socket listener, ulong token, CancellationToken cancellationToken)
    {
        try
        {
            using var probe = await listener.AcceptAsync(cancellationToken).ConfigureAwait(false);
            var input = PipeReader.Create(new NetworkStream(probe, ownsSocket: false), new StreamPipeReaderOptions(bufferSize: 1024, leaveOpen: true));
            var (type, body) = await ReadFrameAsync(input, cancellationToken).ConfigureAwait(false);
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
            if (type != FrameType.Hello || !Hello.TryRead(ref reader, out var hello) || hello.Role != HelloRole.Probe) return;
            var answer = Trust.ProbeProof.Answer(hello, token, 1);
            await probe.SendAsync(FrameWriting.ToArray(answer.Write), cancellationToken).ConfigureAwait(false);
            probe.Shutdown(SocketShutdown.Send);
            // Wait for the coordinator to close too, so that the answer is not reset away.
            var rest = new byte[64];
            while (await probe.ReceiveAsync(rest, cancellationToken).ConfigureAwait(false) > 0)
            {
            }
            await input.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ProtocolException or ObjectDisposedException)
        {
            // No probe (a peer with no upload is not probed), or the coordinator gave up on it: the Welcome says what it decided.
        }
    }

    /// <summary>
    /// Closes a landmark round's connection as a peer does (<see cref="Nodes.Peer"/>): the send side
    /// first, then, once the coordinator has closed its side too (it does right after the
    /// landmarks), the socket, without a reset; a coordinator that meets a reset pays for an
    /// exception (docs/performance.md, "Where a join's time goes").
    /// </summary>
    private async Task CloseAfterLandmarksAsync(CancellationToken cancellationToken)
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Send);
            var input = _input!;
            while (true)
            {
                var result = await input.ReadAsync(cancellationToken).ConfigureAwait(false);
                input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted) break;
            }
            await input.CompleteAsync().ConfigureAwait(false);
            Interlocked.Exchange(ref _gone, 1);
            _socket.Dispose();
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
            Abort();
        }
    }

    /// <summary>The most times a swarm peer joins again after landmarks (the landmarks, then the candidate parents).</summary>
    private const int MaxLandmarkRounds = 3;

    private async Task<(Welcome Welcome, Landmarks? Landmarks)> ReadWelcomeAsync(CancellationToken cancellationToken)
    {
        var (type, body) = await ReadFrameAsync(_input!, cancellationToken).ConfigureAwait(false);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        if (type == FrameType.Goodbye && Goodbye.TryRead(ref reader, out var goodbye)) throw new ProtocolException($"refused ({goodbye.Code}): {goodbye.Reason}");
        if (type == FrameType.Landmarks)
        {
            if (!Landmarks.TryRead(ref reader, out var landmarks)) throw new ProtocolException("malformed landmarks frame");
            return (default, landmarks);
        }
        if (type != FrameType.Welcome || !Welcome.TryRead(ref reader, out var welcome)) throw new ProtocolException($"expected a welcome, got {type}");
        if (welcome.PeerId == 0) throw new ProtocolException("redirected: connect the swarm to the coordinator itself");
        return (welcome, null);
    }

    /// <summary>The next frame that is not a heartbeat, copied out.</summary>
    private static async Task<(FrameType Type, byte[] Body)> ReadFrameAsync(PipeReader input, CancellationToken cancellationToken)
    {
        while (true)
        {
            var result = await input.ReadAsync(cancellationToken).ConfigureAwait(false);
            var buffer = result.Buffer;
            while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
            {
                if (type == FrameType.Heartbeat) continue;
                var copy = body.ToArray();
                input.AdvanceTo(buffer.Start);
                return (type, copy);
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) throw new IOException("connection closed before a frame arrived");
        }
    }

    /// <summary>
    /// Reads the control link until it ends: a Move is answered with Attached (the peer does not
    /// attach for real); chunks, hash lists, notices and heartbeats are dropped; a Goodbye is kept as the reason.
    /// </summary>
    private async Task ReadLoopAsync(Action<SwarmPeer, FrameType> onFrame)
    {
        var input = _input!;
        string reason = "the coordinator closed the connection";
        try
        {
            while (true)
            {
                var result = await input.ReadAsync().ConfigureAwait(false);
                var buffer = result.Buffer;
                while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
                {
                    if (type == FrameType.Heartbeat) OnHeartbeat(body);
                    else if (type == FrameType.Ping) OnPing(body);
                    else if (type == FrameType.Move)
                    {
                        Moves++;
                        Send(FrameWriting.ToArray(new Attached(Id).Write));
                    }
                    else if (type == FrameType.Goodbye)
                    {
                        var r = new SequenceReader<byte>(body);
                        if (Goodbye.TryRead(ref r, out var goodbye)) reason = $"goodbye ({goodbye.Code}): {goodbye.Reason}";
                    }
                    onFrame(this, type);
                }
                input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted) break;
            }
        }
        catch (Exception e) when (e is SocketException or IOException or ProtocolException or ObjectDisposedException or InvalidOperationException)
        {
            reason = e.Message;
        }
        if (!Gone) EndReason = reason;
        Abort();
        await input.CompleteAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// As a peer's control link does: a coordinator that asks for rarer heartbeats (up to a
    /// minute), or for more frequent ones again (down to the swarm's interval), gets them, and
    /// hears the interval back.
    /// </summary>
    private void OnHeartbeat(ReadOnlySequence<byte> body)
    {
        var reader = new SequenceReader<byte>(body);
        if (!Heartbeat.TryRead(ref reader, out var heartbeat) || heartbeat.Value == 0) return;
        var interval = TimeSpan.FromMilliseconds(Math.Min(heartbeat.Value, int.MaxValue));
        if (interval == HeartbeatInterval || interval < _baseInterval || interval > Nodes.Peer.MaxControlHeartbeat) return;
        _heartbeatFrame = FrameWriting.ToArray(new Heartbeat(heartbeat.Value).Write);
        HeartbeatInterval = interval;
        // At once: the coordinator expects the old interval until it hears the new one.
        Send(_heartbeatFrame);
    }

    /// <summary>A version-6 link: the coordinator measures its RTT to this peer; answered at once, with no coordinate.</summary>
    private void OnPing(ReadOnlySequence<byte> body)
    {
        var reader = new SequenceReader<byte>(body);
        if (Ping.TryRead(ref reader, out var ping)) Send(FrameWriting.ToArray(new Pong(ping.Token, 0, WireCoordinate.Unknown).Write));
    }

    /// <summary>Sends a heartbeat (the swarm's timer calls it once per heartbeat interval).</summary>
    public void SendHeartbeat() => Send(_heartbeatFrame);

    private static readonly byte[] PlainHeartbeat = FrameWriting.ToArray(new Heartbeat(0).Write);

    /// <summary>Leaves as a real peer does (Leave, then Goodbye(Normal), then FIN); the read loop ends when the coordinator closes.</summary>
    public void Leave()
    {
        if (Interlocked.Exchange(ref _gone, 1) != 0) return;
        var leave = FrameWriting.ToArray(new Leave(Id).Write);
        var goodbye = FrameWriting.ToArray(new Goodbye(GoodbyeCode.Normal, "leaving").Write);
        try
        {
            lock (_sendLock)
            {
                _socket.Send([new ArraySegment<byte>(leave), new ArraySegment<byte>(goodbye)]);
                _socket.Shutdown(SocketShutdown.Send);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            Abort();
        }
    }

    /// <summary>Closes at once (a reset): a peer that crashed, or the end of the run.</summary>
    public void Abort()
    {
        Interlocked.Exchange(ref _gone, 1);
        try
        {
            _socket.LingerState = new LingerOption(true, 0);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Closed already.
        }
        _socket.Dispose();
    }

    /// <summary>
    /// From now on sends nothing (no heartbeat, no answer), its connection left open, as a frozen
    /// process's (stopped, swapped out, its host hung): for a test of the coordinator's failure detection.
    /// </summary>
    internal void Freeze() => Volatile.Write(ref _frozen, true);

    private bool _frozen;

    private void Send(byte[] frame)
    {
        try
        {
            lock (_sendLock)
            {
                if (Gone || Volatile.Read(ref _frozen)) return;
                _socket.Send(frame);
                LastSent = Stopwatch.GetTimestamp();
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // The read loop sees the end and says why.
        }
    }
}

/// <summary>A swarm peer could not join, and why.</summary>
internal sealed class SwarmJoinException(string message, Exception inner) : Exception(message, inner)
{
    /// <summary>The coordinator said it is busy (admission control): try again after a backoff.</summary>
    public bool Busy => InnerException is ProtocolException && Message.StartsWith($"refused ({GoodbyeCode.Busy})", StringComparison.Ordinal);

    /// <summary>
    /// The coordinator took the connection and then closed or reset it before it answered (with no
    /// Goodbye): it is there, so the join is tried again after a backoff, as a real peer's is.
    /// </summary>
    public bool Interrupted { get; init; }
}

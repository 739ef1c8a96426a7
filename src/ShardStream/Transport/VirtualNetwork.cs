using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;

namespace ShardStream.Transport;

/// <summary>
/// An in-memory network for fast, deterministic multi-node tests. Every node gets its own host
/// (<see cref="Host"/>); links between hosts can be given a one-way latency, and a host can be
/// killed (every connection reset, like <c>kill -9</c>) or frozen (connections stay open but no
/// byte moves, like <c>kill -STOP</c> or a half-open link), as can the path between two hosts
/// alone, and a host's download and upload, or what one host sends another, can be capped (like a
/// slow access link or a congested route).
/// </summary>
public sealed class VirtualNetwork
{
    private readonly ConcurrentDictionary<string, VirtualListener> _listeners = new();
    private readonly ConcurrentDictionary<string, VirtualHost> _hosts = new();
    private readonly ConcurrentDictionary<(string, string), TimeSpan> _latency = new();
    private readonly ConcurrentDictionary<(string, string), byte> _blocked = new();
    private readonly ConcurrentDictionary<string, byte> _blackHoles = new();
    private readonly ConcurrentDictionary<(string, string), byte> _frozenPaths = new();
    private readonly ConcurrentDictionary<(string, string), PathRate> _pathRates = new();
    private readonly ConcurrentDictionary<string, byte> _synAckDroppers = new();
    private readonly ConcurrentDictionary<string, TimeSpan> _relayedHandshakes = new();
    private int _pendingBlackHoleConnects;
    private readonly TimeProvider _time;
    private volatile LatencyModelBinding? _model;
    private readonly PipeOptions _pipes;

    /// <summary>Creates an empty network.</summary>
    public VirtualNetwork(TimeProvider? time = null) : this(time, null)
    {
    }

    /// <summary>
    /// Creates an empty network for a test that watches its connections' insides: their pipes take
    /// their buffers from <paramref name="pool"/> (null: the shared array pool), so that the test
    /// can see what is done with a buffer after it went back, and run a reader's continuation on
    /// <paramref name="readerScheduler"/> (null: the thread pool; <see cref="PipeScheduler.Inline"/>
    /// runs it on the thread that completed the read, e.g. in the middle of a reset).
    /// </summary>
    internal VirtualNetwork(TimeProvider? time, MemoryPool<byte>? pool, PipeScheduler? readerScheduler = null)
    {
        _time = time ?? TimeProvider.System;
        _pipes = new PipeOptions(pool: pool, readerScheduler: readerScheduler, pauseWriterThreshold: 1024 * 1024, resumeWriterThreshold: 512 * 1024, useSynchronizationContext: false);
    }

    /// <summary>
    /// Waits at least <paramref name="delay"/> by <paramref name="time"/>'s own timestamps. A timer
    /// of the system clock can end early: .NET's timer queue counts in <c>Environment.TickCount64</c>,
    /// which on Linux steps with the kernel's coarse monotonic clock (4 ms steps on our test machine), so
    /// <c>Task.Delay(50 ms)</c> started just before a step ended after 46.35 ms (1 of 100 delays
    /// started at random offsets), and two such one-way delays made a round trip of 100 ms read
    /// 97.8 ms (LyingPongTests, in CI). What is left is waited again, rounded up to whole milliseconds.
    /// </summary>
    internal static async Task DelayAtLeastAsync(TimeSpan delay, TimeProvider time, CancellationToken cancellationToken)
    {
        long start = time.GetTimestamp();
        await Task.Delay(delay, time, cancellationToken).ConfigureAwait(false);
        for (var left = delay - time.GetElapsedTime(start); left > TimeSpan.Zero; left = delay - time.GetElapsedTime(start))
            await Task.Delay(TimeSpan.FromMilliseconds(Math.Ceiling(left.TotalMilliseconds)), time, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// True (the default) when an accepted connection reports the path's RTT as its handshake's
    /// (<see cref="IConnection.HandshakeRtt"/>), as TCP on Linux does; false: none, as elsewhere.
    /// </summary>
    public bool HandshakeRtts { get; set; } = true;

    /// <summary>
    /// From now on <paramref name="host"/> drops the first SYN-ACK of every connection it opens,
    /// as a joiner can on its own host: the accepting side's kernel sends it again and takes no
    /// sample of that handshake, so the accepting end measures handshakes
    /// (<see cref="IConnection.MeasuresHandshake"/>) but has no RTT to report
    /// (<see cref="IConnection.HandshakeRtt"/> null). The time the resend takes is not modelled.
    /// </summary>
    public void DropFirstSynAcks(string host) => _synAckDroppers[host] = 0;

    /// <summary>
    /// From now on every connection <paramref name="host"/> opens reports <paramref name="rtt"/> as
    /// its handshake's RTT at the accepting end (<see cref="IConnection.HandshakeRtt"/>), whatever
    /// the path's latency, where the network reports handshakes at all (<see cref="HandshakeRtts"/>,
    /// and not for a host that drops SYN-ACKs, <see cref="DropFirstSynAcks"/>): as when a TCP relay next to the accepting host ends the handshake and
    /// carries the bytes on over the long path. The bytes themselves still cross the path.
    /// </summary>
    public void RelayHandshakes(string host, TimeSpan rtt) => _relayedHandshakes[host] = rtt;

    /// <summary>The latency of links with no latency of their own.</summary>
    public TimeSpan DefaultLatency { get; set; } = TimeSpan.Zero;

    /// <summary>The transport of host <paramref name="name"/>; its addresses are <c>name:port</c>.</summary>
    public ITransport Host(string name) => _hosts.GetOrAdd(name, n => new VirtualHost(this, n));

    /// <summary>Sets the one-way latency between two hosts (both directions).</summary>
    public void SetLatency(string hostA, string hostB, TimeSpan oneWay)
    {
        _latency[(hostA, hostB)] = oneWay;
        _latency[(hostB, hostA)] = oneWay;
    }

    /// <summary>
    /// Gives every pair of the hosts <paramref name="hosts"/> the one-way latency
    /// <paramref name="oneWay"/>(i, j), where host i is <paramref name="hosts"/>[i] (a latency model
    /// such as <c>Simulation.WorldLatencyModel</c>, whose node 0 is the coordinator). Pairs given
    /// their own latency with <see cref="SetLatency"/> keep it; other pairs get <see cref="DefaultLatency"/>.
    /// </summary>
    public void UseLatencyModel(IReadOnlyList<string> hosts, Func<int, int, TimeSpan> oneWay)
    {
        ArgumentNullException.ThrowIfNull(hosts);
        ArgumentNullException.ThrowIfNull(oneWay);
        var index = new Dictionary<string, int>(hosts.Count);
        for (var i = 0; i < hosts.Count; i++) index[hosts[i]] = i;
        _model = new LatencyModelBinding(index, oneWay);
    }

    /// <summary>
    /// Caps what <paramref name="host"/> can receive, over all its connections together, at
    /// <paramref name="bytesPerSecond"/> (0 removes the cap), like a slow access link: a send to
    /// it completes only once its bytes have had time to cross, so the sender's own queue is what
    /// grows. Only the current send is in flight (no large socket buffer).
    /// </summary>
    public void SetDownloadRate(string host, long bytesPerSecond)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytesPerSecond);
        Interlocked.Exchange(ref _hosts.GetOrAdd(host, n => new VirtualHost(this, n)).DownloadRate, bytesPerSecond);
    }

    /// <summary>
    /// Caps what <paramref name="host"/> can send, over all its connections together, at
    /// <paramref name="bytesPerSecond"/> (0 removes the cap), like a slow uplink (a tbf on its
    /// egress): a send from it completes only once its bytes have had time to leave, so its own
    /// queues are what grow. Applied with the other side's download cap, the slower of the two.
    /// </summary>
    public void SetUploadRate(string host, long bytesPerSecond)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytesPerSecond);
        Interlocked.Exchange(ref _hosts.GetOrAdd(host, n => new VirtualHost(this, n)).UploadRate, bytesPerSecond);
    }

    /// <summary>
    /// Caps what <paramref name="from"/> sends to <paramref name="to"/>, over all their connections
    /// together, at <paramref name="bytesPerSecond"/> (0 removes the cap), whatever either host's
    /// own links carry: a congested route, or an uplink whose share goes to other flows first (TCP
    /// does not share a narrow uplink fairly). Applied with the two hosts' caps, the slowest of them.
    /// </summary>
    public void SetPathRate(string from, string to, long bytesPerSecond)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytesPerSecond);
        Interlocked.Exchange(ref _pathRates.GetOrAdd((from, to), _ => new PathRate()).Rate, bytesPerSecond);
    }

    /// <summary>How long until <paramref name="bytes"/> more have crossed the capped path from one host to another (zero without a cap).</summary>
    private TimeSpan ReservePath(string from, string to, long bytes) =>
        _pathRates.TryGetValue((from, to), out var path) ? Reserve(path, ref path.FreeAt, Interlocked.Read(ref path.Rate), bytes) : TimeSpan.Zero;

    private sealed class PathRate
    {
        public long Rate;
        public long FreeAt;
    }

    /// <summary>When bytes sent now at <paramref name="rate"/> (bytes per second) have crossed a link whose previous bytes cross until <paramref name="freeAt"/>; moves it on.</summary>
    private TimeSpan Reserve(object gate, ref long freeAt, long rate, long bytes)
    {
        if (rate <= 0) return TimeSpan.Zero;
        lock (gate)
        {
            long now = _time.GetTimestamp();
            long start = Math.Max(now, freeAt);
            freeAt = start + (long)((double)bytes / rate * _time.TimestampFrequency);
            return _time.GetElapsedTime(now, freeAt);
        }
    }

    /// <summary>Resets every connection of the host and closes its listeners, as when its process dies.</summary>
    public void Kill(string host)
    {
        var h = _hosts.GetOrAdd(host, n => new VirtualHost(this, n));
        h.Killed = true;
        foreach (var (address, listener) in _listeners)
            if (listener.Host == h && _listeners.TryRemove(address, out _)) listener.Close();
        foreach (var link in h.Links.Keys) link.Reset();
    }

    /// <summary>
    /// Resets every open connection between two hosts, as a broken path between them would; both
    /// hosts stay up, keep their other connections and can connect to each other again.
    /// </summary>
    public void Cut(string hostA, string hostB)
    {
        var a = _hosts.GetOrAdd(hostA, n => new VirtualHost(this, n));
        var b = _hosts.GetOrAdd(hostB, n => new VirtualHost(this, n));
        foreach (var link in a.Links.Keys)
            if (link.Joins(a, b)) link.Reset();
    }

    /// <summary>
    /// From now on <paramref name="from"/> cannot open connections to <paramref name="to"/> (as
    /// behind a NAT or a firewall); the other direction, and connections already open, still work.
    /// A connect fails at once ("no route to host"), or, when <paramref name="silently"/>, never
    /// completes (a firewall that drops the packets): it waits until the connecting side cancels it.
    /// </summary>
    public void Block(string from, string to, bool silently = false) => _blocked[(from, to)] = silently ? (byte)1 : (byte)0;

    /// <summary>
    /// From now on a connect to <paramref name="address"/> never completes, as to an address whose
    /// packets are dropped (nobody answers, not even with a reset): it waits until the connecting
    /// side cancels it (its connect timeout).
    /// </summary>
    public void BlackHole(string address) => _blackHoles[address] = 0;

    /// <summary>Connects to a <see cref="BlackHole"/> address that are waiting now (not yet cancelled).</summary>
    public int PendingBlackHoleConnects => Volatile.Read(ref _pendingBlackHoleConnects);

    private async ValueTask<IConnection> NeverConnectAsync(string address, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _pendingBlackHoleConnects);
        try
        {
            await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
            throw new ConnectionFailedException($"cannot connect to {address}: no answer");
        }
        finally
        {
            Interlocked.Decrement(ref _pendingBlackHoleConnects);
        }
    }

    /// <summary>Lets <paramref name="from"/> open connections to <paramref name="to"/> again after <see cref="Block"/>.</summary>
    public void Unblock(string from, string to) => _blocked.TryRemove((from, to), out _);

    /// <summary>Stops every byte to and from the host; connections stay open.</summary>
    public void Freeze(string host) => _hosts.GetOrAdd(host, n => new VirtualHost(this, n)).Frozen = true;

    /// <summary>Lets bytes move again after <see cref="Freeze(string)"/>.</summary>
    public void Thaw(string host)
    {
        var h = _hosts.GetOrAdd(host, n => new VirtualHost(this, n));
        h.Frozen = false;
        foreach (var link in h.Links.Keys) link.Wake();
    }

    /// <summary>
    /// Stops every byte between two hosts, both ways, as a path that drops everything between them
    /// would (a partition of those two: each still reaches every other host). Connections stay
    /// open; new ones between them connect but carry nothing until <see cref="Thaw(string, string)"/>.
    /// </summary>
    public void Freeze(string hostA, string hostB)
    {
        _frozenPaths[(hostA, hostB)] = 0;
        _frozenPaths[(hostB, hostA)] = 0;
    }

    /// <summary>Lets bytes move between two hosts again after <see cref="Freeze(string, string)"/>.</summary>
    public void Thaw(string hostA, string hostB)
    {
        _frozenPaths.TryRemove((hostA, hostB), out _);
        _frozenPaths.TryRemove((hostB, hostA), out _);
        var a = _hosts.GetOrAdd(hostA, n => new VirtualHost(this, n));
        var b = _hosts.GetOrAdd(hostB, n => new VirtualHost(this, n));
        foreach (var link in a.Links.Keys)
            if (link.Joins(a, b)) link.Wake();
    }

    private TimeSpan LatencyBetween(string a, string b)
    {
        if (_latency.TryGetValue((a, b), out var l)) return l;
        if (_model is { } model && model.Index.TryGetValue(a, out var i) && model.Index.TryGetValue(b, out var j)) return model.OneWay(i, j);
        return DefaultLatency;
    }

    private sealed record LatencyModelBinding(Dictionary<string, int> Index, Func<int, int, TimeSpan> OneWay);

    private sealed class VirtualHost(VirtualNetwork network, string name) : ITransport
    {
        private int _nextPort = 10000;

        public string Name { get; } = name;

        public volatile bool Killed;

        public volatile bool Frozen;

        /// <summary>Bytes per second this host can receive; 0 for no cap.</summary>
        public long DownloadRate;

        /// <summary>Bytes per second this host can send; 0 for no cap.</summary>
        public long UploadRate;

        private readonly object _downlink = new();
        private long _downlinkFreeAt;
        private readonly object _uplink = new();
        private long _uplinkFreeAt;

        public ConcurrentDictionary<VirtualLink, byte> Links { get; } = new();

        /// <summary>How long until <paramref name="bytes"/> more have crossed this host's capped downlink (zero without a cap).</summary>
        public TimeSpan ReserveDownlink(long bytes) => Reserve(_downlink, ref _downlinkFreeAt, Interlocked.Read(ref DownloadRate), bytes);

        /// <summary>How long until <paramref name="bytes"/> more have left through this host's capped uplink (zero without a cap).</summary>
        public TimeSpan ReserveUplink(long bytes) => Reserve(_uplink, ref _uplinkFreeAt, Interlocked.Read(ref UploadRate), bytes);

        /// <summary>How long until <paramref name="bytes"/> more have crossed the capped path from this host to <paramref name="to"/> (zero without a cap).</summary>
        public TimeSpan ReservePathTo(VirtualHost to, long bytes) => network.ReservePath(Name, to.Name, bytes);

        private TimeSpan Reserve(object gate, ref long freeAt, long rate, long bytes) => network.Reserve(gate, ref freeAt, rate, bytes);

        public ValueTask<IConnectionListener> ListenAsync(string address, CancellationToken cancellationToken)
        {
            var (host, port) = ParseAddress(address);
            // 0.0.0.0:PORT or [::]:PORT listens on the host's one address, as on a real machine,
            // and the listener reports the address as it was given.
            bool everyAddress = Endpoint.IsUnspecified(host);
            if (host != Name && !everyAddress) throw new ConnectionFailedException($"cannot listen on {address}: host {Name} owns only {Name}:PORT addresses");
            if (port == 0) port = Interlocked.Increment(ref _nextPort);
            string bound = Endpoint.Format(Name, port);
            var listener = new VirtualListener(this, Endpoint.Format(host, port));
            if (!network._listeners.TryAdd(bound, listener)) throw new ConnectionFailedException($"cannot listen on {bound}: address already in use");
            Killed = false;
            return ValueTask.FromResult<IConnectionListener>(listener);
        }

        public ValueTask<IConnection> ConnectAsync(string address, CancellationToken cancellationToken)
        {
            ParseAddress(address);
            if (Killed) throw new ConnectionFailedException($"cannot connect to {address}: this host is down");
            if (network._blackHoles.ContainsKey(address)) return network.NeverConnectAsync(address, cancellationToken);
            if (!network._listeners.TryGetValue(address, out var listener) || listener.Host.Killed)
                throw new ConnectionFailedException($"cannot connect to {address}: connection refused");
            if (network._blocked.TryGetValue((Name, listener.Host.Name), out byte silently))
            {
                if (silently != 0) return network.NeverConnectAsync(address, cancellationToken);
                throw new ConnectionFailedException($"cannot connect to {address}: no route to host");
            }
            var link = new VirtualLink(network, this, listener.Host);
            // Kill sets Killed, then resets the host's links. A kill that came after the checks
            // above but before this link was registered did not see it: reset it here, as the
            // kernel would for a process that died while it connected.
            if (Killed || listener.Host.Killed)
            {
                link.Reset();
                throw new ConnectionFailedException($"cannot connect to {address}: {(Killed ? "this host is down" : "connection refused")}");
            }
            if (!listener.Offer(link.ServerEnd)) throw new ConnectionFailedException($"cannot connect to {address}: connection refused");
            return ValueTask.FromResult<IConnection>(link.ClientEnd);
        }

        private static (string Host, int Port) ParseAddress(string address)
        {
            try
            {
                return Endpoint.Parse(address);
            }
            catch (FormatException e)
            {
                throw new ConnectionFailedException(e.Message, e);
            }
        }
    }

    /// <param name="localAddress">The address as the listener was asked for (may be <c>0.0.0.0:port</c>).</param>
    private sealed class VirtualListener(VirtualHost host, string localAddress) : IConnectionListener
    {
        private readonly System.Threading.Channels.Channel<IConnection> _pending = System.Threading.Channels.Channel.CreateUnbounded<IConnection>();

        public VirtualHost Host { get; } = host;

        public string LocalAddress { get; } = localAddress;

        public bool Offer(IConnection connection) => _pending.Writer.TryWrite(connection);

        public void Close() => _pending.Writer.TryComplete();

        public async ValueTask<IConnection?> AcceptAsync(CancellationToken cancellationToken)
        {
            try
            {
                return await _pending.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is System.Threading.Channels.ChannelClosedException or OperationCanceledException)
            {
                return null;
            }
        }

        public ValueTask DisposeAsync()
        {
            Close();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>One connection: two directions, each a sender pipe pumped into a receiver pipe.</summary>
    private sealed class VirtualLink
    {
        private readonly VirtualHost _client;
        private readonly VirtualHost _server;
        private readonly Direction _toServer;
        private readonly Direction _toClient;

        public VirtualLink(VirtualNetwork network, VirtualHost client, VirtualHost server)
        {
            _client = client;
            _server = server;
            _toServer = new Direction(network, client, server);
            _toClient = new Direction(network, server, client);
            ClientEnd = new End(this, new DuplexPipe(new ReadCountingReader(_toClient), _toServer.Writer), client, server, network._time);
            // The listening side gets the path's RTT as a kernel would measure it from the
            // handshake: exactly what the network puts on the path, whatever the timers do. Asked
            // of the network when first read, not here: a test's latency model may count its calls.
            ServerEnd = new End(this, new DuplexPipe(new ReadCountingReader(_toServer), _toClient.Writer), server, client, network._time)
            {
                Handshake = !network.HandshakeRtts || network._synAckDroppers.ContainsKey(client.Name) ? null
                    : network._relayedHandshakes.TryGetValue(client.Name, out var relayed) ? () => relayed
                    : () => network.LatencyBetween(client.Name, server.Name) + network.LatencyBetween(server.Name, client.Name),
                MeasuresHandshake = network.HandshakeRtts,
            };
            client.Links.TryAdd(this, 0);
            server.Links.TryAdd(this, 0);
        }

        public IConnection ClientEnd { get; }

        public IConnection ServerEnd { get; }

        public void Reset()
        {
            var error = new IOException("connection reset by peer");
            _toServer.Reset(error);
            _toClient.Reset(error);
            Forget();
        }

        public bool Joins(VirtualHost a, VirtualHost b) => (_client == a && _server == b) || (_client == b && _server == a);

        public void Wake()
        {
            _toServer.Wake();
            _toClient.Wake();
        }

        private void Forget()
        {
            _client.Links.TryRemove(this, out _);
            _server.Links.TryRemove(this, out _);
        }

        private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
        {
            public PipeReader Input { get; } = input;

            public PipeWriter Output { get; } = output;
        }

        /// <summary>
        /// One direction of a link. Each flush of the sender's writer is noted with its time
        /// (<see cref="StampingWriter"/>), and the pump hands its bytes on one latency after that:
        /// a frame sent while an earlier one is on its way travels beside it, as on a real path,
        /// instead of waiting for the earlier one's delay to end before its own starts (it took up to
        /// twice the one-way latency, docs/topology.md). Bytes that waited for the receiver to read
        /// (its pipe full) travel one latency from when it made room, as data held back by a full
        /// TCP window does once the window opens; what a frozen host or path held, one latency from
        /// the thaw.
        /// </summary>
        private sealed class Direction
        {
            private readonly VirtualNetwork _network;
            private readonly VirtualHost _from;
            private readonly VirtualHost _to;
            private readonly CancellationTokenSource _reset = new();
            private readonly Queue<(long End, long At)> _flushes = new();
            private volatile TaskCompletionSource _wake = new(TaskCreationOptions.RunContinuationsAsynchronously);

            public Direction(VirtualNetwork network, VirtualHost from, VirtualHost to)
            {
                _network = network;
                _from = from;
                _to = to;
                Sender = new Pipe(network._pipes);
                Receiver = new Pipe(network._pipes);
                Writer = new StampingWriter(Sender.Writer, this);
                _ = PumpAsync();
            }

            public Pipe Sender { get; }

            public Pipe Receiver { get; }

            /// <summary>Bytes the pump has handed to <see cref="Receiver"/> so far (the receiving side's to read).</summary>
            public long Handed => Interlocked.Read(ref _handed);

            private long _handed;

            /// <summary>The sender's side: <see cref="Sender"/>'s writer, each flush noted.</summary>
            public PipeWriter Writer { get; }

            public void Reset(Exception error)
            {
                _reset.Cancel();
                Receiver.Writer.Complete(error);
                Sender.Reader.Complete(error);
            }

            public void Wake() => _wake.TrySetResult();

            /// <summary>Nothing moves: either host is frozen, or the path between them is.</summary>
            private bool Held => _from.Frozen || _to.Frozen || _network._frozenPaths.ContainsKey((_from.Name, _to.Name));

            /// <summary>The sender flushed: its bytes up to <paramref name="end"/> (counted from the link's first) left it now.</summary>
            private void Flushed(long end)
            {
                long now = _network._time.GetTimestamp();
                lock (_flushes) _flushes.Enqueue((end, now));
            }

            /// <summary>The oldest flush that ends after byte <paramref name="delivered"/>, the ones before forgotten; false when none is noted.</summary>
            private bool NextFlush(long delivered, out (long End, long At) flush)
            {
                lock (_flushes)
                {
                    while (_flushes.TryPeek(out flush))
                    {
                        if (flush.End > delivered) return true;
                        _flushes.Dequeue();
                    }
                    return false;
                }
            }

            private async Task PumpAsync()
            {
                var time = _network._time;
                long delivered = 0;
                long roomSince = 0;
                try
                {
                    while (true)
                    {
                        var result = await Sender.Reader.ReadAsync(_reset.Token).ConfigureAwait(false);
                        var buffer = result.Buffer;
                        if (Held)
                        {
                            while (Held)
                            {
                                var wake = _wake;
                                if (!Held) break;
                                await wake.Task.WaitAsync(_reset.Token).ConfigureAwait(false);
                                _wake = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                            }
                            // What a frozen host or path held travels one latency from the thaw, as
                            // a healed path carries what is sent again then.
                            roomSince = time.GetTimestamp();
                        }
                        long visible = delivered + buffer.Length;
                        long upTo = visible;
                        var latency = _network.LatencyBetween(_from.Name, _to.Name);
                        if (latency > TimeSpan.Zero)
                        {
                            // Bytes shown with no flush noted (a writer completed with bytes it never flushed) leave now.
                            if (!NextFlush(delivered, out var flush)) flush = (visible, time.GetTimestamp());
                            upTo = Math.Min(flush.End, visible);
                            var left = latency - time.GetElapsedTime(Math.Max(flush.At, roomSince));
                            if (left > TimeSpan.Zero) await DelayAtLeastAsync(left, time, _reset.Token).ConfigureAwait(false);
                            // Later flushes already here whose latency is over too go with it.
                            while (upTo < visible && NextFlush(upTo, out flush) && time.GetElapsedTime(Math.Max(flush.At, roomSince)) >= latency)
                                upTo = Math.Min(flush.End, visible);
                        }
                        else
                        {
                            NextFlush(visible, out _); // forgets the flushes of what goes now
                        }
                        var handed = buffer.Slice(0, upTo - delivered);
                        bool waitedForRoom = false;
                        foreach (var segment in handed)
                        {
                            // Counted before the write shows them to the reader, so that a reader never saw more than was counted.
                            Interlocked.Add(ref _handed, segment.Length);
                            var writing = Receiver.Writer.WriteAsync(segment, _reset.Token);
                            waitedForRoom |= !writing.IsCompleted;
                            var flushed = await writing.ConfigureAwait(false);
                            // The receiving end was disposed: like a TCP reset, the sender must hear of it.
                            if (flushed.IsCompleted) throw new IOException("connection reset by peer: the other side closed");
                        }
                        if (waitedForRoom) roomSince = time.GetTimestamp();
                        delivered = upTo;
                        Sender.Reader.AdvanceTo(handed.End);
                        if (result.IsCompleted && upTo == visible)
                        {
                            await Receiver.Writer.CompleteAsync().ConfigureAwait(false);
                            await Sender.Reader.CompleteAsync().ConfigureAwait(false);
                            return;
                        }
                    }
                }
                catch (OperationCanceledException)
                {
                    // Reset: both pipes were completed with the error already.
                }
                catch (Exception e)
                {
                    // A reset under way ends both pipes with its own error. The pump may have met
                    // it half done (the receiving side ended, the sending side not yet: its write
                    // failed with "Writing is not allowed after writer was completed"), and ending
                    // the sending side with that error would have shown the sender an
                    // InvalidOperationException instead of the reset.
                    if (_reset.IsCancellationRequested) return;
                    // The receiver went away: tell the sender the connection is broken.
                    Receiver.Writer.Complete(e);
                    Sender.Reader.Complete(e);
                }
            }

            /// <summary>
            /// The sender's writer: <see cref="Sender"/>'s, counting the bytes written and noting
            /// each flush (<see cref="Flushed"/>) before the flush shows them to the pump, so that
            /// every byte the pump sees has its flush's time noted. One writer at a time, as any pipe's.
            /// </summary>
            private sealed class StampingWriter(PipeWriter inner, Direction direction) : PipeWriter
            {
                private long _written;
                private long _noted;

                public override void Advance(int bytes)
                {
                    inner.Advance(bytes);
                    _written += bytes;
                }

                public override Memory<byte> GetMemory(int sizeHint = 0) => inner.GetMemory(sizeHint);

                public override Span<byte> GetSpan(int sizeHint = 0) => inner.GetSpan(sizeHint);

                public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
                {
                    if (_written > _noted)
                    {
                        _noted = _written;
                        direction.Flushed(_written);
                    }
                    return inner.FlushAsync(cancellationToken);
                }

                public override void CancelPendingFlush() => inner.CancelPendingFlush();

                public override void Complete(Exception? exception = null) => inner.Complete(exception);

                public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);

                public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;

                public override long UnflushedBytes => inner.UnflushedBytes;
            }
        }

        /// <summary>
        /// The receiving side's reader of one direction, counting the bytes it was shown: those the
        /// pump handed over beyond them arrived and wait unread, as bytes in a TCP socket's receive
        /// buffer (<see cref="IConnection.HasUnreadInput"/>).
        /// </summary>
        private sealed class ReadCountingReader(Direction direction) : PipeReader
        {
            private readonly PipeReader _inner = direction.Receiver.Reader;
            private ReadOnlySequence<byte> _last;
            private long _consumed;
            private long _shown;

            /// <summary>True when bytes were handed to this side that no read has shown yet.</summary>
            public bool HasUnread => direction.Handed > Interlocked.Read(ref _shown);

            public override bool TryRead(out ReadResult result)
            {
                if (!_inner.TryRead(out result)) return false;
                Shown(result);
                return true;
            }

            public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
            {
                var result = await _inner.ReadAsync(cancellationToken).ConfigureAwait(false);
                Shown(result);
                return result;
            }

            private void Shown(in ReadResult result)
            {
                _last = result.Buffer;
                Interlocked.Exchange(ref _shown, _consumed + result.Buffer.Length);
            }

            public override void AdvanceTo(SequencePosition consumed)
            {
                _consumed += _last.Slice(0, consumed).Length;
                _inner.AdvanceTo(consumed);
            }

            public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
            {
                _consumed += _last.Slice(0, consumed).Length;
                _inner.AdvanceTo(consumed, examined);
            }

            public override void CancelPendingRead() => _inner.CancelPendingRead();

            public override void Complete(Exception? exception = null) => _inner.Complete(exception);

            public override ValueTask CompleteAsync(Exception? exception = null) => _inner.CompleteAsync(exception);
        }

        private sealed class End(VirtualLink link, IDuplexPipe pipe, VirtualHost local, VirtualHost remote, TimeProvider time) : IConnection
        {
            /// <summary>Bytes from the other side arrived and wait unread (as in a TCP socket's receive buffer).</summary>
            public bool HasUnreadInput => Pipe.Input is ReadCountingReader { HasUnread: true };

            /// <summary>
            /// Held while a send copies into <c>Output</c> and while <c>Output</c> is completed. A
            /// send copies without the pipe's lock; completing the pipe's writer after an abort (its
            /// reader already completed) gives the pipe's buffers back to the shared pool, so a copy
            /// still under way wrote into a buffer another connection may have rented meanwhile.
            /// </summary>
            private readonly object _sending = new();
            private bool _outputClosed;
            private int _closed;

            public IDuplexPipe Pipe { get; } = pipe;

            public string RemoteAddress { get; } = remote.Name;

            /// <summary>Gives the handshake's RTT once, at the first read of <see cref="HandshakeRtt"/>; null: none.</summary>
            public Func<TimeSpan>? Handshake { private get; init; }

            private TimeSpan? _handshakeRtt;

            public TimeSpan? HandshakeRtt => Handshake is null ? null : _handshakeRtt ??= Handshake();

            public bool MeasuresHandshake { get; init; }

            public async ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken)
            {
                // A capped uplink here or downlink on the other side: the send lasts until the bytes
                // have crossed the slower.
                long total = 0;
                foreach (var buffer in buffers) total += buffer.Count;
                var up = local.ReserveUplink(total);
                var down = remote.ReserveDownlink(total);
                var path = local.ReservePathTo(remote, total);
                var crossing = up > down ? up : down;
                if (path > crossing) crossing = path;
                if (crossing > TimeSpan.Zero) await DelayAtLeastAsync(crossing, time, cancellationToken).ConfigureAwait(false);
                // In memory there is nothing to gain from a gathered write: copy into the pipe.
                lock (_sending)
                {
                    // Closed meanwhile (a dispose while the send waited or before it): as a send on a closed socket.
                    if (_outputClosed) throw new IOException("the connection was closed");
                    foreach (var buffer in buffers) Pipe.Output.Write(buffer);
                }
                var result = await Pipe.Output.FlushAsync(cancellationToken).ConfigureAwait(false);
                if (result.IsCompleted) throw new IOException("the other side stopped reading");
            }

            public async ValueTask CloseOutputAsync()
            {
                lock (_sending)
                {
                    if (_outputClosed) return;
                    _outputClosed = true;
                }
                await Pipe.Output.CompleteAsync().ConfigureAwait(false);
            }

            public void Abort()
            {
                if (Interlocked.Exchange(ref _closed, 1) != 0) return;
                link.Reset();
            }

            public async ValueTask DisposeAsync()
            {
                await CloseOutputAsync().ConfigureAwait(false);
                if (Interlocked.Exchange(ref _closed, 1) != 0) return;
                await Pipe.Input.CompleteAsync().ConfigureAwait(false);
                link.Forget();
            }
        }
    }
}

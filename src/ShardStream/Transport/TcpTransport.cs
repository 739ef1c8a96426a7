using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;

namespace ShardStream.Transport;

/// <summary>Real TCP sockets, each connection exposed as a pair of pipes.</summary>
public sealed class TcpTransport : ITransport
{
    private readonly bool _readingThreads;

    private TcpTransport(bool readingThreads) => _readingThreads = readingThreads;

    /// <summary>TCP connections this process holds open (accepted or connected, not closed yet): each takes a file descriptor.</summary>
    public static int OpenConnections => SocketConnection.Open;

    /// <summary>A shared instance; the transport has no state.</summary>
    public static TcpTransport Instance { get; } = new(readingThreads: false);

    /// <summary>
    /// Listens like <see cref="Instance"/>, but each accepted connection is read by a thread of its
    /// own with blocking reads, and what it reads is handed to the reader of its input on that
    /// thread (see <see cref="ThreadReadConnection"/>). For a listener of few connections whose
    /// every read is worth acting on at once: the coordinator's RTMP ingest. Connections it opens
    /// are as <see cref="Instance"/>'s.
    /// </summary>
    public static TcpTransport ReadingThreads { get; } = new(readingThreads: true);

    /// <inheritdoc />
    public async ValueTask<IConnectionListener> ListenAsync(string address, CancellationToken cancellationToken)
    {
        var endpoint = await ResolveAsync(address, cancellationToken).ConfigureAwait(false);
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            // [::] means every address of the machine, IPv4 ones too, as 0.0.0.0 does for IPv4; a
            // .NET IPv6 socket is IPv6-only unless DualMode, and refused IPv4 neighbours. IPv4
            // connections then arrive as [::ffff:a.b.c.d], named a.b.c.d at accept (TcpListener.NameOf).
            if (endpoint.Address.Equals(IPAddress.IPv6Any)) socket.DualMode = true;
            socket.Bind(endpoint);
            // No backlog of our own: .NET passes int.MaxValue and Linux cuts it to net.core.somaxconn
            // (4096 by default since 5.4), the longest accept queue the system allows. A joiner
            // whose handshake completes into a full queue has its ACK dropped and the SYN-ACK sent
            // again, and so is placed latency-blind (docs/security.md, "Lies about RTTs and coordinates").
            socket.Listen();
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new ConnectionFailedException($"cannot listen on {address}: {e.Message}", e);
        }
        var bound = (IPEndPoint)socket.LocalEndPoint!;
        var (host, _) = Endpoint.Parse(address);
        return new TcpListener(socket, Endpoint.Format(host, bound.Port), _readingThreads);
    }

    /// <inheritdoc />
    public ValueTask<IConnection> ConnectAsync(string address, CancellationToken cancellationToken) => ConnectAsync(address, receivesStream: true, cancellationToken);

    /// <inheritdoc />
    public ValueTask<IConnection> ConnectForControlAsync(string address, CancellationToken cancellationToken) => ConnectAsync(address, receivesStream: false, cancellationToken);

    private static async ValueTask<IConnection> ConnectAsync(string address, bool receivesStream, CancellationToken cancellationToken)
    {
        var endpoint = await ResolveAsync(address, cancellationToken).ConfigureAwait(false);
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(endpoint, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new ConnectionFailedException($"cannot connect to {address}: {e.Message}", e);
        }
        return new TcpConnection(socket, address, receivesStream);
    }

    private static async ValueTask<IPEndPoint> ResolveAsync(string address, CancellationToken cancellationToken)
    {
        try
        {
            return await Endpoint.ResolveAsync(address, cancellationToken).ConfigureAwait(false);
        }
        catch (FormatException e)
        {
            throw new ConnectionFailedException(e.Message, e);
        }
    }

    private sealed class TcpListener(Socket socket, string localAddress, bool readingThreads) : IConnectionListener
    {
        private volatile bool _disposed;

        public string LocalAddress { get; } = localAddress;

        /// <summary>Null once closed; a failure that may pass (EMFILE, ENFILE, ENOBUFS, a connection aborted in the queue) throws <see cref="ConnectionFailedException"/>.</summary>
        public async ValueTask<IConnection?> AcceptAsync(CancellationToken cancellationToken)
        {
            try
            {
                var accepted = await socket.AcceptAsync(cancellationToken).ConfigureAwait(false);
                // Before a byte is sent on it: the smoothed RTT is still the handshake's one sample.
                var handshake = Transport.HandshakeRtt.Read(accepted);
                string remote = NameOf(accepted.RemoteEndPoint);
                return readingThreads
                    ? new ThreadReadConnection(accepted, remote) { HandshakeRtt = handshake.Rtt, MeasuresHandshake = handshake.Measured }
                    : new TcpConnection(accepted, remote, receivesStream: false) { HandshakeRtt = handshake.Rtt, MeasuresHandshake = handshake.Measured };
            }
            catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException || (e is SocketException && (_disposed || cancellationToken.IsCancellationRequested)))
            {
                return null;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.TooManyOpenSockets)
            {
                // EMFILE or ENFILE: .NET reports both as this code, with ENFILE's text ("in system")
                // even when it was this process's own limit.
                throw new ConnectionFailedException($"cannot accept on {LocalAddress}: out of file descriptors (this process's limit, ulimit -n, or the system's)", e);
            }
            catch (SocketException e)
            {
                throw new ConnectionFailedException($"cannot accept on {LocalAddress}: {e.Message} ({e.SocketErrorCode})", e);
            }
        }

        /// <summary>
        /// How an accepted connection is named in logs and to the node: an IPv4 peer of a dual-stack
        /// ([::]) listener as a.b.c.d:PORT, not as the socket reports it, [::ffff:a.b.c.d]:PORT.
        /// </summary>
        private static string NameOf(EndPoint? remote) => remote switch
        {
            IPEndPoint { Address.IsIPv4MappedToIPv6: true } ip => new IPEndPoint(ip.Address.MapToIPv4(), ip.Port).ToString(),
            null => "?",
            _ => remote.ToString() ?? "?",
        };

        public ValueTask DisposeAsync()
        {
            _disposed = true;
            socket.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}

/// <summary>A socket behind two pipes. Graceful close: flush, shut down the send side, close.</summary>
internal sealed class TcpConnection : SocketConnection
{
    private const int BufferSize = 256 * 1024;
    private readonly ReceiveSlabPool? _slabs;
    private GatheredSend? _send;

    /// <param name="receivesStream">
    /// True for a connection this side opened: in the ShardStream protocol the connecting side is
    /// the one that receives chunks (a child connects to its parent). Its pipe then reads into
    /// <see cref="ReceiveSlab"/>s, where chunk payloads can stay without a copy; an accepted
    /// connection (children's control frames, joins) reads into small pooled buffers instead of
    /// holding a slab.
    /// </param>
    public TcpConnection(Socket socket, string remoteAddress, bool receivesStream)
        : base(socket, remoteAddress)
    {
        Socket.SendBufferSize = BufferSize;
        Socket.ReceiveBufferSize = BufferSize;
        LimitUnsent(Socket);
        if (receivesStream)
        {
            _slabs = new ReceiveSlabPool();
            Input = PipeReader.Create(new SlabReceiveStream(Stream), new StreamPipeReaderOptions(pool: _slabs, bufferSize: 128 * 1024, minimumReadSize: 16 * 1024, leaveOpen: true));
        }
        else
        {
            // Zero-byte reads: an idle connection (a peer's control link, a heartbeat a second)
            // holds no buffer while it waits; one is rented only when bytes have arrived.
            Input = PipeReader.Create(Stream, new StreamPipeReaderOptions(bufferSize: 16 * 1024, minimumReadSize: 4 * 1024, leaveOpen: true, useZeroByteReads: true));
        }
        Output = PipeWriter.Create(Stream, new StreamPipeWriterOptions(minimumBufferSize: 128 * 1024, leaveOpen: true));
    }

    /// <summary>At most this many bytes not yet sent wait in the kernel's send queue (TCP_NOTSENT_LOWAT, Linux).</summary>
    internal const int NotSentLowWater = 64 * 1024;

    /// <summary>
    /// Keeps the kernel's queue of bytes not yet sent short, so that they wait in the link's own
    /// queue instead, where a frame sent ahead (a Move) or a TooSlow goodbye that drops the queued
    /// chunks can pass them. Without it a slow receiver's send buffer held up to 512 KiB, 4 s of
    /// a 1 Mbit/s link, ahead of any such frame (a TooSlow goodbye was lost when the close timeout
    /// reset the link first). What is in flight (the congestion window) is not limited by it.
    /// </summary>
    private static void LimitUnsent(Socket socket)
    {
        if (!OperatingSystem.IsLinux()) return;
        try
        {
            // IPPROTO_TCP = 6, TCP_NOTSENT_LOWAT = 25 (linux/tcp.h).
            socket.SetRawSocketOption(6, 25, BitConverter.GetBytes(NotSentLowWater));
        }
        catch (System.Net.Sockets.SocketException)
        {
            // An older kernel: the send buffer's bound still holds.
        }
    }

    public override PipeReader Input { get; }

    public override PipeWriter Output { get; }

    public override ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken)
    {
        // Cancellation comes from Abort(): disposing the socket fails a send in progress.
        return (_send ??= new GatheredSend()).SendAllAsync(Socket, buffers);
    }

    protected override void ReleaseBuffers()
    {
        _slabs?.Dispose();
        // The link's writer has stopped before a connection is disposed: no send is in flight.
        _send?.Dispose();
    }
}

using System.IO.Pipelines;

namespace ShardStream.Transport;

/// <summary>
/// Listen / connect / duplex byte pipe: everything the protocol needs of a network. Real TCP
/// (<see cref="TcpTransport"/>) and an in-memory network (<see cref="VirtualNetwork"/>) implement it.
/// Addresses are <c>host:port</c> strings.
/// </summary>
public interface ITransport
{
    /// <summary>Starts listening. Port 0 binds a free port; <see cref="IConnectionListener.LocalAddress"/> tells which.</summary>
    ValueTask<IConnectionListener> ListenAsync(string address, CancellationToken cancellationToken);

    /// <summary>Opens a connection. Throws <see cref="ConnectionFailedException"/> when nobody answers.</summary>
    ValueTask<IConnection> ConnectAsync(string address, CancellationToken cancellationToken);

    /// <summary>
    /// Opens a connection that carries only a few control frames (the coordinator's reachability
    /// probe): TCP reads it into small pooled buffers instead of a receive slab (1 MiB) meant for chunks.
    /// </summary>
    ValueTask<IConnection> ConnectForControlAsync(string address, CancellationToken cancellationToken) => ConnectAsync(address, cancellationToken);
}

/// <summary>A listening endpoint.</summary>
public interface IConnectionListener : IAsyncDisposable
{
    /// <summary>The bound address, with the real port when 0 was asked for.</summary>
    string LocalAddress { get; }

    /// <summary>The next incoming connection; null once the listener is closed.</summary>
    ValueTask<IConnection?> AcceptAsync(CancellationToken cancellationToken);
}

/// <summary>An open connection: a duplex pipe. Disposing it flushes and closes gracefully.</summary>
public interface IConnection : IAsyncDisposable
{
    /// <summary>Read the remote side's bytes from <c>Input</c>, write to it through <c>Output</c>.</summary>
    IDuplexPipe Pipe { get; }

    /// <summary>For logs.</summary>
    string RemoteAddress { get; }

    /// <summary>This side's address, the one the other side reached (empty where the transport does not say).</summary>
    string LocalAddress => "";

    /// <summary>
    /// Sends <paramref name="buffers"/> in order, all of them, as one gathered write where the
    /// transport can (TCP: one <c>sendmsg</c>), so that payloads go out from where they are held
    /// instead of being copied into <c>Output</c> first. Anything written to <c>Output</c> must be
    /// flushed before; the buffers may be reused once the returned task completes. TCP does not
    /// watch <paramref name="cancellationToken"/>: <see cref="Abort"/> is what fails a send in
    /// progress there.
    /// </summary>
    ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken);

    /// <summary>Completes <c>Output</c> and tells the remote side nothing more will come (TCP FIN); reading goes on.</summary>
    ValueTask CloseOutputAsync();

    /// <summary>Closes at once, dropping anything unsent.</summary>
    void Abort();

    /// <summary>
    /// Closes at once, as <see cref="Abort"/>, but first sends <paramref name="lastFrame"/> (a
    /// Goodbye) where the transport can, and closes so that the remote side can still read it: a
    /// connection closed while waiting for its hello is told why (TCP: a close, not a reset, unless
    /// input waits unread, and even then the frame is read before the reset).
    /// </summary>
    void AbortWith(ReadOnlySpan<byte> lastFrame) => Abort();

    /// <summary>
    /// True when bytes from the remote side have arrived and wait to be read (TCP: in the socket's
    /// receive buffer): the remote side was alive, however long this side took to read them.
    /// </summary>
    bool HasUnreadInput => false;

    /// <summary>
    /// The round trip of this connection's handshake as measured below the process, where the
    /// transport has one: a lower bound on the path's RTT that a loaded host does not inflate
    /// (TCP on Linux: the kernel's SYN-ACK sample, for a connection this side accepted; the
    /// virtual network: the RTT it puts on the path). Null where there is none, or none usable
    /// (see <see cref="MeasuresHandshake"/>). No default: an implementer, a wrapper above all,
    /// states this and <see cref="MeasuresHandshake"/> together.
    /// </summary>
    TimeSpan? HandshakeRtt { get; }

    /// <summary>
    /// True where the transport measures this connection's handshake (TCP on Linux, for a
    /// connection this side accepted; the virtual network unless told otherwise), so that a null
    /// <see cref="HandshakeRtt"/> means this handshake gave no usable sample (a SYN-ACK sent again,
    /// a SYN cookie, a <c>TCP_INFO</c> read that failed), not that the transport has none to give.
    /// The coordinator takes a joiner's claimed coordinate only where this is false, so it has no
    /// default: a wrapper that passed on <see cref="HandshakeRtt"/> but fell back to false here
    /// would have every joiner's claim trusted.
    /// </summary>
    bool MeasuresHandshake { get; }
}

/// <summary>A listen or connect that failed, with a message fit for a user.</summary>
public sealed class ConnectionFailedException(string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>
    /// The connect failed with a reset: the other side listens and took the connection, then
    /// reset it before this process saw the connect complete (a loaded host). A refused or
    /// unanswered connect is no such sign that anyone is there.
    /// </summary>
    public bool Reset => InnerException is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionReset };
}

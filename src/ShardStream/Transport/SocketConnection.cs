using System.IO.Pipelines;
using System.Net.Sockets;

namespace ShardStream.Transport;

/// <summary>
/// What both TCP connections share (<see cref="TcpConnection"/>, read through .NET's event loop,
/// and <see cref="ThreadReadConnection"/>, read by a thread of its own): the socket, the close
/// sequence and the unread-input check. Graceful close: flush <see cref="Output"/>, shut down the
/// send side, close the socket, complete <see cref="Input"/>. <see cref="Abort"/> resets instead.
/// </summary>
internal abstract class SocketConnection : IConnection, IDuplexPipe
{
    private static int s_open;
    private int _closed;
    private int _disposed;
    private int _outputClosed;

    protected SocketConnection(Socket socket, string remoteAddress)
    {
        Socket = socket;
        Socket.NoDelay = true;
        RemoteAddress = remoteAddress;
        LocalAddress = socket.LocalEndPoint?.ToString() ?? "";
        Stream = new NetworkStream(socket, ownsSocket: false);
        Interlocked.Increment(ref s_open);
    }

    /// <summary>Connections of this process whose socket is not closed yet (each holds a file descriptor).</summary>
    public static int Open => Volatile.Read(ref s_open);

    protected Socket Socket { get; }

    /// <summary>The socket as a stream, which does not own it: disposing the connection closes the socket.</summary>
    protected NetworkStream Stream { get; }

    /// <summary>True once the socket is closed (aborted or disposed).</summary>
    protected bool IsClosed => Volatile.Read(ref _closed) != 0;

    public IDuplexPipe Pipe => this;

    public abstract PipeReader Input { get; }

    public abstract PipeWriter Output { get; }

    public string RemoteAddress { get; }

    public string LocalAddress { get; }

    /// <summary>Set by the listener for an accepted connection (<see cref="Transport.HandshakeRtt"/>).</summary>
    public TimeSpan? HandshakeRtt { get; init; }

    /// <summary>Set by the listener for an accepted connection whose kernel measures handshakes (<see cref="Transport.HandshakeRtt"/>).</summary>
    public bool MeasuresHandshake { get; init; }

    public bool HasUnreadInput
    {
        get
        {
            try
            {
                return Socket.Available > 0;
            }
            catch (Exception e) when (e is ObjectDisposedException or SocketException)
            {
                return false;
            }
        }
    }

    public abstract ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken);

    public void Abort()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        try
        {
            Socket.LingerState = new LingerOption(true, 0);
        }
        catch (SocketException)
        {
            // Already gone: nothing to reset.
        }
        Socket.Dispose();
        Interlocked.Decrement(ref s_open);
    }

    public void AbortWith(ReadOnlySpan<byte> lastFrame)
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        try
        {
            // A few dozen bytes into an empty send buffer: this does not wait.
            Socket.Send(lastFrame);
            // The end of the stream goes out now, after the frame. Without it, .NET closes a socket
            // that has a receive pending (a node waiting for the hello) with a reset, and a joiner
            // whose connect the kernel had completed but whose process had not yet seen it (a
            // loaded host) found the reset as its connect's error, "Connection reset by peer", and
            // never read the frame (CliDescriptorTests: 45 to 473 of 600 swarm joins on 2026-12-04).
            Socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already gone: the close below is all that is left.
        }
        // A close, not a reset: a remote side that has not sent anything yet (its connect not yet
        // seen completing, on a loaded host) would otherwise meet the reset there, before it could
        // read the frame. With input unread the kernel resets anyway, after the frame and the end.
        Socket.Dispose();
        Interlocked.Decrement(ref s_open);
    }

    public async ValueTask CloseOutputAsync()
    {
        if (Interlocked.Exchange(ref _outputClosed, 1) != 0) return;
        try
        {
            await Output.CompleteAsync().ConfigureAwait(false);
            if (!IsClosed) Socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            // The other side is already gone; closing is all that is left.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await CloseOutputAsync().ConfigureAwait(false);
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        // The socket first, so that no receive can still be filling the reader's memory (and a
        // reading thread's blocking receive ends); then completing the reader (also after an
        // abort) hands its buffers back.
        if (Interlocked.Exchange(ref _closed, 1) == 0)
        {
            Socket.Dispose();
            Interlocked.Decrement(ref s_open);
        }
        await Input.CompleteAsync().ConfigureAwait(false);
        ReleaseBuffers();
    }

    /// <summary>Called once, last in <see cref="DisposeAsync"/>, when nothing reads or sends any more.</summary>
    protected virtual void ReleaseBuffers()
    {
    }
}

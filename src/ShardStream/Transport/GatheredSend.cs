using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;

namespace ShardStream.Transport;

/// <summary>
/// A reusable gathered send on one socket: one <see cref="SocketAsyncEventArgs"/> awaited through
/// a <see cref="ValueTask"/>, so that sending a batch of frames allocates nothing. One send at a
/// time (the link's single writer).
/// </summary>
internal sealed class GatheredSend : SocketAsyncEventArgs, IValueTaskSource
{
    private readonly List<ArraySegment<byte>> _rest = [];
    private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };

    public GatheredSend()
        : base(unsafeSuppressExecutionContextFlow: true)
    {
    }

    /// <summary>Sends every byte of <paramref name="buffers"/>, in order.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask SendAllAsync(Socket socket, IList<ArraySegment<byte>> buffers)
    {
        long total = 0;
        foreach (var buffer in buffers) total += buffer.Count;
        long sent = 0;
        var pending = buffers;
        while (true)
        {
            _core.Reset();
            BufferList = pending;
            if (socket.SendAsync(this)) await new ValueTask(this, _core.Version).ConfigureAwait(false);
            else if (SocketError != SocketError.Success) throw new SocketException((int)SocketError);
            sent += BytesTransferred;
            if (sent >= total) break;
            // On Linux a stream socket's send completes only once everything was taken; a short
            // send is handled anyway, by sending what is left.
            Rest(buffers, sent);
            pending = _rest;
        }
        BufferList = null;
    }

    private void Rest(IList<ArraySegment<byte>> buffers, long skip)
    {
        _rest.Clear();
        foreach (var buffer in buffers)
        {
            if (skip >= buffer.Count)
            {
                skip -= buffer.Count;
                continue;
            }
            _rest.Add(buffer[(int)skip..]);
            skip = 0;
        }
    }

    protected override void OnCompleted(SocketAsyncEventArgs e)
    {
        if (SocketError == SocketError.Success) _core.SetResult(true);
        else _core.SetException(new SocketException((int)SocketError));
    }

    void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}

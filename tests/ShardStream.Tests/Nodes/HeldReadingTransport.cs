using System.Buffers;
using System.IO.Pipelines;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A host whose reading of what it receives on the connections it opens to <paramref name="remote"/>
/// can be held (<see cref="Held"/>): as a loaded process whose read loop runs behind, the bytes
/// arrive and wait unread in its receive buffer, while its timers and its other links go on.
/// </summary>
internal sealed class HeldReadingTransport(ITransport inner, string remote) : ITransport
{
    private volatile TaskCompletionSource _released = NewReleased(released: true);

    /// <summary>Whether reads wait now; set false, the waiting reads go on at once.</summary>
    public bool Held
    {
        get => !_released.Task.IsCompleted;
        set
        {
            if (value == Held) return;
            if (value) _released = NewReleased(released: false);
            else _released.TrySetResult();
        }
    }

    private static TaskCompletionSource NewReleased(bool released)
    {
        var source = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (released) source.SetResult();
        return source;
    }

    public ValueTask<IConnectionListener> ListenAsync(string address, CancellationToken cancellationToken) => inner.ListenAsync(address, cancellationToken);

    public async ValueTask<IConnection> ConnectAsync(string address, CancellationToken cancellationToken)
    {
        var connection = await inner.ConnectAsync(address, cancellationToken);
        return connection.RemoteAddress.StartsWith(remote, StringComparison.Ordinal) ? new Connection(connection, this) : connection;
    }

    private sealed class Connection(IConnection inner, HeldReadingTransport owner) : IConnection, IDuplexPipe
    {
        private readonly HeldReader _input = new(inner.Pipe.Input, owner);

        public IDuplexPipe Pipe => this;

        public PipeReader Input => _input;

        public PipeWriter Output => inner.Pipe.Output;

        public string RemoteAddress => inner.RemoteAddress;

        public string LocalAddress => inner.LocalAddress;

        public bool HasUnreadInput => _input.PutBack || inner.HasUnreadInput;

        public TimeSpan? HandshakeRtt => inner.HandshakeRtt;

        public bool MeasuresHandshake => inner.MeasuresHandshake;

        public ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken) => inner.SendAsync(buffers, cancellationToken);

        public ValueTask CloseOutputAsync() => inner.CloseOutputAsync();

        public void Abort() => inner.Abort();

        public void AbortWith(ReadOnlySpan<byte> lastFrame) => inner.AbortWith(lastFrame);

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    /// <summary>
    /// A reader that shows nothing while its transport is held, then what waited. A read already
    /// waiting for bytes when the hold began shows none of those that come while it lasts: they are
    /// put back, unread (<see cref="PutBack"/>), until the hold ends.
    /// </summary>
    private sealed class HeldReader(PipeReader inner, HeldReadingTransport owner) : PipeReader
    {
        private volatile bool _putBack;

        /// <summary>Bytes a read got while held wait to be shown.</summary>
        public bool PutBack => _putBack;

        public override bool TryRead(out ReadResult result)
        {
            result = default;
            if (owner.Held || !inner.TryRead(out result)) return false;
            _putBack = false;
            return true;
        }

        public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            while (true)
            {
                await owner._released.Task.WaitAsync(cancellationToken);
                var result = await inner.ReadAsync(cancellationToken);
                if (!owner.Held || result.IsCompleted || result.IsCanceled)
                {
                    _putBack = false;
                    return result;
                }
                _putBack = true;
                inner.AdvanceTo(result.Buffer.Start);
            }
        }

        public override void AdvanceTo(SequencePosition consumed) => inner.AdvanceTo(consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => inner.AdvanceTo(consumed, examined);

        public override void CancelPendingRead() => inner.CancelPendingRead();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);
    }
}

using System.Buffers;
using System.IO.Pipelines;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// Rewrites one frame a node is about to send to a child: returns the frames to send instead
/// (the same frame, a changed one, several, or none). Called on the connection's pump, in order.
/// </summary>
public delegate IEnumerable<byte[]> FrameRewriter(FrameType type, byte[] frame);

/// <summary>
/// The network of a lying relay: wraps a host's transport so that every connection it accepts
/// (its children's) goes through <see cref="FrameRewriter"/> on the way out. The node behind it is
/// a real, honest <see cref="ShardStream.Nodes.Peer"/> that joined like any viewer; only what it
/// sends its children is rewritten, frame by frame, after it left the node. What it receives and
/// what it sends its parents and the coordinator are untouched (with <see cref="Opened"/>, the
/// other way round).
/// </summary>
public sealed class TamperingTransport(ITransport inner, FrameRewriter rewrite) : ITransport
{
    /// <summary>Whether to rewrite now; the attack starts when the test flips it.</summary>
    public volatile bool Active;

    /// <summary>When set, only connections from this host are rewritten (the others are served honestly).</summary>
    public volatile string? OnlyTo;

    /// <summary>
    /// Rewrites what the node sends on the connections it opens (to the coordinator, its parents,
    /// the nodes it measures) instead of what it sends its children: a liar about itself.
    /// </summary>
    public bool Opened { get; init; }

    /// <summary>
    /// When set, each connection gets a rewriter of its own from it (one that keeps state of its
    /// connection, as frames it holds back), in place of the one given at construction.
    /// </summary>
    public Func<FrameRewriter>? PerConnection { get; init; }

    /// <summary>Frames rewritten so far (at least one byte changed, dropped or added).</summary>
    public int Rewritten => Volatile.Read(ref _rewritten);

    private int _rewritten;

    public async ValueTask<IConnectionListener> ListenAsync(string address, CancellationToken cancellationToken)
    {
        var listener = await inner.ListenAsync(address, cancellationToken);
        return Opened ? listener : new Listener(listener, this);
    }

    public async ValueTask<IConnection> ConnectAsync(string address, CancellationToken cancellationToken)
    {
        var connection = await inner.ConnectAsync(address, cancellationToken);
        return Opened ? new Connection(connection, this) : connection;
    }

    private IEnumerable<byte[]> Rewrite(FrameType type, byte[] frame, string remote, FrameRewriter? own)
    {
        if (!Active || (OnlyTo is { } only && remote != only)) return [frame];
        byte[] original = frame.ToArray();
        var result = (own ?? rewrite)(type, frame).ToList();
        frame = original;
        if (result.Count != 1 || !result[0].AsSpan().SequenceEqual(frame)) Interlocked.Increment(ref _rewritten);
        return result;
    }

    private sealed class Listener(IConnectionListener inner, TamperingTransport owner) : IConnectionListener
    {
        public string LocalAddress => inner.LocalAddress;

        public async ValueTask<IConnection?> AcceptAsync(CancellationToken cancellationToken)
        {
            var connection = await inner.AcceptAsync(cancellationToken);
            return connection is null ? null : new Connection(connection, owner);
        }

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    /// <summary>The node writes into a pipe of ours; a pump cuts it into frames, rewrites them and sends them on.</summary>
    private sealed class Connection : IConnection, IDuplexPipe
    {
        private readonly IConnection _inner;
        private readonly TamperingTransport _owner;
        private readonly Pipe _outgoing = new(new PipeOptions(pauseWriterThreshold: 0));
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _pump;
        private readonly FrameRewriter? _rewrite;

        public Connection(IConnection inner, TamperingTransport owner)
        {
            _inner = inner;
            _owner = owner;
            _rewrite = owner.PerConnection?.Invoke();
            _pump = Task.Run(PumpAsync);
        }

        public IDuplexPipe Pipe => this;

        public PipeReader Input => _inner.Pipe.Input;

        public PipeWriter Output => _outgoing.Writer;

        public string RemoteAddress => _inner.RemoteAddress;

        public bool HasUnreadInput => _inner.HasUnreadInput;

        public TimeSpan? HandshakeRtt => _inner.HandshakeRtt;

        public bool MeasuresHandshake => _inner.MeasuresHandshake;

        public async ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken)
        {
            foreach (var b in buffers) _outgoing.Writer.Write(b);
            await _outgoing.Writer.FlushAsync(cancellationToken);
        }

        public async ValueTask CloseOutputAsync()
        {
            await _outgoing.Writer.CompleteAsync();
            try
            {
                await _pump;
            }
            catch (Exception)
            {
                // The pump ends with the connection.
            }
            await _inner.CloseOutputAsync();
        }

        public void Abort()
        {
            _outgoing.Writer.Complete();
            _inner.Abort();
        }

        public async ValueTask DisposeAsync()
        {
            _outgoing.Writer.Complete();
            // The pump writes into the inner connection's pipe: disposing it completes that pipe,
            // which (its reader gone after a reset) hands its buffers back to the shared pool. A
            // frame the pump was still copying then went into a buffer another connection of the
            // process had rented meanwhile (a viewer read "frame of 1089622524 bytes" on its
            // control link after its stale parent's link was reset). The pump ends first.
            // It is stopped, not left to drain what the node wrote and it has not sent yet: the
            // node's one caller of this, FramedConnection.DisposeAsync, has always aborted the
            // connection before (its Finish calls Abort, which resets the inner connection), and an
            // abort drops anything unsent (IConnection.Abort), so a drain would deliver nothing
            // more. A graceful close drains: CloseOutputAsync waits for the pump.
            await _stop.CancelAsync();
            try
            {
                await _pump;
            }
            catch (Exception)
            {
                // Stopped, or ended with the connection.
            }
            await _inner.DisposeAsync();
        }

        private async Task PumpAsync()
        {
            var reader = _outgoing.Reader;
            var output = _inner.Pipe.Output;
            while (true)
            {
                var result = await reader.ReadAsync(_stop.Token);
                var buffer = result.Buffer;
                while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
                {
                    byte[] frame = new byte[Protocol.FrameHeaderLength + body.Length];
                    FrameCodec.WriteHeader(new SpanBufferWriter(frame), type, (int)body.Length);
                    body.CopyTo(frame.AsSpan(Protocol.FrameHeaderLength));
                    foreach (var f in _owner.Rewrite(type, frame, _inner.RemoteAddress, _rewrite)) output.Write(f);
                }
                reader.AdvanceTo(buffer.Start, buffer.End);
                var flush = await output.FlushAsync(_stop.Token);
                if (result.IsCompleted || flush.IsCompleted) return;
            }
        }
    }

    private sealed class SpanBufferWriter(byte[] target) : IBufferWriter<byte>
    {
        private int _written;

        public void Advance(int count) => _written += count;

        public Memory<byte> GetMemory(int sizeHint = 0) => target.AsMemory(_written);

        public Span<byte> GetSpan(int sizeHint = 0) => target.AsSpan(_written);
    }
}

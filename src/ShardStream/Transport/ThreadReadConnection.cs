using System.IO.Pipelines;
using System.Net.Sockets;

namespace ShardStream.Transport;

/// <summary>
/// An accepted TCP connection read by a thread of its own: the thread blocks in the socket's
/// receive, writes what came into <see cref="Input"/> and flushes it, and the input's reader runs
/// inline in that flush (<see cref="PipeScheduler.Inline"/>). A read then wakes one thread, the
/// one that acts on it, where a socket read through .NET's event loop wakes its epoll thread,
/// which hands the completion to a thread of the pool, which wakes one more
/// (docs/performance.md#rtmp-ingest-issue-11). For that the socket must stay a blocking one: .NET
/// makes a socket non-blocking for good at its first asynchronous operation, and its blocking
/// calls then wait on the epoll thread. So <see cref="Output"/> writes with blocking sends, on the
/// thread that flushes it, each bounded by <see cref="SendTimeout"/>: for a connection that
/// receives far more than it sends (a publisher gets acknowledgements and command answers).
/// </summary>
internal sealed class ThreadReadConnection : SocketConnection
{
    /// <summary>A blocking send that takes longer than this fails, and the connection with it.</summary>
    public static readonly TimeSpan SendTimeout = TimeSpan.FromSeconds(30);

    private const int ReadSize = 64 * 1024;
    private readonly Pipe _input = new(new PipeOptions(readerScheduler: PipeScheduler.Inline, writerScheduler: PipeScheduler.Inline,
        pauseWriterThreshold: 4 << 20, resumeWriterThreshold: 2 << 20, minimumSegmentSize: ReadSize, useSynchronizationContext: false));

    public ThreadReadConnection(Socket socket, string remoteAddress)
        : base(socket, remoteAddress)
    {
        Socket.SendTimeout = (int)SendTimeout.TotalMilliseconds;
        Output = PipeWriter.Create(new BlockingWriteStream(Stream), new StreamPipeWriterOptions(minimumBufferSize: 16 * 1024, leaveOpen: true));
        var reader = new Thread(ReadLoop) { IsBackground = true, Name = "tcp reader" };
        reader.Start();
    }

    public override PipeReader Input => _input.Reader;

    public override PipeWriter Output { get; }

    private void ReadLoop()
    {
        var writer = _input.Writer;
        Exception? failure = null;
        try
        {
            while (true)
            {
                int n = Socket.Receive(writer.GetMemory(ReadSize).Span);
                if (n == 0) break;
                writer.Advance(n);
                var flush = writer.FlushAsync();
                var result = flush.IsCompleted ? flush.Result : flush.AsTask().GetAwaiter().GetResult();
                if (result.IsCompleted) break; // the reader is done
            }
        }
        catch (Exception e)
        {
            // Closed here (no failure), or reset: the reader sees the failure a stream's read would give.
            if (!IsClosed) failure = e as IOException ?? new IOException(e.Message, e);
        }
        writer.Complete(failure);
    }

    public override ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken)
    {
        Socket.Send(buffers);
        return ValueTask.CompletedTask;
    }

    /// <summary>Writes with the socket's blocking send: no asynchronous operation ever makes the socket non-blocking.</summary>
    private sealed class BlockingWriteStream(NetworkStream inner) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            inner.Write(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        {
            inner.Write(buffer, offset, count);
            return Task.CompletedTask;
        }
    }
}

using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Transport;

/// <summary>Inline sends (a producer that finds the writer idle sends one batch itself): races between an inline sender, SendAhead and the write loop.</summary>
public sealed class InlineSendTests(ITestOutputHelper output)
{
    /// <summary>A connection that records what is sent, completes every send at once, and notes overlapping sends.</summary>
    private sealed class RecordingConnection : IConnection, IDuplexPipe
    {
        private readonly Pipe _in = new();
        private readonly Pipe _out = new();
        private int _inSend;
        public int Overlaps;
        public readonly HashSet<byte[]> SeenFrames = new(ReferenceEqualityComparer.Instance);
        public long Sends;
        public readonly List<byte[]> Order = [];
        public Action? DuringSend { get; set; }
        public Func<ValueTask>? Result { get; set; }

        public IDuplexPipe Pipe => this;
        public PipeReader Input => _in.Reader;
        public PipeWriter Output => _out.Writer;
        public string RemoteAddress => "fake";
        public TimeSpan? HandshakeRtt => null;
        public bool MeasuresHandshake => false;

        public ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _inSend) != 1) Interlocked.Increment(ref Overlaps);
            lock (SeenFrames)
            {
                foreach (var b in buffers)
                    if (b.Array is { } a && b.Offset == 0 && b.Count == a.Length)
                    {
                        SeenFrames.Add(a);
                        Order.Add(a);
                    }
                Sends++;
            }
            DuringSend?.Invoke();
            var result = Result?.Invoke() ?? ValueTask.CompletedTask;
            if (result.IsCompleted) Interlocked.Decrement(ref _inSend);
            else result = Done(result);
            return result;
        }

        private async ValueTask Done(ValueTask send)
        {
            try
            {
                await send;
            }
            finally
            {
                Interlocked.Decrement(ref _inSend);
            }
        }

        public bool Saw(byte[] frame)
        {
            lock (SeenFrames) return SeenFrames.Contains(frame);
        }

        public ValueTask CloseOutputAsync() => ValueTask.CompletedTask;

        public void Abort() => _in.Writer.Complete();

        public ValueTask DisposeAsync()
        {
            _in.Writer.Complete();
            return ValueTask.CompletedTask;
        }
    }

    private static FramedConnection Started(RecordingConnection fake)
    {
        var c = new FramedConnection(fake, "child", TimeSpan.FromSeconds(1), NullLogger.Instance, TimeProvider.System);
        c.Start((_, _) => { }, _ => { }, () => { });
        return c;
    }

    private static Chunk NewChunk(long seq)
    {
        var chunk = Chunk.Rent(1024);
        chunk.Set(0, seq, seq * 1024, 1024);
        return chunk;
    }

    private static byte[] MoveFrame(int i) => FrameWriting.ToArray(new Goodbye(GoodbyeCode.Normal, $"stand-in for a Move {i}").Write);

    /// <summary>
    /// A frame sent ahead (a repair's Move) while the source's thread sends a chunk inline: it must
    /// go out without waiting for another item to be queued. SendInline parks after one batch with
    /// Park(), which looks at the queue only; when TakeBatch consumed SendAhead's wake-up item but
    /// the frame reached _ahead after TakeBatch had drained it, the frame is stranded in _ahead.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_frame_sent_ahead_during_an_inline_send_is_not_stranded(bool inline)
    {
        await using var fakeOwner = new AsyncDisposableBox();
        var fake = new RecordingConnection();
        var connection = Started(fake);
        fakeOwner.Add(connection);
        // A first quick send: the receiver is not slow, batches take more than one item.
        var first = NewChunk(0);
        Assert.True(connection.TrySend(first, long.MaxValue, out _, sendInline: true));
        first.Release();

        int iterations = 0, stranded = -1;
        int late = 0;
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(8);
        var start = new Barrier(2);
        var random = new Random(1);
        while (DateTime.UtcNow < until && stranded < 0)
        {
            iterations++;
            var chunk = NewChunk(iterations);
            var move = MoveFrame(iterations);
            int spinP = random.Next(0, 200), spinX = random.Next(0, 200);
            var p = new Thread(() =>
            {
                start.SignalAndWait();
                Thread.SpinWait(spinP);
                connection.TrySend(chunk, long.MaxValue, out _, sendInline: inline);
            });
            var x = new Thread(() =>
            {
                start.SignalAndWait();
                Thread.SpinWait(spinX);
                connection.SendAhead(move);
            });
            p.Start();
            x.Start();
            p.Join();
            x.Join();
            chunk.Release();
            var deadline = DateTime.UtcNow + TimeSpan.FromMilliseconds(500);
            while (!fake.Saw(move) && DateTime.UtcNow < deadline) await Task.Delay(1);
            if (!fake.Saw(move))
            {
                // Slow scheduling (2 shared cores) or stranded? Nothing else is queued: a live writer sends it within seconds.
                var patience = DateTime.UtcNow + TimeSpan.FromSeconds(5);
                while (!fake.Saw(move) && DateTime.UtcNow < patience) await Task.Delay(10);
                if (fake.Saw(move))
                {
                    late++;
                    continue;
                }
                stranded = iterations;
            }
        }
        output.WriteLine($"inline={inline}: {iterations} iterations, overlapping sends: {fake.Overlaps}, stranded at iteration {stranded}, late (sent after 0.5-5 s): {late}");
        Assert.Equal(0, fake.Overlaps);
        Assert.True(stranded < 0, $"a frame sent ahead waited more than 500 ms with the writer idle (iteration {stranded} of {iterations}): it stays in _ahead until something else is queued");
    }

    /// <summary>A child's socket that fails at once: the producer (the source's thread) sees nothing of it; the link ends.</summary>
    [Fact]
    public async Task A_send_that_throws_on_the_producers_thread_ends_only_that_link()
    {
        var fake = new RecordingConnection { Result = () => throw new System.Net.Sockets.SocketException(104) };
        await using var connection = Started(fake);
        var chunk = NewChunk(0);
        Assert.True(connection.TrySend(chunk, long.MaxValue, out _, sendInline: true));
        chunk.Release();
        var reason = await connection.Closed.WaitAsync(TimeSpan.FromSeconds(10));
        output.WriteLine(reason.Text);
        Assert.Equal(CloseCode.ConnectionLost, reason.Code);
    }

    /// <summary>A send that cannot complete (a full socket): the producer returns at once, later chunks queue, no two sends overlap, a close goes out after it.</summary>
    [Fact]
    public async Task A_pending_inline_send_never_blocks_the_producer_and_the_goodbye_follows_it()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var fake = new RecordingConnection();
        fake.Result = () => fake.Sends == 1 ? new ValueTask(gate.Task) : ValueTask.CompletedTask;
        await using var connection = Started(fake);
        // The first send stays pending until the test lets it go (below): a producer that waited
        // for it would never be done, so being done while it is held is the check (not a time,
        // which a stalled machine can make as long as it likes).
        var producing = Task.Run(() =>
        {
            for (int i = 0; i < 20; i++)
            {
                var chunk = NewChunk(i);
                Assert.True(connection.TrySend(chunk, long.MaxValue, out _, sendInline: true));
                chunk.Release();
            }
        });
        var first = await Task.WhenAny(producing, Task.Delay(PipeIo.Deadline));
        Assert.True(first == producing, $"the producer was still in its 20 TrySend calls {PipeIo.Deadline.TotalSeconds} s later, while the first send was pending");
        await producing;
        Assert.Equal(1, fake.Sends);
        var closing = connection.CloseAsync(GoodbyeCode.TooSlow, "too slow");
        await Task.Delay(100);
        Assert.Equal(1, fake.Sends);
        gate.SetResult();
        await closing.WaitAsync(TimeSpan.FromSeconds(20));
        output.WriteLine($"sends: {fake.Sends}, overlaps: {fake.Overlaps}");
        Assert.Equal(0, fake.Overlaps);
        // The queued chunks were skipped: the goodbye was the next (and last) send.
        Assert.Equal(2, fake.Sends);
    }

    private sealed class AsyncDisposableBox : IAsyncDisposable
    {
        private readonly List<IAsyncDisposable> _items = [];
        public void Add(IAsyncDisposable item) => _items.Add(item);
        public async ValueTask DisposeAsync()
        {
            foreach (var item in _items) await item.DisposeAsync();
        }
    }
}

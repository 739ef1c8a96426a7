using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Transport;

/// <summary>
/// The writer's parking (WakeSignal) against every way a link ends: frames queued and chunks sent
/// inline on one thread while another closes (gracefully, timed out, or aborted). Each time the
/// link finishes closing (its writer ends), no two sends overlap (the close also wakes a parked
/// writer while an inline send may own it: the writer must then see the stop and send nothing),
/// and nothing follows a goodbye.
/// </summary>
public sealed class WriterCloseRaceTests(ITestOutputHelper output)
{
    private sealed class Recording : IConnection, IDuplexPipe
    {
        private readonly Pipe _in = new();
        private readonly Pipe _out = new();
        private int _inSend;
        public int Overlaps;
        public int AfterGoodbye;
        private bool _goodbyeSeen;
        public bool Pending;

        public IDuplexPipe Pipe => this;
        public PipeReader Input => _in.Reader;
        public PipeWriter Output => _out.Writer;
        public string RemoteAddress => "fake";
        public TimeSpan? HandshakeRtt => null;
        public bool MeasuresHandshake => false;

        public ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _inSend) != 1) Interlocked.Increment(ref Overlaps);
            lock (this)
            {
                foreach (var b in buffers)
                {
                    if (_goodbyeSeen) AfterGoodbye++;
                    // A whole control frame whose type byte says goodbye.
                    if (b.Array is { } a && b.Offset == 0 && b.Count == a.Length && a.Length > Protocol.FrameHeaderLength && a[4] == (byte)FrameType.Goodbye) _goodbyeSeen = true;
                }
            }
            if (Pending)
            {
                // A full socket: the send waits until the connection is reset.
                return Wait(cancellationToken);
            }
            Interlocked.Decrement(ref _inSend);
            return ValueTask.CompletedTask;
        }

        private async ValueTask Wait(CancellationToken cancellationToken)
        {
            try
            {
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }
            finally
            {
                Interlocked.Decrement(ref _inSend);
            }
        }

        public ValueTask CloseOutputAsync() => ValueTask.CompletedTask;

        public void Abort() => _in.Writer.Complete();

        public ValueTask DisposeAsync()
        {
            _in.Writer.Complete();
            return ValueTask.CompletedTask;
        }
    }

    private static Chunk NewChunk(long seq)
    {
        var chunk = Chunk.Rent(256);
        chunk.Set(0, seq, seq * 256, 256);
        return chunk;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_link_closed_while_its_writer_runs_or_parks_always_finishes_closing(int how)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(3);
        int iterations = 0;
        var random = new Random(how);
        while (DateTime.UtcNow < until || iterations < 50)
        {
            iterations++;
            var fake = new Recording { Pending = random.Next(4) == 0 };
            var c = new FramedConnection(fake, "race", TimeSpan.FromSeconds(30), NullLogger.Instance, TimeProvider.System);
            c.Start((_, _) => { }, _ => { }, () => { });
            int spinP = random.Next(0, 400), spinC = random.Next(0, 400);
            bool inline = random.Next(2) == 0;
            var start = new Barrier(2);
            Task? closing = null;
            var p = new Thread(() =>
            {
                start.SignalAndWait();
                Thread.SpinWait(spinP);
                for (int i = 0; i < 4; i++)
                {
                    var chunk = NewChunk(i);
                    c.TrySend(chunk, long.MaxValue, out _, sendInline: inline);
                    chunk.Release();
                    c.Send(FrameWriting.ToArray(new Heartbeat((ulong)i).Write));
                }
            });
            var x = new Thread(() =>
            {
                start.SignalAndWait();
                Thread.SpinWait(spinC);
                if (how == 2) c.Abort(new CloseReason(CloseCode.Aborted, "test"));
                else closing = c.CloseAsync(how == 0 ? GoodbyeCode.Normal : GoodbyeCode.Timeout, "test");
            });
            p.Start();
            x.Start();
            p.Join();
            x.Join();
            // A pending send (a full socket) holds a graceful close until its timeout: end it as the owner would.
            if (fake.Pending && how == 0) c.Abort(new CloseReason(CloseCode.Aborted, "test gives up"));
            var done = Task.WhenAll(closing ?? Task.CompletedTask, c.Closed, c.DisposeAsync().AsTask());
            if (await Task.WhenAny(done, Task.Delay(TimeSpan.FromSeconds(20))) != done)
                Assert.Fail($"iteration {iterations} (pending {fake.Pending}, inline {inline}): the link never finished closing");
            Assert.Equal(0, fake.Overlaps);
            Assert.Equal(0, fake.AfterGoodbye);
        }
        output.WriteLine($"{iterations} iterations");
    }
}

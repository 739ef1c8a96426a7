using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Connections that never say hello (or say it one byte at a time) cost a node a bounded amount
/// and for a bounded time, and a failing accept does not stop the node accepting.
/// </summary>
public sealed class AdmissionTests
{
    [Fact]
    public async Task Accept_goes_on_after_it_fails_and_a_peer_then_joins_and_streams()
    {
        var net = new VirtualNetwork();
        var flaky = new FlakyAcceptTransport(net.Host("coord"), failures: 3);
        var options = new CoordinatorOptions { ListenAddress = "coord:1", MinPeers = 1 };
        await using var coordinator = new Coordinator(options, flaky);
        await coordinator.StartAsync(default);
        await using var peer = new Peer(new PeerOptions { JoinAddress = coordinator.ListenAddress, ListenAddress = "p:1" }, net.Host("p"));
        await peer.StartAsync(default).WaitAsync(Overlay.Deadline);

        var source = Overlay.RandomBytes(100_000, 3);
        var output = new MemoryStream();
        var run = peer.RunAsync(output, default);
        await coordinator.RunAsync(new MemoryStream(source), default).WaitAsync(Overlay.Deadline);
        await run.WaitAsync(Overlay.Deadline);
        Assert.Equal(source, output.ToArray());
        Assert.True(flaky.FailuresLeft < 0, "the failing accepts were tried");
    }

    [Fact]
    public async Task A_connection_that_trickles_its_hello_is_closed_at_the_hello_deadline()
    {
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", HelloTimeout = TimeSpan.FromSeconds(1), HeartbeatTimeout = TimeSpan.FromSeconds(60) }, net.Host("coord"));
        await coordinator.StartAsync(default);
        var loris = await net.Host("loris").ConnectAsync(coordinator.ListenAddress, default);
        var hello = FrameBytes(new Hello(Protocol.Version, Protocol.Version, HelloRole.Join, 0, Hello.DefaultUpload, [], "loris:1").Write);
        var closed = ClosedAsync(loris);
        // One byte every 250 ms: a whole hello would take 14 s; the deadline is one.
        foreach (byte b in hello[..^1])
        {
            if (closed.IsCompleted) break;
            try
            {
                await loris.Pipe.Output.WriteAsync(new[] { b });
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
                break; // closed under our feet
            }
            await Task.Delay(250);
        }
        // Its last byte never comes: a coordinator that has not closed by now waits forever, and a
        // loaded one may close late (a wait of 1 s here was a timed assert): a generous wait.
        await Task.WhenAny(closed, Task.Delay(Overlay.Deadline));
        Assert.True(closed.IsCompleted, "the coordinator still waits for a hello trickled for longer than its hello deadline");
    }

    [Fact]
    public async Task Over_the_cap_the_oldest_silent_connections_are_dropped_and_an_honest_peer_still_joins()
    {
        var net = new VirtualNetwork();
        var options = new CoordinatorOptions { ListenAddress = "coord:1", MinPeers = 1, HelloTimeout = TimeSpan.FromMinutes(5), MaxPendingHellos = 4 };
        await using var coordinator = new Coordinator(options, net.Host("coord"));
        await coordinator.StartAsync(default);
        var silent = new List<IConnection>();
        for (int i = 0; i < 20; i++) silent.Add(await net.Host($"silent{i}").ConnectAsync(coordinator.ListenAddress, default));
        var closed = silent.Select(ClosedAsync).ToList();
        await Overlay.WaitUntilAsync(() => closed.Count(c => c.IsCompleted) >= 16, "all but 4 silent connections are closed");

        await using var peer = new Peer(new PeerOptions { JoinAddress = coordinator.ListenAddress, ListenAddress = "p:1" }, net.Host("p"));
        await peer.StartAsync(default).WaitAsync(Overlay.Deadline);
        var source = Overlay.RandomBytes(50_000, 4);
        var output = new MemoryStream();
        var run = peer.RunAsync(output, default);
        await coordinator.RunAsync(new MemoryStream(source), default).WaitAsync(Overlay.Deadline);
        await run.WaitAsync(Overlay.Deadline);
        Assert.Equal(source, output.ToArray());
        // The newest four were not dropped for the old ones.
        Assert.All(closed.TakeLast(3), c => Assert.False(c.IsCompleted));
    }

    [Fact]
    public async Task One_address_may_keep_only_its_cap_of_connections_waiting_for_a_hello()
    {
        var net = new VirtualNetwork();
        var options = new CoordinatorOptions { ListenAddress = "coord:1", HelloTimeout = TimeSpan.FromMinutes(5), MaxPendingHellosPerAddress = 2 };
        await using var coordinator = new Coordinator(options, net.Host("coord"));
        await coordinator.StartAsync(default);
        var closed = new List<Task>();
        for (int i = 0; i < 10; i++) closed.Add(ClosedAsync(await net.Host("one").ConnectAsync(coordinator.ListenAddress, default)));
        var other = ClosedAsync(await net.Host("two").ConnectAsync(coordinator.ListenAddress, default));
        await Overlay.WaitUntilAsync(() => closed.Count(c => c.IsCompleted) >= 8, "all but 2 of one address's connections are closed");
        Assert.False(other.IsCompleted);
    }

    /// <summary>
    /// Event 9104 is said at most once per 10 s, with the running count. A flood that comes in one
    /// burst was said as its first drop only ("1 connection(s) dropped so far") and never again,
    /// however many followed (seen in the security.md audit: 4,936 of 5,000 connections from one
    /// address dropped, one line saying 1). The drops after a line are said when the 10 s are up.
    /// </summary>
    [Fact]
    public async Task Connections_dropped_in_one_burst_are_all_counted_in_the_log_once_ten_seconds_are_up()
    {
        var net = new VirtualNetwork();
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var log = new RecordingLogger();
        var options = new CoordinatorOptions { ListenAddress = "coord:1", HelloTimeout = TimeSpan.FromMinutes(5), MaxPendingHellosPerAddress = 2 };
        await using var coordinator = new Coordinator(options, net.Host("coord"), log, time);
        await coordinator.StartAsync(default);
        var closed = new List<Task>();
        for (int i = 0; i < 10; i++) closed.Add(ClosedAsync(await net.Host("one").ConnectAsync(coordinator.ListenAddress, default)));
        await Overlay.WaitUntilAsync(() => closed.Count(c => c.IsCompleted) >= 8, "all but 2 of one address's connections are closed");
        string[] Said() => [.. log.Lines.Where(l => l.Id.Id == 9104).Select(l => l.Message)];
        // Said at once, before any time passes. A drop is noted where its waiter's read ends: on
        // the accept loop's thread when that continuation runs inline (then the first line says 1),
        // or on another thread, which may count drops into the first line before it reads the count
        // (it says 2 or more; all 8, and there is no second line). Asserting "1", then exactly a
        // second line, failed now and then (once at load 30-60, on main and with ThrottledCount).
        await Overlay.WaitUntilAsync(() => Said().Length >= 1, "the first drop is said at once");
        Assert.Matches(@"^[1-8] connection\(s\) dropped so far", Said()[0]);
        time.Advance(TimeSpan.FromSeconds(10.5));
        await Overlay.WaitUntilAsync(() => Said().Any(l => l.StartsWith("8 connection(s) dropped so far", StringComparison.Ordinal)),
            "every drop is said once the 10 s are up", TimeSpan.FromSeconds(10));
        Assert.True(Said().Length <= 2, $"a burst said in more than two lines: {string.Join(" | ", Said())}");
    }

    [Fact]
    public async Task A_first_frame_longer_than_any_hello_is_refused_before_it_is_buffered()
    {
        await using var overlay = await Overlay.StartAsync(1);
        var connection = await overlay.Network.Host("big").ConnectAsync(overlay.Coordinator.ListenAddress, default);
        FrameCodec.WriteHeader(connection.Pipe.Output, FrameType.Hello, 60_000);
        await connection.Pipe.Output.FlushAsync();
        var answer = await Transport.PipeIo.ReadToEndAsync(connection.Pipe.Input);
        var buffer = new System.Buffers.ReadOnlySequence<byte>(answer);
        Assert.True(FrameCodec.TryReadFrame(ref buffer, out var type, out var body));
        Assert.Equal(FrameType.Goodbye, type);
        var reader = new System.Buffers.SequenceReader<byte>(body);
        Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
        Assert.Contains($"over the limit of {Hello.MaxFrameLength}", goodbye.Reason);
    }

    /// <summary>
    /// Garbage at the overlay port, from any stranger, again and again: each connection is refused
    /// with a goodbye, and the refusals are counted in one line per 10 s (event 9106). Before, each
    /// had its own warning: 300 garbage connections in the stranger audit (docs/security.md) wrote
    /// 104 lines "incoming …: refused: a first frame of N bytes is over the limit".
    /// </summary>
    [Fact]
    public async Task Connections_whose_first_frame_is_garbage_are_refused_and_counted_in_one_line_per_ten_seconds()
    {
        var net = new VirtualNetwork();
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var log = new RecordingLogger();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1" }, net.Host("coord"), log, time);
        await coordinator.StartAsync(default);
        var closed = new List<Task>();
        for (int i = 0; i < 10; i++)
        {
            var connection = await net.Host($"junk{i}").ConnectAsync(coordinator.ListenAddress, default);
            FrameCodec.WriteHeader(connection.Pipe.Output, FrameType.Hello, 60_000);
            await connection.Pipe.Output.FlushAsync();
            closed.Add(ClosedAsync(connection));
        }
        await Overlay.WaitUntilAsync(() => closed.All(c => c.IsCompleted), "every garbage connection is closed");
        string[] Said() => [.. log.Lines.Where(l => l.Level >= LogLevel.Warning).Select(l => l.Message)];
        await Overlay.WaitUntilAsync(() => Said().Length >= 1, "the first refusal is said at once");
        time.Advance(TimeSpan.FromSeconds(10.5));
        await Overlay.WaitUntilAsync(() => Said().Any(l => l.StartsWith("10 connection(s) refused so far for a first frame that is no hello", StringComparison.Ordinal)),
            "every refusal is said once the 10 s are up", TimeSpan.FromSeconds(10));
        Assert.True(Said().Length <= 2, $"10 garbage connections said in more than two lines: {string.Join(" | ", Said())}");
        Assert.Contains($"over the limit of {Hello.MaxFrameLength}", Said()[^1]);
    }

    private static byte[] FrameBytes(Action<System.Buffers.IBufferWriter<byte>> write)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        write(buffer);
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Completes when the other side has closed or reset the connection.</summary>
    private static async Task ClosedAsync(IConnection connection)
    {
        var input = connection.Pipe.Input;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync();
                input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted) return;
            }
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or OperationCanceledException)
        {
            // Reset: closed too.
        }
    }

    /// <summary>A transport whose listener fails its first accepts, as a listener out of file descriptors does.</summary>
    private sealed class FlakyAcceptTransport(ITransport inner, int failures) : ITransport
    {
        private int _failuresLeft = failures;

        public int FailuresLeft => Volatile.Read(ref _failuresLeft);

        public async ValueTask<IConnectionListener> ListenAsync(string address, CancellationToken cancellationToken) =>
            new Listener(await inner.ListenAsync(address, cancellationToken), this);

        public ValueTask<IConnection> ConnectAsync(string address, CancellationToken cancellationToken) => inner.ConnectAsync(address, cancellationToken);

        private sealed class Listener(IConnectionListener inner, FlakyAcceptTransport owner) : IConnectionListener
        {
            public string LocalAddress => inner.LocalAddress;

            public ValueTask<IConnection?> AcceptAsync(CancellationToken cancellationToken) =>
                Interlocked.Decrement(ref owner._failuresLeft) >= 0
                    ? throw new ConnectionFailedException("cannot accept: Too many open files (TooManyOpenSockets)")
                    : inner.AcceptAsync(cancellationToken);

            public ValueTask DisposeAsync() => inner.DisposeAsync();
        }
    }
}

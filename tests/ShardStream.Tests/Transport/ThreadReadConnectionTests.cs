using ShardStream.Transport;

namespace ShardStream.Tests.Transport;

/// <summary>
/// <see cref="TcpTransport.ReadingThreads"/>: accepted connections read by a thread of their own,
/// with the input's reader run on it (the coordinator's RTMP ingest).
/// </summary>
[Collection(ReceiveSlabCollection.Name)]
public class ThreadReadConnectionTests
{
    [Fact]
    public async Task A_large_transfer_arrives_intact_and_the_answer_goes_back()
    {
        await using var listener = await TcpTransport.ReadingThreads.ListenAsync("127.0.0.1:0", default);
        await using var client = await TcpTransport.Instance.ConnectAsync(listener.LocalAddress, default);
        await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);
        var payload = new byte[4 * 1024 * 1024];
        new Random(11).NextBytes(payload);

        var reading = PipeIo.ReadToEndAsync(server.Pipe.Input);
        await PipeIo.WriteAsync(client.Pipe.Output, payload);
        await client.CloseOutputAsync();
        Assert.Equal(payload, await reading.WaitAsync(PipeIo.Deadline));

        await PipeIo.WriteAsync(server.Pipe.Output, "pong"u8.ToArray());
        Assert.Equal("pong"u8.ToArray(), await PipeIo.ReadExactlyAsync(client.Pipe.Input, 4));
    }

    [Fact]
    public async Task A_read_is_acted_on_by_the_thread_that_received_it()
    {
        await using var listener = await TcpTransport.ReadingThreads.ListenAsync("127.0.0.1:0", default);
        await using var client = await TcpTransport.Instance.ConnectAsync(listener.LocalAddress, default);
        await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);

        // The reader waits before the bytes come (as the RTMP session does between reads): its
        // continuation is registered here, before the write, and must run on the reading thread.
        var pending = server.Pipe.Input.ReadAsync();
        Assert.False(pending.IsCompleted);
        string? thread = null;
        var acted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var awaiter = pending.GetAwaiter();
        awaiter.OnCompleted(() =>
        {
            thread = Thread.CurrentThread.Name;
            server.Pipe.Input.AdvanceTo(awaiter.GetResult().Buffer.End);
            acted.SetResult();
        });
        await PipeIo.WriteAsync(client.Pipe.Output, "ping"u8.ToArray());
        await acted.Task.WaitAsync(PipeIo.Deadline);
        Assert.Equal("tcp reader", thread);
    }

    [Fact]
    public async Task Its_reading_thread_ends_when_the_connection_is_aborted_or_the_other_side_closes()
    {
        await using var listener = await TcpTransport.ReadingThreads.ListenAsync("127.0.0.1:0", default);
        await using var client = await TcpTransport.Instance.ConnectAsync(listener.LocalAddress, default);
        await using var aborted = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        await using var closing = await TcpTransport.Instance.ConnectAsync(listener.LocalAddress, default);
        await using var closed = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(aborted);
        Assert.NotNull(closed);

        // Both reading threads are blocked in a receive; the input completes only when a thread ends.
        var first = aborted.Pipe.Input.ReadAsync().AsTask();
        var second = closed.Pipe.Input.ReadAsync().AsTask();
        aborted.Abort();
        Assert.True((await first.WaitAsync(PipeIo.Deadline)).IsCompleted);
        await closing.CloseOutputAsync();
        Assert.True((await second.WaitAsync(PipeIo.Deadline)).IsCompleted);
    }
}

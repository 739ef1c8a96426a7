using System.Buffers;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>A link that ends says why with a code its owner can match on, not only a text.</summary>
public sealed class LinkCloseReasonTests
{
    [Fact]
    public async Task A_frame_of_length_zero_ends_the_link_as_a_protocol_violation()
    {
        var (link, client) = await OpenAsync();
        await using var _ = link;
        // A length field of 0: no frame can be that short.
        await client.Pipe.Output.WriteAsync(new byte[] { 0, 0, 0, 0 });

        var reason = await link.Closed.WaitAsync(Overlay.Deadline);
        Assert.Equal(CloseCode.ProtocolViolation, reason.Code);
        Assert.True(reason.IsViolation);
        Assert.Equal("protocol error: frame with length 0", reason.Text);
        Assert.IsType<ProtocolException>(reason.Exception);
    }

    [Fact]
    public async Task A_goodbye_from_the_other_side_ends_the_link_with_its_words()
    {
        var (link, client) = await OpenAsync();
        await using var _ = link;
        new Goodbye(GoodbyeCode.Refused, "go away").Write(client.Pipe.Output);
        await client.Pipe.Output.FlushAsync();
        await client.CloseOutputAsync();

        var reason = await link.Closed.WaitAsync(Overlay.Deadline);
        Assert.Equal(CloseCode.Goodbye, reason.Code);
        Assert.False(reason.IsViolation);
        Assert.Equal("the other side said goodbye (Refused): go away", reason.Text);
        Assert.Equal(GoodbyeCode.Refused, link.ReceivedGoodbye);
    }

    [Fact]
    public async Task A_connection_closed_without_a_goodbye_is_told_from_one_this_side_ended()
    {
        var (remote, client) = await OpenAsync();
        await using var _ = remote;
        await client.CloseOutputAsync();
        Assert.Equal(CloseCode.RemoteClosed, (await remote.Closed.WaitAsync(Overlay.Deadline)).Code);

        var (aborted, _) = await OpenAsync();
        await using var __ = aborted;
        aborted.Abort("replaced");
        Assert.Equal(new CloseReason(CloseCode.Aborted, "replaced"), await aborted.Closed.WaitAsync(Overlay.Deadline));
    }

    [Fact]
    public async Task A_receiver_that_takes_nothing_is_cut_off_as_too_slow_once_its_queue_passes_the_limit()
    {
        var connection = new StuckConnection();
        var options = new LinkOptions { MaxQueuedBytes = 3000, CloseTimeout = TimeSpan.FromMilliseconds(200) };
        await using var link = new Link(connection, "slow child", options, NullLogger.Instance, TimeProvider.System);
        link.Start((_, _, _) => { });

        // The first chunk goes into a send that never completes; it still counts until it is sent.
        int queued = 0;
        for (int seq = 0; seq < 10; seq++)
        {
            var chunk = Chunk.Copy(0, seq, seq * 1000L, new ReadOnlySequence<byte>(new byte[1000]));
            bool taken = link.TrySend(chunk);
            chunk.Release();
            if (!taken) break;
            queued++;
        }

        Assert.Equal(3, queued);
        var reason = await link.Closed.WaitAsync(Overlay.Deadline);
        Assert.Equal(new CloseReason(CloseCode.TooSlow, "too slow: 3000 bytes waiting to be sent, the limit is 3000"), reason);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_receiver_cut_off_as_too_slow_that_then_reads_the_goodbye_and_closes_leaves_the_link_ended_as_too_slow(bool reset)
    {
        // A peer that could not keep up (a held-up process on a busy host) reads on once it is
        // cut off: the goodbye that says why, then it closes its side, or resets it. The link
        // still ended because this side cut it off: its owner must not take it for a link the
        // other side lost (the coordinator keeps such a peer's place for a rejoin, and the
        // drain after the end waited for it: FailureTests in CI).
        var net = new VirtualNetwork();
        var listener = await net.Host("a").ListenAsync("a:1", default);
        var client = await net.Host("b").ConnectAsync("a:1", default);
        var server = (await listener.AcceptAsync(default))!;
        await using var link = new Link(server, "slow child", new LinkOptions { MaxQueuedBytes = 256 * 1024 }, NullLogger.Instance, TimeProvider.System);
        link.Start((_, _, _) => { });

        // The virtual connection holds 1 MiB before sends wait; then 256 KiB queue and the link is cut off.
        var payload = new byte[64 * 1024];
        int sent = 0;
        for (int seq = 0; seq < 200; seq++)
        {
            var chunk = Chunk.Copy(0, seq, seq * (long)payload.Length, new ReadOnlySequence<byte>(payload));
            bool taken = link.TrySend(chunk);
            chunk.Release();
            if (!taken) break;
            sent++;
            // Let the writer move what it can into the connection before the next chunk.
            await Task.Yield();
        }
        Assert.True(sent < 200, "the link took 200 chunks of 64 KiB that nobody read");
        Assert.True(link.IsClosing, "the link is not closing after a chunk was refused");

        // Now the other side reads: whatever was in flight, then the goodbye.
        var goodbye = await RawFrames.ReadUntilGoodbyeAsync(client.Pipe.Input);
        Assert.Equal(GoodbyeCode.TooSlow, goodbye.Code);
        if (reset) client.Abort();
        else await client.CloseOutputAsync();

        var reason = await link.Closed.WaitAsync(Overlay.Deadline);
        Assert.Equal(CloseCode.TooSlow, reason.Code);
        Assert.StartsWith("too slow: ", reason.Text);
    }

    /// <summary>A connection whose sends never complete until it is aborted: a receiver that takes nothing.</summary>
    private sealed class StuckConnection : IConnection, IDuplexPipe
    {
        private readonly Pipe _in = new();
        private readonly Pipe _out = new();
        private readonly TaskCompletionSource _aborted = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public IDuplexPipe Pipe => this;

        public PipeReader Input => _in.Reader;

        public PipeWriter Output => _out.Writer;

        public string RemoteAddress => "test";

        public TimeSpan? HandshakeRtt => null;

        public bool MeasuresHandshake => false;

        public async ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken)
        {
            await _aborted.Task;
            throw new IOException("aborted");
        }

        public ValueTask CloseOutputAsync() => ValueTask.CompletedTask;

        public void Abort()
        {
            _aborted.TrySetResult();
            _in.Writer.Complete();
        }

        public ValueTask DisposeAsync()
        {
            Abort();
            return ValueTask.CompletedTask;
        }
    }

    private static async Task<(Link Link, IConnection Client)> OpenAsync()
    {
        var net = new VirtualNetwork();
        var listener = await net.Host("a").ListenAsync("a:1", default);
        var client = await net.Host("b").ConnectAsync("a:1", default);
        var server = (await listener.AcceptAsync(default))!;
        var link = new Link(server, "test link", new LinkOptions(), NullLogger.Instance, TimeProvider.System);
        link.Start((_, _, _) => { });
        return (link, client);
    }
}

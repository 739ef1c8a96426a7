using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

public sealed class LinkLivenessTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private readonly FakeTimeProvider _time = new(DateTimeOffset.UnixEpoch);

    [Fact]
    public async Task A_silent_link_is_closed_after_the_heartbeat_timeout()
    {
        var connection = new QuietConnection();
        await using var link = Start(connection);

        _time.Advance(TimeSpan.FromSeconds(4.5));
        link.Tick();
        Assert.False(link.Closed.IsCompleted);
        _time.Advance(TimeSpan.FromSeconds(0.5));
        link.Tick();

        var reason = await link.Closed.WaitAsync(Deadline);
        Assert.Equal(CloseCode.TimedOut, reason.Code);
        Assert.StartsWith("nothing heard for 5 s", reason.Text);
    }

    [Fact]
    public async Task A_silent_link_ticked_only_when_its_last_tick_said_is_closed_at_the_heartbeat_timeout_all_the_same()
    {
        // The node ticks a link only at the time its last tick returned, not every half interval:
        // that time must never be later than the heartbeats due or the silence that ends the link.
        var connection = new QuietConnection();
        await using var link = Start(connection);
        long start = _time.GetTimestamp();

        long next = link.Tick();
        var ticks = 1;
        while (!link.Closed.IsCompleted && ticks < 40)
        {
            Assert.True(next > _time.GetTimestamp(), "a tick returned a time that is not ahead");
            _time.Advance(_time.GetElapsedTime(_time.GetTimestamp(), next));
            next = link.Tick();
            ticks++;
        }

        var reason = await link.Closed.WaitAsync(Deadline);
        Assert.Equal(CloseCode.TimedOut, reason.Code);
        Assert.StartsWith("nothing heard for 5 s", reason.Text);
        Assert.Equal(TimeSpan.FromSeconds(5), _time.GetElapsedTime(start));
        // A heartbeat a second (1 s apart: nothing else is sent), and the one that finds it dead;
        // ticked every half interval it would have been 11 ticks.
        Assert.Equal(6, ticks);
        Assert.Equal(long.MaxValue, next);
    }

    [Fact]
    public async Task A_link_whose_other_side_sent_bytes_that_wait_unread_is_not_closed()
    {
        // A loaded process: the other side's heartbeats are in the socket, this side has not
        // read them yet. With fixed silences this link was closed after 5 s.
        var connection = new QuietConnection { HasUnreadInput = true };
        await using var link = Start(connection);

        for (var i = 0; i < 40; i++)
        {
            _time.Advance(TimeSpan.FromSeconds(0.5));
            link.Tick();
        }

        Assert.False(link.Closed.IsCompleted);
        Assert.False(link.SeemsDead);

        // Once nothing waits any more, the silence counts again, from the last sign of life, and
        // the link is closed at the ceiling at the latest (the gaps it saw were long: 5 s).
        connection.HasUnreadInput = false;
        var ticks = 0;
        while (!link.Closed.IsCompleted && ticks++ < 40)
        {
            _time.Advance(TimeSpan.FromSeconds(0.5));
            link.Tick();
        }

        var reason = await link.Closed.WaitAsync(Deadline);
        Assert.Equal(CloseCode.TimedOut, reason.Code);
        Assert.StartsWith("nothing heard for", reason.Text);
        Assert.InRange(ticks, 10, 40);
    }

    [Fact]
    public async Task The_longest_silence_closes_a_link_even_while_its_node_seems_stalled()
    {
        var connection = new QuietConnection();
        await using var link = Start(connection);

        _time.Advance(TimeSpan.FromSeconds(19.5));
        link.Tick(lenient: true);
        Assert.False(link.Closed.IsCompleted);
        _time.Advance(TimeSpan.FromSeconds(0.5));
        link.Tick(lenient: true);

        Assert.Equal(new CloseReason(CloseCode.TimedOut, "nothing heard for 20 s (the most any link may be silent)"), await link.Closed.WaitAsync(Deadline));
    }

    [Fact]
    public async Task Time_the_node_did_not_run_is_excused()
    {
        var connection = new QuietConnection();
        await using var link = Start(connection);

        _time.Advance(TimeSpan.FromSeconds(8));
        link.Excuse(TimeSpan.FromSeconds(7.5));
        link.Tick();

        Assert.False(link.Closed.IsCompleted);
        Assert.Equal(0.5, link.Silence.TotalSeconds, 3);
    }

    private Link Start(QuietConnection connection)
    {
        var options = new TestOptions().LinkOptions;
        var link = new Link(connection, "test link", options, NullLogger.Instance, _time);
        link.Start((_, _, _) => { });
        return link;
    }

    private sealed record TestOptions : NodeOptions;

    /// <summary>A connection on which nothing arrives; whether bytes "wait unread" is set by the test.</summary>
    private sealed class QuietConnection : IConnection, IDuplexPipe
    {
        private readonly Pipe _in = new();
        private readonly Pipe _out = new();

        public bool HasUnreadInput { get; set; }

        public IDuplexPipe Pipe => this;

        public PipeReader Input => _in.Reader;

        public PipeWriter Output => _out.Writer;

        public string RemoteAddress => "test";

        public ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public ValueTask CloseOutputAsync() => ValueTask.CompletedTask;

        public void Abort() => _in.Writer.Complete();

        public ValueTask DisposeAsync()
        {
            Abort();
            return ValueTask.CompletedTask;
        }
    }
}

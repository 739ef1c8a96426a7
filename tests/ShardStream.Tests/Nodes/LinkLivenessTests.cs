using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

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

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public async Task A_link_ticked_only_when_due_is_closed_on_the_same_tick_as_one_ticked_every_half_interval(int seed)
    {
        // Two links hear the same arrivals at the same times (irregular gaps, so that phi and not
        // only the floor decides; a heartbeat that lengthens the interval to 4 s, and often one
        // that shortens it to 1 s again; bytes waiting unread; time the node did not run; ticks
        // where the node is lenient), then silence. One is ticked every half interval, the other,
        // as the node does, only at the first half-interval tick at or after the time its last
        // tick returned, or at the next tick once its interval became shorter (the node gives it a
        // new slot then). They must be closed on the same tick for the same reason (a time
        // returned must never be later than the tick that acts), and a link that seems dead must
        // be due (the node's stall rule counts only the links due).
        var rng = new Random(seed);
        var every = new QuietConnection();
        var due = new QuietConnection();
        await using var a = Start(every);
        await using var b = Start(due);
        a.FollowHeartbeatRequests(TimeSpan.FromSeconds(5));
        b.FollowHeartbeatRequests(TimeSpan.FromSeconds(5));
        int shortenedB = 0;
        b.HeartbeatShortened = _ => Interlocked.Exchange(ref shortenedB, 1);
        var half = TimeSpan.FromSeconds(0.5);
        long start = _time.GetTimestamp();
        long keyB = start;
        int ticksA = 0, ticksB = 0;
        var silenceFrom = TimeSpan.FromSeconds(20 + (rng.NextDouble() * 20));
        var nextArrival = TimeSpan.FromSeconds(0.3);
        bool lengthened = false, shortened = false;
        for (var tick = 1; tick <= 400 && !a.IsClosing; tick++)
        {
            var at = half * tick;
            // Arrivals before this tick (never on a tick: an excuse there could hide one).
            while (nextArrival < at && nextArrival < silenceFrom)
            {
                var elapsed = _time.GetElapsedTime(start, _time.GetTimestamp());
                if (nextArrival > elapsed) _time.Advance(nextArrival - elapsed);
                ulong value = !lengthened && nextArrival > TimeSpan.FromSeconds(4) && rng.Next(4) == 0 ? 4000UL
                    : lengthened && !shortened && nextArrival > TimeSpan.FromSeconds(12) && rng.Next(3) == 0 ? 1000UL : 0UL;
                shortened |= value == 1000;
                lengthened |= value != 0;
                var frame = FrameWriting.ToArray(new Heartbeat(value).Write);
                await every.ArriveAsync(frame);
                await due.ArriveAsync(frame);
                await Overlay.WaitUntilAsync(() => a.Silence == TimeSpan.Zero && b.Silence == TimeSpan.Zero
                    && (value == 0 || (a.HeartbeatInterval == TimeSpan.FromMilliseconds(value) && b.HeartbeatInterval == TimeSpan.FromMilliseconds(value))), "both links read the arrival");
                var gap = rng.Next(6) == 0 ? 1.5 + (rng.NextDouble() * 3.5) : 0.2 + (rng.NextDouble() * 1.4);
                nextArrival += TimeSpan.FromSeconds(gap);
                if (nextArrival.Ticks % half.Ticks == 0) nextArrival += TimeSpan.FromMilliseconds(1);
            }
            _time.Advance(at - _time.GetElapsedTime(start, _time.GetTimestamp()));
            long tickAt = _time.GetTimestamp();
            // What the node does on every link: time it did not run excused, bytes seen waiting.
            if (rng.Next(12) == 0)
            {
                var paused = TimeSpan.FromSeconds(0.2 + (rng.NextDouble() * 3));
                a.Excuse(paused);
                b.Excuse(paused);
            }
            bool unread = at < silenceFrom && rng.Next(15) == 0;
            every.HasUnreadInput = due.HasUnreadInput = unread;
            bool lenient = rng.Next(5) == 0;
            if (Interlocked.Exchange(ref shortenedB, 0) == 1) keyB = Math.Min(keyB, tickAt);
            // The node counts silent links for its stall rule among the links due only.
            Assert.True(!b.SeemsDead || keyB <= tickAt, $"seed {seed}: at {at.TotalSeconds} s a link that seems dead is not due");
            a.Tick(lenient);
            ticksA++;
            if (keyB <= tickAt)
            {
                long next = b.Tick(lenient);
                ticksB++;
                keyB = next == long.MaxValue ? long.MaxValue : Math.Max(next, tickAt + 1);
            }
            Assert.True(a.IsClosing == b.IsClosing, $"seed {seed}: at {at.TotalSeconds} s the link ticked every half interval is {(a.IsClosing ? "" : "not ")}closing, the other is {(b.IsClosing ? "" : "not ")}");
        }

        Assert.True(a.IsClosing, "the silent link was never closed");
        var reasonA = await a.Closed.WaitAsync(Deadline);
        var reasonB = await b.Closed.WaitAsync(Deadline);
        Assert.Equal(reasonA, reasonB);
        Assert.Equal(CloseCode.TimedOut, reasonB.Code);
        Assert.True(ticksB < ticksA, $"ticked when due {ticksB} times, every half interval {ticksA}");
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
    public async Task Three_silent_links_of_three_started_are_a_stall_whatever_the_connections_still_waiting_for_a_hello()
    {
        // A coordinator in a join storm: 3 started links, all silent after its own stall, and 10
        // connections that have not started (waiting for a hello, or kept between a joiner's
        // landmark rounds), whose silence says nothing.
        var started = new List<Link>();
        for (int i = 0; i < 3; i++) started.Add(Start(new QuietConnection()));
        var waiting = new List<Link>();
        for (int i = 0; i < 10; i++) waiting.Add(new Link(new QuietConnection(), "incoming", new TestOptions().LinkOptions, NullLogger.Instance, _time));
        _time.Advance(TimeSpan.FromSeconds(6));
        Assert.All(started, l => Assert.True(l.SeemsDead));
        Assert.All(waiting, l => Assert.False(l.SeemsDead));

        Assert.True(Node.SeemsStalled([.. started, .. waiting], out int silent, out int count), "3 silent of 3 started links with 10 waiting were not taken for a stall");
        Assert.Equal((3, 3), (silent, count));
        // Half of the started links silent is a stall; fewer is not.
        Assert.True(Node.SeemsStalled([.. started, Start(new QuietConnection()), Start(new QuietConnection()), Start(new QuietConnection())], out _, out _));
        Assert.False(Node.SeemsStalled([.. started, Start(new QuietConnection()), Start(new QuietConnection()), Start(new QuietConnection()), Start(new QuietConnection())], out _, out _));
        Assert.False(Node.SeemsStalled(started.Take(2), out _, out _));
        foreach (var link in started.Concat(waiting)) await link.DisposeAsync();
    }

    /// <summary>
    /// Six links that fell silent in one moment (their host's link went down), their last arrivals
    /// spread over a heartbeat interval as heartbeats are: when the first two seem dead, the other
    /// four do not yet, but they went quiet with them. A coordinator whose host was cut off across
    /// network namespaces (<c>PartitionNetnsTests</c>) counted only the links dead in the tick: 2,
    /// 2 and 2 in three ticks half a second apart, each below the 3 of the rule, and it closed all
    /// six links at 5.1-5.4 s, its own outage taken for six failures.
    /// </summary>
    [Fact]
    public async Task Links_that_went_quiet_together_are_a_stall_though_only_some_seem_dead_in_the_first_tick()
    {
        var links = new List<Link>();
        for (int i = 0; i < 6; i++)
        {
            links.Add(Start(new QuietConnection()));
            _time.Advance(TimeSpan.FromSeconds(0.2));
        }
        // Silent 5.2, 5.0, 4.8, 4.6, 4.4 and 4.2 s: the first two reach the floor (5 s).
        _time.Advance(TimeSpan.FromSeconds(4.0));
        Assert.Equal(2, links.Count(l => l.SeemsDead));
        Assert.True(Node.SeemsStalled(links, out int silent, out int count), "6 links silent at once, 2 of them dead, were not taken for a stall");
        Assert.Equal((6, 6), (silent, count));
        // One dead link among live ones is no stall.
        var live = new List<Link> { links[0] };
        for (int i = 0; i < 5; i++) live.Add(Start(new QuietConnection()));
        Assert.False(Node.SeemsStalled(live, out silent, out _));
        Assert.Equal(1, silent);
        foreach (var link in links.Concat(live.Skip(1))) await link.DisposeAsync();
    }

    /// <summary>
    /// Placed joiners not heard from yet may be quiet until the ceiling (a join wave on loaded
    /// machines, or strangers that say nothing after their Welcome): they are not silent at once
    /// with a link that dies meanwhile, which then is no stall and is closed at the floor. Before
    /// (a read-only review of 37f4a51), 4 such joiners and one dead link of 6 were taken for a
    /// stall, and every dead link was kept open to the 20 s ceiling.
    /// </summary>
    [Fact]
    public async Task Joiners_not_heard_from_yet_do_not_make_a_dead_link_a_stall()
    {
        var links = new List<Link> { Start(new QuietConnection()) };
        _time.Advance(TimeSpan.FromSeconds(1.5));
        for (int i = 0; i < 4; i++)
        {
            var joiner = Start(new QuietConnection());
            joiner.LenientUntilHeard = true;
            links.Add(joiner);
        }
        _time.Advance(TimeSpan.FromSeconds(3.6));
        links.Add(Start(new QuietConnection()));
        Assert.True(links[0].SeemsDead);
        Assert.False(Node.SeemsStalled(links, out int silent, out _), $"{silent} of {links.Count} links silent at once");
        Assert.Equal(1, silent);
        foreach (var link in links) await link.DisposeAsync();
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

        /// <summary>Bytes from the other side (a frame): the link's read loop reads them.</summary>
        public async Task ArriveAsync(byte[] bytes) => await _in.Writer.WriteAsync(bytes);

        public IDuplexPipe Pipe => this;

        public PipeReader Input => _in.Reader;

        public PipeWriter Output => _out.Writer;

        public string RemoteAddress => "test";

        public TimeSpan? HandshakeRtt => null;

        public bool MeasuresHandshake => false;

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

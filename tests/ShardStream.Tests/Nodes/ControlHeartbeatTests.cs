using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Rarer heartbeats on control links (a coordinator with many peers): the coordinator asks in its
/// heartbeats, the peer follows and says so at once, the coordinator follows in turn, and both
/// failure detectors then judge silences against the longer interval.
/// </summary>
public sealed class ControlHeartbeatTests
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.UnixEpoch);

    [Fact]
    public async Task Both_ends_of_a_control_link_move_to_the_interval_the_coordinator_asks_for_and_neither_times_the_other_out()
    {
        var (coordinatorEnd, peerEnd) = CrossedConnection.Pair();
        await using var coordinatorSide = Start(coordinatorEnd, "coordinator side");
        await using var peerSide = Start(peerEnd, "peer side");
        coordinatorSide.OfferHeartbeats(TimeSpan.FromSeconds(10));
        peerSide.FollowHeartbeatRequests(Peer.MaxControlHeartbeat);

        int coordinatorSent = coordinatorEnd.FramesSent, peerSent = peerEnd.FramesSent;
        _time.Advance(TimeSpan.FromSeconds(1));
        coordinatorSide.Tick();
        await Overlay.WaitUntilAsync(() => peerSide.HeartbeatInterval == TimeSpan.FromSeconds(10), "the peer heartbeats every 10 s");
        // No time passes: the peer's first heartbeat at the new interval goes out at once, or the
        // coordinator would keep expecting one a second and time the peer out after 5 s.
        await Overlay.WaitUntilAsync(() => coordinatorSide.HeartbeatInterval == TimeSpan.FromSeconds(10), "the coordinator heartbeats every 10 s");
        // Each side says so with a heartbeat right after it changed its interval: counted once sent
        // (the coordinator's asking one, the peer's answer, the coordinator's own).
        await Overlay.WaitUntilAsync(() => coordinatorEnd.FramesSent >= coordinatorSent + 2 && peerEnd.FramesSent >= peerSent + 1, "both sides said so");

        // 9.5 s of quiet in 0.5 s ticks: nobody sends, nobody is taken for dead (the old timeout was 5 s).
        int sentBefore = coordinatorEnd.FramesSent + peerEnd.FramesSent;
        for (int i = 0; i < 19; i++)
        {
            _time.Advance(TimeSpan.FromSeconds(0.5));
            coordinatorSide.Tick();
            peerSide.Tick();
        }
        Assert.Equal(sentBefore, coordinatorEnd.FramesSent + peerEnd.FramesSent);
        Assert.False(coordinatorSide.Closed.IsCompleted);
        Assert.False(peerSide.Closed.IsCompleted);

        // A peer that then falls silent is still found: past two intervals, by phi.
        for (int i = 0; i < 120 && !coordinatorSide.Closed.IsCompleted; i++)
        {
            _time.Advance(TimeSpan.FromSeconds(0.5));
            coordinatorSide.Tick();
        }
        var reason = await coordinatorSide.Closed.WaitAsync(Overlay.Deadline);
        Assert.Equal(CloseCode.TimedOut, reason.Code);
        Assert.StartsWith("nothing heard for", reason.Text);
    }

    [Fact]
    public async Task Both_ends_move_back_to_a_shorter_interval_when_the_coordinator_asks_for_one_and_a_silent_peer_is_then_found_as_soon()
    {
        // A coordinator that holds fewer peers than it did asks for more frequent heartbeats again.
        var (coordinatorEnd, peerEnd) = CrossedConnection.Pair();
        await using var coordinatorSide = Start(coordinatorEnd, "coordinator side");
        await using var peerSide = Start(peerEnd, "peer side");
        int shortenedOnCoordinatorSide = 0, shortenedOnPeerSide = 0;
        coordinatorSide.HeartbeatShortened = _ => Interlocked.Increment(ref shortenedOnCoordinatorSide);
        peerSide.HeartbeatShortened = _ => Interlocked.Increment(ref shortenedOnPeerSide);
        coordinatorSide.OfferHeartbeats(TimeSpan.FromSeconds(10));
        peerSide.FollowHeartbeatRequests(Peer.MaxControlHeartbeat);
        _time.Advance(TimeSpan.FromSeconds(1));
        coordinatorSide.Tick();
        await Overlay.WaitUntilAsync(() => coordinatorSide.HeartbeatInterval == TimeSpan.FromSeconds(10) && peerSide.HeartbeatInterval == TimeSpan.FromSeconds(10), "both ends heartbeat every 10 s");

        // The new request rides on the coordinator's next heartbeat, 10 s later.
        coordinatorSide.OfferHeartbeats(TimeSpan.FromSeconds(2));
        _time.Advance(TimeSpan.FromSeconds(10));
        coordinatorSide.Tick();
        await Overlay.WaitUntilAsync(() => peerSide.HeartbeatInterval == TimeSpan.FromSeconds(2), "the peer heartbeats every 2 s");
        await Overlay.WaitUntilAsync(() => coordinatorSide.HeartbeatInterval == TimeSpan.FromSeconds(2), "the coordinator heartbeats every 2 s");
        // Each end told its owner, whose schedule of ticks may have had the link 10 s away (once).
        await Overlay.WaitUntilAsync(() => Volatile.Read(ref shortenedOnCoordinatorSide) >= 1 && Volatile.Read(ref shortenedOnPeerSide) >= 1, "both ends told their owners");
        Assert.Equal(1, Volatile.Read(ref shortenedOnCoordinatorSide));
        Assert.Equal(1, Volatile.Read(ref shortenedOnPeerSide));

        // A peer that falls silent now is found by the 2 s interval's rules (floor: the 5 s
        // heartbeat timeout, as 2 x 2 s is less), not the 10 s one's (floor 20 s).
        var silentFrom = _time.GetUtcNow();
        while (!coordinatorSide.Closed.IsCompleted && _time.GetUtcNow() - silentFrom < TimeSpan.FromSeconds(30))
        {
            _time.Advance(TimeSpan.FromSeconds(0.5));
            coordinatorSide.Tick();
        }
        var reason = await coordinatorSide.Closed.WaitAsync(Overlay.Deadline);
        Assert.Equal(CloseCode.TimedOut, reason.Code);
        Assert.InRange((_time.GetUtcNow() - silentFrom).TotalSeconds, 5, 8);
    }

    [Fact]
    public async Task A_link_whose_interval_becomes_shorter_is_not_taken_for_dead_for_the_silence_before_the_heartbeat_that_shortened_it()
    {
        // Both ends at 10 s: each hears the other only every 10 s.
        var (coordinatorEnd, peerEnd) = CrossedConnection.Pair();
        await using var coordinatorSide = Start(coordinatorEnd, "coordinator side");
        await using var peerSide = Start(peerEnd, "peer side");
        coordinatorSide.OfferHeartbeats(TimeSpan.FromSeconds(10));
        peerSide.FollowHeartbeatRequests(Peer.MaxControlHeartbeat);
        _time.Advance(TimeSpan.FromSeconds(1));
        coordinatorSide.Tick();
        await Overlay.WaitUntilAsync(() => coordinatorSide.HeartbeatInterval == TimeSpan.FromSeconds(10) && peerSide.HeartbeatInterval == TimeSpan.FromSeconds(10), "both ends heartbeat every 10 s");

        // The node's tick loop runs on its own thread: it may tick a link while that link's read
        // loop is between following a shorter interval (which tells the node, so that the link is
        // ticked at once) and noting the arrival of the heartbeat that asked for it. Here it ticks
        // each end right then.
        string? peerSeen = null, coordinatorSeen = null;
        peerSide.HeartbeatShortened = link =>
        {
            peerSeen = $"silence {link.Silence.TotalSeconds:0.#} s, seems dead: {link.SeemsDead}";
            link.Tick();
        };
        coordinatorSide.HeartbeatShortened = link =>
        {
            coordinatorSeen = $"silence {link.Silence.TotalSeconds:0.#} s, seems dead: {link.SeemsDead}";
            link.Tick();
        };
        coordinatorSide.OfferHeartbeats(TimeSpan.FromSeconds(1));
        _time.Advance(TimeSpan.FromSeconds(10));
        coordinatorSide.Tick();
        await Overlay.WaitUntilAsync(() => (coordinatorSide.HeartbeatInterval == TimeSpan.FromSeconds(1) && peerSide.HeartbeatInterval == TimeSpan.FromSeconds(1)) || coordinatorSide.IsClosing || peerSide.IsClosing,
            "both ends heartbeat every second (or one closed)");

        // Each end had just heard the other: neither may be taken for dead for the 10 s before.
        Assert.False(peerSide.IsClosing, $"the peer's end closed when its interval became shorter ({peerSeen})");
        Assert.False(coordinatorSide.IsClosing, $"the coordinator's end closed when its interval became shorter ({coordinatorSeen})");
        Assert.Equal(TimeSpan.FromSeconds(1), peerSide.HeartbeatInterval);
        Assert.Equal(TimeSpan.FromSeconds(1), coordinatorSide.HeartbeatInterval);
    }

    [Fact]
    public async Task A_coordinator_asking_for_the_heartbeat_interval_itself_brings_a_lengthened_link_back_to_it()
    {
        var (coordinatorEnd, peerEnd) = CrossedConnection.Pair();
        await using var coordinatorSide = Start(coordinatorEnd, "coordinator side");
        await using var peerSide = Start(peerEnd, "peer side");
        // A loaded machine: what the coordinator's end sends is done 200 ms (real time) late.
        coordinatorEnd.Delay = TimeSpan.FromMilliseconds(200);
        coordinatorSide.OfferHeartbeats(TimeSpan.FromSeconds(4));
        peerSide.FollowHeartbeatRequests(Peer.MaxControlHeartbeat);
        _time.Advance(TimeSpan.FromSeconds(1));
        coordinatorSide.Tick();
        // Each end follows and says so at once. The clock moves on only once those sends are done
        // (the coordinator's two frames, the peer's one): a send done after the move is stamped
        // then, and the coordinator's next heartbeat, with the new request, would be due 4 s after
        // that, not at the tick below. (A batch run once timed out so, waiting for both ends to be
        // at 1 s; with the clock moved while the coordinator's say-so was still being sent, it
        // times out every time.)
        await Overlay.WaitUntilAsync(() => coordinatorSide.HeartbeatInterval == TimeSpan.FromSeconds(4) && peerSide.HeartbeatInterval == TimeSpan.FromSeconds(4)
            && coordinatorEnd.FramesSent == 2 && peerEnd.FramesSent == 1, "both ends heartbeat every 4 s, and have said so");

        coordinatorSide.OfferHeartbeats(TimeSpan.FromSeconds(1));
        _time.Advance(TimeSpan.FromSeconds(4));
        coordinatorSide.Tick();
        await Overlay.WaitUntilAsync(() => coordinatorSide.HeartbeatInterval == TimeSpan.FromSeconds(1) && peerSide.HeartbeatInterval == TimeSpan.FromSeconds(1)
            && coordinatorEnd.FramesSent == 4 && peerEnd.FramesSent == 2, "both ends heartbeat every second again, and have said so");

        // And each end's silences are judged as at the start: 5 s. The clock moves in steps, each
        // followed by the peer's tick, until its end closes: the coordinator's say-so may be read
        // after a step (the read loop notes an arrival after the frames of a read), and the
        // silence counts from then. Closed at 5 s of silence, not 4.5 (steps of 0.5 s).
        var deadline = DateTime.UtcNow + Overlay.Deadline;
        while (!peerSide.Closed.IsCompleted)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("timed out waiting until the peer's end takes the coordinator's for dead");
            _time.Advance(TimeSpan.FromSeconds(0.5));
            peerSide.Tick();
            await Task.Delay(10);
        }
        var reason = await peerSide.Closed.WaitAsync(Overlay.Deadline);
        Assert.StartsWith("nothing heard for 5 s", reason.Text);
    }

    [Fact]
    public async Task A_coordinator_follows_no_interval_longer_than_it_asked_for()
    {
        // A peer cannot make the coordinator wait for it longer than the coordinator asked.
        var (coordinatorEnd, peerEnd) = CrossedConnection.Pair();
        await using var coordinatorSide = Start(coordinatorEnd, "coordinator side");
        await using var peerSide = Start(peerEnd, "peer side");
        coordinatorSide.OfferHeartbeats(TimeSpan.FromSeconds(5));
        _time.Advance(TimeSpan.FromSeconds(0.5));
        peerSide.Send(FrameWriting.ToArray(new Heartbeat(20_000).Write));
        await Overlay.WaitUntilAsync(() => coordinatorSide.Silence == TimeSpan.Zero, "the coordinator read the heartbeat");
        Assert.Equal(TimeSpan.FromSeconds(1), coordinatorSide.HeartbeatInterval);

        // What it asked for it follows.
        _time.Advance(TimeSpan.FromSeconds(0.5));
        peerSide.Send(FrameWriting.ToArray(new Heartbeat(5_000).Write));
        await Overlay.WaitUntilAsync(() => coordinatorSide.HeartbeatInterval == TimeSpan.FromSeconds(5), "the coordinator heartbeats every 5 s");
    }

    [Fact]
    public async Task A_peer_does_not_follow_an_interval_over_its_limit()
    {
        var (coordinatorEnd, peerEnd) = CrossedConnection.Pair();
        await using var coordinatorSide = Start(coordinatorEnd, "coordinator side");
        await using var peerSide = Start(peerEnd, "peer side");
        coordinatorSide.OfferHeartbeats(Peer.MaxControlHeartbeat * 2);
        peerSide.FollowHeartbeatRequests(Peer.MaxControlHeartbeat);

        _time.Advance(TimeSpan.FromSeconds(1));
        coordinatorSide.Tick();
        await Overlay.WaitUntilAsync(() => peerEnd.FramesReceived >= 1, "the peer heard the coordinator's heartbeat");
        await Overlay.WaitUntilAsync(() => peerSide.Silence == TimeSpan.Zero, "the peer read it");
        Assert.Equal(TimeSpan.FromSeconds(1), peerSide.HeartbeatInterval);
        Assert.Equal(TimeSpan.FromSeconds(1), coordinatorSide.HeartbeatInterval);
    }

    private Link Start(IConnection connection, string name)
    {
        var link = new Link(connection, name, new TestOptions().LinkOptions, NullLogger.Instance, _time);
        link.Start((_, _, _) => { });
        return link;
    }

    private sealed record TestOptions : NodeOptions;

    /// <summary>One end of an in-memory connection whose sends land in the other end's input.</summary>
    private sealed class CrossedConnection : IConnection, IDuplexPipe
    {
        private readonly Pipe _in = new();
        private readonly Pipe _out = new();
        private CrossedConnection? _other;
        private int _framesSent;

        public static (CrossedConnection, CrossedConnection) Pair()
        {
            var a = new CrossedConnection();
            var b = new CrossedConnection();
            a._other = b;
            b._other = a;
            return (a, b);
        }

        public int FramesSent => Volatile.Read(ref _framesSent);

        public int FramesReceived => _other!.FramesSent;

        public IDuplexPipe Pipe => this;

        public PipeReader Input => _in.Reader;

        public PipeWriter Output => _out.Writer;

        public string RemoteAddress => "test";

        public TimeSpan? HandshakeRtt => null;

        public bool MeasuresHandshake => false;

        /// <summary>How late (real time) what this end sends reaches the other end's input: a loaded machine's threads.</summary>
        public TimeSpan Delay { get; set; }

        public async ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken)
        {
            if (Delay > TimeSpan.Zero) await Task.Delay(Delay, cancellationToken);
            foreach (var buffer in buffers) await _other!._in.Writer.WriteAsync(buffer, cancellationToken);
            Interlocked.Increment(ref _framesSent);
        }

        public ValueTask CloseOutputAsync() => ValueTask.CompletedTask;

        public void Abort() => _in.Writer.Complete();

        public ValueTask DisposeAsync()
        {
            Abort();
            return ValueTask.CompletedTask;
        }
    }
}

using System.IO.Pipelines;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using ShardStream.Nodes;
using ShardStream.Transport;

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
        coordinatorSide.OfferLongerHeartbeats(TimeSpan.FromSeconds(10));
        peerSide.AcceptLongerHeartbeats(Peer.MaxControlHeartbeat);

        _time.Advance(TimeSpan.FromSeconds(1));
        coordinatorSide.Tick();
        await Overlay.WaitUntilAsync(() => peerSide.HeartbeatInterval == TimeSpan.FromSeconds(10), "the peer heartbeats every 10 s");
        // No time passes: the peer's first heartbeat at the new interval goes out at once, or the
        // coordinator would keep expecting one a second and time the peer out after 5 s.
        await Overlay.WaitUntilAsync(() => coordinatorSide.HeartbeatInterval == TimeSpan.FromSeconds(10), "the coordinator heartbeats every 10 s");

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
    public async Task A_peer_does_not_follow_an_interval_over_its_limit()
    {
        var (coordinatorEnd, peerEnd) = CrossedConnection.Pair();
        await using var coordinatorSide = Start(coordinatorEnd, "coordinator side");
        await using var peerSide = Start(peerEnd, "peer side");
        coordinatorSide.OfferLongerHeartbeats(Peer.MaxControlHeartbeat * 2);
        peerSide.AcceptLongerHeartbeats(Peer.MaxControlHeartbeat);

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

        public async ValueTask SendAsync(IList<ArraySegment<byte>> buffers, CancellationToken cancellationToken)
        {
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

using System.Buffers;
using System.IO.Pipelines;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A stranger that speaks the protocol answers the coordinator's pings on its control link with a
/// Pong that claims it held each ping almost a whole round trip before answering. The pinger takes
/// a Pong's hold out of its sample only up to <see cref="Protocol.MaxPongHold"/>, and only when
/// what is left is no less than the least round trip it measured on the link (RFC 9002, section
/// 5.3): the coordinator's RTT to the liar stays the real path's, so the liar cannot look nearer
/// the source than it is.
/// </summary>
public sealed class LyingPongTests(ITestOutputHelper output)
{
    /// <summary>The real round trip between the coordinator and the liar (one way: half of it).</summary>
    private static readonly TimeSpan PathRtt = TimeSpan.FromMilliseconds(100);

    /// <summary>The coordinator's timers and the virtual network's delays are kept by a clock of 1 ms ticks: a round trip may read up to 2 ms short.</summary>
    private static readonly TimeSpan ClockSlack = TimeSpan.FromMilliseconds(2);

    [Fact]
    public async Task A_peer_that_claims_to_hold_each_ping_almost_a_round_trip_is_measured_at_its_real_rtt()
    {
        // The coordinator pings every 250 ms until it has 4 samples, then every 1.25 s.
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { HeartbeatInterval = TimeSpan.FromMilliseconds(250) });
        overlay.Network.SetLatency("coord", "liar", PathRtt / 2);
        // It claims 95 ms of a 100 ms round trip: before, the coordinator measured it at about 5 ms.
        await using var liar = await Liar.JoinAsync(overlay, claimedHold: TimeSpan.FromMilliseconds(95));

        await Overlay.WaitUntilAsync(() => overlay.Coordinator.LinkRtts().Any(r => r.RemoteId == liar.Id && r.Samples >= 6), "the coordinator has 6 RTT samples of the liar's control link");

        var rtt = overlay.Coordinator.LinkRtts().Single(r => r.RemoteId == liar.Id);
        output.WriteLine($"coordinator's RTT to the liar: SRTT {rtt.Smoothed.TotalMilliseconds:F1} ms, least {rtt.Min.TotalMilliseconds:F1} ms, {rtt.Samples} samples; pongs sent {liar.Pongs}; path {PathRtt.TotalMilliseconds} ms");
        Assert.True(liar.Pongs >= 6, $"the liar answered {liar.Pongs} pings");
        // The least RTT is what the planner records as the peer's RTT to the source; the SRTT is the page's.
        Assert.True(rtt.Min >= PathRtt - ClockSlack, $"least RTT {rtt.Min.TotalMilliseconds:F1} ms on a path of {PathRtt.TotalMilliseconds} ms");
        Assert.True(overlay.Coordinator.ControlRtt(liar.Id) >= PathRtt - ClockSlack, $"SRTT {overlay.Coordinator.ControlRtt(liar.Id)?.TotalMilliseconds:F1} ms on a path of {PathRtt.TotalMilliseconds} ms");
    }

    /// <summary>The liar's control link: it joins with a coordinate (so without landmark rounds), heartbeats every 200 ms, and answers every ping with the hold it claims.</summary>
    private sealed class Liar : IAsyncDisposable
    {
        private readonly IConnection _connection;
        private readonly TimeSpan _claimedHold;
        private readonly CancellationTokenSource _stop = new();
        private readonly SemaphoreSlim _writing = new(1, 1);
        private Task _answering = Task.CompletedTask;
        private Task _beating = Task.CompletedTask;
        private int _pongs;

        private Liar(IConnection connection, int id, TimeSpan claimedHold)
        {
            _connection = connection;
            Id = id;
            _claimedHold = claimedHold;
        }

        public int Id { get; }

        /// <summary>Pongs sent so far.</summary>
        public int Pongs => Volatile.Read(ref _pongs);

        public static async Task<Liar> JoinAsync(Overlay overlay, TimeSpan claimedHold)
        {
            var connection = await overlay.Network.Host("liar").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
            new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0, 0, [], "liar:1", new byte[Protocol.NonceLength], null, new WireCoordinate(1, 1, 1, 0.5f)).Write(connection.Pipe.Output);
            await connection.Pipe.Output.FlushAsync();
            var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
            Assert.Equal(FrameType.Welcome, type);
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
            Assert.True(Welcome.TryRead(ref reader, out var welcome));
            var liar = new Liar(connection, (int)welcome.PeerId, claimedHold);
            liar._answering = liar.AnswerAsync();
            liar._beating = liar.BeatAsync();
            return liar;
        }

        private async Task WriteAsync(Action<PipeWriter> write)
        {
            await _writing.WaitAsync(_stop.Token);
            try
            {
                write(_connection.Pipe.Output);
                await _connection.Pipe.Output.FlushAsync(_stop.Token);
            }
            finally
            {
                _writing.Release();
            }
        }

        private async Task AnswerAsync()
        {
            try
            {
                while (true)
                {
                    var (type, body) = await RawFrames.ReadAsync(_connection.Pipe.Input).WaitAsync(_stop.Token);
                    var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
                    if (type != FrameType.Ping || !Ping.TryRead(ref reader, out var ping)) continue;
                    await WriteAsync(o => new Pong(ping.Token, (uint)_claimedHold.TotalMicroseconds, new WireCoordinate(1, 1, 1, 0.5f)).Write(o));
                    Interlocked.Increment(ref _pongs);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException)
            {
                // Stopped, or the coordinator closed the link (the test says what it measured by then).
            }
        }

        private async Task BeatAsync()
        {
            try
            {
                while (true)
                {
                    await WriteAsync(o => new Heartbeat(0, new WireCoordinate(1, 1, 1, 0.5f)).Write(o));
                    await Task.Delay(200, _stop.Token);
                }
            }
            catch (OperationCanceledException)
            {
                // Stopped.
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_answering, _beating);
            _connection.Abort();
        }
    }
}

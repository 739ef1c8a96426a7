using System.Buffers;
using System.IO.Pipelines;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A node ticks each link only when its last tick said it could have something to do (its next
/// heartbeat, or the earliest silence that ends it). A control link whose heartbeats the
/// coordinator makes shorter again (it holds fewer peers) would otherwise wait for the time its
/// old, long interval gave: heartbeats and failure detection a minute late.
/// </summary>
public sealed class ShorterHeartbeatScheduleTests
{
    [Fact]
    public async Task A_link_whose_heartbeats_go_from_a_minute_to_a_second_is_ticked_at_the_new_interval_at_once()
    {
        var network = new VirtualNetwork();
        await using var listener = await network.Host("coordinator").ListenAsync("coordinator:1", CancellationToken.None);
        await using var node = new PlainNode(network.Host("peer"));
        await node.StartAsync();
        var control = node.Open(await network.Host("peer").ConnectAsync("coordinator:1", CancellationToken.None), "control");
        control.FollowHeartbeatRequests(Peer.MaxControlHeartbeat);
        control.Start((_, _, _) => { });
        await using var coordinator = (await listener.AcceptAsync(CancellationToken.None))!;
        var heard = new Heard(coordinator);

        // The "coordinator" asks for a minute; the peer follows and says so at once.
        await SendHeartbeatAsync(coordinator, 60_000);
        await Overlay.WaitUntilAsync(() => heard.Values.Contains(60_000UL), "the peer says it heartbeats every 60 s");
        await Overlay.WaitUntilAsync(() => control.HeartbeatInterval == TimeSpan.FromSeconds(60), "the peer heartbeats every 60 s");
        // Let the node tick it once at that interval: its next tick is then a minute away. (Seen
        // by the tick itself: a count taken here could already include that tick, which came
        // less than a second after the peer followed, and the next would then be a minute away.)
        await Overlay.WaitUntilAsync(() => node.TicksAt(control, TimeSpan.FromSeconds(60)) >= 1, "the node ticked the link at 60 s");
        int ticksBefore = node.TicksOf(control);

        // Then a second again. Nothing more comes from the "coordinator": the peer must now send
        // heartbeats every second and close the link after the 5 s timeout, not a minute later.
        await SendHeartbeatAsync(coordinator, 1_000);
        await Overlay.WaitUntilAsync(() => control.HeartbeatInterval == TimeSpan.FromSeconds(1), "the peer heartbeats every second");
        int heardBefore = heard.Values.Count;
        var reason = await control.Closed.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(CloseCode.TimedOut, reason.Code);
        Assert.StartsWith("nothing heard for", reason.Text);
        // The answer to the request (1000), then heartbeats a second apart until the link closed.
        Assert.True(heard.Values.Count - heardBefore >= 2, $"{heard.Values.Count - heardBefore} heartbeat(s) after the shorter interval");
        Assert.True(node.TicksOf(control) - ticksBefore >= 2, $"ticked {node.TicksOf(control) - ticksBefore} time(s) after the shorter interval");
    }

    private static async Task SendHeartbeatAsync(IConnection connection, ulong value) =>
        await connection.SendAsync([new ArraySegment<byte>(FrameWriting.ToArray(new Heartbeat(value).Write))], CancellationToken.None);

    /// <summary>The heartbeat values read from a connection, in order.</summary>
    private sealed class Heard
    {
        private readonly List<ulong> _values = [];

        public Heard(IConnection connection) => _ = ReadAsync(connection);

        public IReadOnlyList<ulong> Values
        {
            get
            {
                lock (_values) return [.. _values];
            }
        }

        private async Task ReadAsync(IConnection connection)
        {
            var input = connection.Pipe.Input;
            while (true)
            {
                ReadResult result;
                try
                {
                    result = await input.ReadAsync();
                }
                catch (Exception)
                {
                    return;
                }
                var buffer = result.Buffer;
                while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
                {
                    var reader = new SequenceReader<byte>(body);
                    if (type == FrameType.Heartbeat && Heartbeat.TryRead(ref reader, out var heartbeat))
                        lock (_values) _values.Add(heartbeat.Value);
                }
                input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted) return;
            }
        }
    }

    /// <summary>A node that only holds the links a test opens, and counts their ticks.</summary>
    private sealed class PlainNode(ITransport transport)
        : Node(new PeerOptions { JoinAddress = "coordinator:1", ListenAddress = "peer:1" }, transport, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, TimeProvider.System)
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<Link, int> _ticks = new();

        public Task StartAsync() => ListenAsync(CancellationToken.None);

        public Link Open(IConnection connection, string name) => NewLink(connection, name);

        private readonly System.Collections.Concurrent.ConcurrentDictionary<(Link, TimeSpan), int> _ticksAt = new();

        public int TicksOf(Link link) => _ticks.GetValueOrDefault(link);

        /// <summary>How often the node ticked <paramref name="link"/> while it heartbeat every <paramref name="interval"/>.</summary>
        public int TicksAt(Link link, TimeSpan interval) => _ticksAt.GetValueOrDefault((link, interval));

        private protected override bool ShownAliveOtherwise(Link link)
        {
            // Called by the node's tick loop for each link due, right before it ticks it.
            _ticksAt.AddOrUpdate((link, link.HeartbeatInterval), 1, (_, n) => n + 1);
            _ticks.AddOrUpdate(link, 1, (_, n) => n + 1);
            return false;
        }

        private protected override void OnSlowChild(SlowChildren.Finding finding)
        {
        }

        private protected override Task OnJoinAsync(Link link, Hello hello) => Task.CompletedTask;

        private protected override ShardStream.Trust.StreamRun? AdmissionRun => null;

        private protected override ulong NodeId => 7;

        private protected override int ShardCount => 1;
    }
}

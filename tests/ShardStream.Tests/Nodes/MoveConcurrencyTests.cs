using System.Buffers;
using System.Net;
using System.Net.Sockets;
using ShardStream.Nodes;
using ShardStream.Tests.Adversary;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A parent that does not answer costs only the shards sent to it: repairs behind it go on, and a
/// connect to an address that drops SYNs fails in seconds.
/// </summary>
public sealed class MoveConcurrencyTests
{
    [Fact]
    public async Task A_parent_that_never_answers_does_not_hold_back_the_other_shards_of_the_same_move()
    {
        var net = new VirtualNetwork();
        // The hole accepts and never answers; the witness records the attach hello it receives.
        var hole = await net.Host("hole").ListenAsync("hole:1", default);
        var witness = await net.Host("witness").ListenAsync("witness:1", default);
        var holeAccepted = AcceptAndHoldAsync(hole);
        var witnessHello = AcceptAndReadFirstFrameAsync(witness);

        int injected = 0;
        var tampering = new TamperingTransport(net.Host("coord"), (type, frame) =>
            type == FrameType.Heartbeat && Interlocked.Exchange(ref injected, 1) == 0
                ? [Frame(new Move([new ShardAssignment(0, AssignmentKind.Redirect, 77, 0, "hole:1"), new ShardAssignment(1, AssignmentKind.Redirect, 78, 0, "witness:1")]).Write), frame]
                : [frame]);
        // Long timeouts: the attach to the hole stays pending for the whole test.
        var timeouts = (Heartbeat: TimeSpan.FromMinutes(5), Interval: TimeSpan.FromMilliseconds(200));
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", ShardCount = 2, HeartbeatTimeout = timeouts.Heartbeat, HeartbeatInterval = timeouts.Interval }, tampering);
        await coordinator.StartAsync(default);
        await using var peer = new Peer(new PeerOptions { JoinAddress = coordinator.ListenAddress, ListenAddress = "p:1", HeartbeatTimeout = timeouts.Heartbeat, HeartbeatInterval = timeouts.Interval }, net.Host("p"));
        await peer.StartAsync(default).WaitAsync(Overlay.Deadline);
        tampering.Active = true;

        await holeAccepted.WaitAsync(Overlay.Deadline);
        var (type, body) = await witnessHello.WaitAsync(Overlay.Deadline);
        Assert.Equal(FrameType.Hello, type);
        var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(body));
        Assert.True(Hello.TryRead(ref reader, out var hello));
        Assert.Equal(HelloRole.Attach, hello.Role);
        Assert.Equal(1, Assert.Single(hello.Shards).Shard);
    }

    [Fact]
    public async Task Moves_behind_one_to_a_black_holed_address_are_applied_while_its_connect_is_still_pending()
    {
        var net = new VirtualNetwork();
        // Nobody answers at the hole: the connect stays pending until the peer's connect timeout (5 min here).
        net.BlackHole("hole:1");
        var witnesses = new List<Task<(FrameType Type, byte[] Body)>>();
        for (int w = 1; w <= 3; w++) witnesses.Add(AcceptAndReadFirstFrameAsync(await net.Host($"w{w}").ListenAsync($"w{w}:1", default)));

        // Four Moves, one after the other on the control link: shard 0 to the hole, then shards 1..3 to three witnesses.
        int injected = 0;
        var tampering = new TamperingTransport(net.Host("coord"), (type, frame) =>
            type == FrameType.Heartbeat && Interlocked.Exchange(ref injected, 1) == 0
                ? [Frame(new Move([new ShardAssignment(0, AssignmentKind.Redirect, 77, 0, "hole:1")]).Write),
                   .. Enumerable.Range(1, 3).Select(w => Frame(new Move([new ShardAssignment((byte)w, AssignmentKind.Redirect, (ulong)(80 + w), 0, $"w{w}:1")]).Write)),
                   frame]
                : [frame]);
        var timeouts = (Heartbeat: TimeSpan.FromMinutes(5), Interval: TimeSpan.FromMilliseconds(200));
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", ShardCount = 4, HeartbeatTimeout = timeouts.Heartbeat, HeartbeatInterval = timeouts.Interval }, tampering);
        await coordinator.StartAsync(default);
        await using var peer = new Peer(new PeerOptions
        {
            JoinAddress = coordinator.ListenAddress,
            ListenAddress = "p:1",
            HeartbeatTimeout = timeouts.Heartbeat,
            HeartbeatInterval = timeouts.Interval,
            ConnectTimeout = TimeSpan.FromMinutes(5),
        }, net.Host("p"));
        await peer.StartAsync(default).WaitAsync(Overlay.Deadline);
        tampering.Active = true;

        await Overlay.WaitUntilAsync(() => net.PendingBlackHoleConnects == 1, "the peer is connecting to the black hole");
        for (int w = 1; w <= 3; w++)
        {
            var (type, body) = await witnesses[w - 1].WaitAsync(Overlay.Deadline);
            Assert.Equal(FrameType.Hello, type);
            var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(body));
            Assert.True(Hello.TryRead(ref reader, out var hello));
            Assert.Equal(HelloRole.Attach, hello.Role);
            Assert.Equal(w, Assert.Single(hello.Shards).Shard);
        }

        // Every later repair went out while the connect to the hole was still waiting.
        Assert.Equal(1, net.PendingBlackHoleConnects);
    }

    [Fact]
    public async Task A_connect_to_an_address_that_drops_syns_fails_at_the_connect_timeout()
    {
        // A listener that never accepts, with a queue of one that is full: the kernel drops SYNs.
        using var blackHole = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        blackHole.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        blackHole.Listen(0);
        var target = (IPEndPoint)blackHole.LocalEndPoint!;
        var fillers = new List<Socket>();
        for (int i = 0; i < 2; i++)
        {
            var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            fillers.Add(filler);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            try
            {
                await filler.ConnectAsync(target, cts.Token);
            }
            catch (OperationCanceledException)
            {
                // The queue is full already.
            }
        }
        try
        {
            await using var peer = new Peer(new PeerOptions { JoinAddress = target.ToString(), ConnectTimeout = TimeSpan.FromSeconds(1) });
            var error = await Assert.ThrowsAsync<ConnectionFailedException>(() => peer.StartAsync(default).WaitAsync(Overlay.Deadline));
            Assert.Contains("no answer within 1 s", error.Message);
        }
        finally
        {
            foreach (var f in fillers) f.Dispose();
        }
    }

    private static byte[] Frame(Action<System.Buffers.IBufferWriter<byte>> write)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        write(buffer);
        return buffer.WrittenSpan.ToArray();
    }

    private static async Task AcceptAndHoldAsync(IConnectionListener listener) => _ = await listener.AcceptAsync(default);

    private static async Task<(FrameType Type, byte[] Body)> AcceptAndReadFirstFrameAsync(IConnectionListener listener)
    {
        var connection = (await listener.AcceptAsync(default))!;
        var input = connection.Pipe.Input;
        while (true)
        {
            var result = await input.ReadAsync();
            var buffer = result.Buffer;
            if (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
            {
                var copy = body.ToArray();
                input.AdvanceTo(buffer.Start);
                return (type, copy);
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) throw new IOException("closed before a frame");
        }
    }
}

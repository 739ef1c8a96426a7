using System.Net;
using System.Net.Sockets;
using ShardStream.LoadGeneration;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The load generator (<c>shardstream swarm</c>) against a real coordinator over TCP on loopback:
/// its peers join for real (the coordinator's dial-back probe answered), stay, churn and leave,
/// and the coordinator's own count of peers follows. No timing is asserted: figures go to
/// docs/performance.md.
/// </summary>
public sealed class SwarmTests
{
    [Fact]
    public async Task The_coordinator_counts_every_swarm_peer_that_joined_and_none_after_they_left()
    {
        // A long heartbeat timeout: the dial-back may take half of it, and on a loaded machine a
        // probe that misses 2.5 s would place a peer as a leaf (what the test checks does not happen).
        var coordinatorOptions = new CoordinatorOptions { ListenAddress = "127.0.0.1:0", ShardCount = 2, HeartbeatTimeout = TimeSpan.FromSeconds(60) };
        await using var coordinator = new Coordinator(coordinatorOptions, loggerFactory: Overlay.Loggers);
        await coordinator.StartAsync(CancellationToken.None);
        var options = new SwarmOptions
        {
            CoordinatorAddress = coordinator.ListenAddress,
            Peers = 500,
            JoinRate = 500,
            Hold = TimeSpan.FromSeconds(2),
            ChurnRate = 50,
            FirstAddress = "127.77.0.1",
            Addresses = 10,
            JoinTimeout = TimeSpan.FromSeconds(60),
        };
        var swarm = new Swarm(options);
        int countedAtHoldEnd = -1;
        int relaysAtHoldEnd = -1;
        var report = await swarm.RunAsync(null, async () =>
        {
            // Leaves of the churn may still be on their way: a churn's join can end before its
            // leave, and the swarm counts a leaver until the coordinator closes its link. Both sides
            // agreed on 509 with nine leaves under way (2026-12-06, load 70). So wait until the
            // swarm's own leaves are done, then until the coordinator agrees, then compare.
            await Overlay.WaitUntilAsync(() => swarm.Connected == options.Peers, "the swarm's churn leaves are done");
            await Overlay.WaitUntilAsync(() => PeersOf(coordinator) == swarm.Connected, "the coordinator counts as many peers as the swarm has connected");
            var snapshot = coordinator.Snapshot();
            countedAtHoldEnd = snapshot.Nodes.Count - 1;
            // Every peer answered the dial-back with its own token, so none was made a leaf.
            relaysAtHoldEnd = snapshot.Nodes.Count(n => n.Id != 0 && n.Budget > 0);
        }, CancellationToken.None);

        Assert.Empty(report.Failures);
        Assert.Empty(report.Dropped);
        Assert.Equal(500 + 100, report.JoinsStarted);
        Assert.Equal(report.JoinsStarted, report.Joined);
        Assert.Equal(500, countedAtHoldEnd);
        Assert.Equal(500, relaysAtHoldEnd);
        Assert.Equal(600, report.Left);
        await Overlay.WaitUntilAsync(() => PeersOf(coordinator) == 0, "the coordinator has taken every leave");
    }

    /// <summary>
    /// ci214 (load 35-98): 52 of 600 joins of the test above failed with "Unable to read data from
    /// the transport connection: Connection reset by peer". The coordinator closes a connection
    /// whose hello has not come within its hello timeout (5 s) with a reset and no frame
    /// (Node.ReadHelloAsync, event 9103 at Debug, "closed without a hello"): a joiner starved
    /// between its connect and its hello (or a coordinator too starved to read it in time) meets
    /// that reset when it reads the answer. A real peer joins again then (docs/resilience.md, "The
    /// first join too"); the swarm counted it as failed. Here the relay never passes the first
    /// connection's hello on, so the coordinator's hello deadline closes it (a joiner that sent its
    /// hello too late: "connection closed before a frame arrived"); or the relay resets it once the
    /// hello has come, as a coordinator does that closes with the hello unread in its buffer (those
    /// 52: "Unable to read data from the transport connection: Connection reset by peer").
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_join_the_coordinator_closed_before_its_answer_is_tried_again_not_failed(bool resetAfterHello)
    {
        var coordinatorOptions = new CoordinatorOptions { ListenAddress = "127.0.0.1:0", ShardCount = 2, HelloTimeout = HelloTimeout, HeartbeatTimeout = TimeSpan.FromSeconds(60) };
        await using var coordinator = new Coordinator(coordinatorOptions, loggerFactory: Overlay.Loggers);
        await coordinator.StartAsync(CancellationToken.None);
        await using var relay = new FirstHelloHeldRelay(coordinator.ListenAddress, resetAfterHello);
        var report = await JoinOneAsync(relay.Address, "127.77.1.1");

        Assert.Empty(report.Failures);
        Assert.Equal(1, report.Joined);
        // The first join is cut; a later one, late past the hello deadline on a starved machine, may be too.
        Assert.True(report.InterruptedJoins >= 1, "the cut join was not counted as interrupted");
        Assert.Equal(report.InterruptedJoins + 1, relay.Connections);
    }

    /// <summary>
    /// The hello deadline of the coordinators of the two tests around it: 5 s, the default. At 1 s a
    /// hello sent late by a starved test process (load 50 on 2 cores) met the deadline unread
    /// nowhere, and the join was cut a second time (a review of these tests).
    /// </summary>
    private static readonly TimeSpan HelloTimeout = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The coordinator's side of ci214's flake (above): its hello deadline passed while the hello
    /// sat unread in its socket (it was too busy to read it), and it reset the joiner, hello unread.
    /// The hello had come: the node was late, not the joiner. Here the coordinator's first hello
    /// read is held until its deadline has passed (or, with the fix, until it said it found the
    /// hello waiting unread there).
    /// </summary>
    [Fact]
    public async Task A_hello_that_waits_unread_at_the_hello_deadline_is_read_not_reset()
    {
        var log = new LogCapture();
        var coordinatorOptions = new CoordinatorOptions { ListenAddress = "127.0.0.1:0", ShardCount = 2, HelloTimeout = HelloTimeout, HeartbeatTimeout = TimeSpan.FromSeconds(60) };
        await using var coordinator = new Coordinator(coordinatorOptions, loggerFactory: log.Factory);
        int held = 0;
        coordinator.HelloReadHeld = async deadline =>
        {
            if (Interlocked.Increment(ref held) != 1) return;
            while (!deadline.IsCancellationRequested && !log.Lines.Any(l => l.Message.Contains("waited unread at the hello deadline", StringComparison.Ordinal)))
                await Task.Delay(10, CancellationToken.None);
        };
        await coordinator.StartAsync(CancellationToken.None);
        var report = await JoinOneAsync(coordinator.ListenAddress, "127.77.2.1");

        Assert.Empty(report.Failures);
        Assert.Equal(1, report.Joined);
        Assert.True(report.InterruptedJoins == 0, $"the coordinator closed the join whose hello it had not read: {string.Join("\n", log.Lines.Select(l => l.Message))}");
    }

    private static int PeersOf(Coordinator coordinator) => coordinator.Snapshot().Nodes.Count - 1;

    /// <summary>A swarm of one peer from <paramref name="from"/> joins at <paramref name="coordinator"/> and leaves at once.</summary>
    private static Task<SwarmReport> JoinOneAsync(string coordinator, string from) =>
        new Swarm(new SwarmOptions { CoordinatorAddress = coordinator, Peers = 1, JoinRate = 1, Hold = TimeSpan.Zero, FirstAddress = from, Addresses = 1, JoinTimeout = TimeSpan.FromSeconds(60) })
            .RunAsync(null, null, CancellationToken.None);

    /// <summary>
    /// A TCP relay on loopback to <c>upstream</c> that never passes on what its first connection
    /// sends (a hello that comes after the coordinator's hello deadline), or with
    /// <c>resetAfterHello</c> resets that connection once its first bytes came, and relays every
    /// later connection both ways. An end or a reset from either side is passed on as it came.
    /// </summary>
    private sealed class FirstHelloHeldRelay : IAsyncDisposable
    {
        private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly IPEndPoint _upstream;
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Socket> _sockets = [];
        private readonly Task _accepting;
        private int _connections;

        private readonly bool _resetAfterHello;

        public FirstHelloHeldRelay(string upstream, bool resetAfterHello)
        {
            _resetAfterHello = resetAfterHello;
            _upstream = IPEndPoint.Parse(upstream);
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _listener.Listen();
            Address = _listener.LocalEndPoint!.ToString()!;
            _accepting = AcceptAsync();
        }

        public string Address { get; }

        /// <summary>Connections relayed so far.</summary>
        public int Connections => Volatile.Read(ref _connections);

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    var client = await _listener.AcceptAsync(_stop.Token);
                    var server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    lock (_sockets) _sockets.AddRange([client, server]);
                    await server.ConnectAsync(_upstream, _stop.Token);
                    bool first = Interlocked.Increment(ref _connections) == 1;
                    if (first && _resetAfterHello) _ = ResetAfterFirstBytesAsync(client, server);
                    else
                    {
                        if (!first) _ = PumpAsync(client, server);
                        _ = PumpAsync(server, client);
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                // Stopped.
            }
        }

        private static async Task ResetAfterFirstBytesAsync(Socket client, Socket server)
        {
            try
            {
                await client.ReceiveAsync(new byte[1], SocketFlags.None);
                client.LingerState = new LingerOption(true, 0);
                client.Close();
                server.Close();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // Gone already.
            }
        }

        private static async Task PumpAsync(Socket from, Socket to)
        {
            var buffer = new byte[16 * 1024];
            try
            {
                while (true)
                {
                    int n = await from.ReceiveAsync(buffer, SocketFlags.None);
                    if (n == 0)
                    {
                        to.Shutdown(SocketShutdown.Send);
                        return;
                    }
                    await to.SendAsync(buffer.AsMemory(0, n), SocketFlags.None);
                }
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                // Passed on as a reset.
                to.LingerState = new LingerOption(true, 0);
                to.Close();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // The other side is gone already.
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Dispose();
            await _accepting;
            lock (_sockets)
                foreach (var socket in _sockets) socket.Dispose();
            _stop.Dispose();
        }
    }
}

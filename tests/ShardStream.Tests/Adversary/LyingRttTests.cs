using System.Buffers;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Topology;
using ShardStream.Transport;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A stranger that speaks the protocol lies, in its control-link heartbeats (protocol 11), about
/// the RTTs it measured to its parents: the coordinator takes a peer's RTT claims only about nodes
/// that were its parents in the plan, so a made-up RTT to any other node moves nobody.
/// </summary>
public sealed partial class LyingRttTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_tiny_rtt_claimed_to_a_node_that_never_was_the_peers_parent_does_not_move_it_under_that_node()
    {
        var log = new LogCapture();
        await using var overlay = await StartAsync(log);
        var liar = await JoinAsync(overlay);

        // Now it says it is next to p2, with a coordinate too unsure for the planner to move it by
        // estimate (error 0.9), that its edge to p1 is 200 ms long (p1 is its parent: that claim is
        // taken), and that it measured p2, which never was its parent, at 1 ms, 50 times.
        liar.Lie = new Heartbeat(1, Beside(liar.Far.Coordinate, 0.9f),
            [new ParentRtt(liar.Near.Id, 200_000, 200_000, 50), new ParentRtt(liar.Far.Id, 1_000, 1_000, 50)]);
        long rounds = overlay.Coordinator.LatencyMoveRounds;
        liar.Start();

        // The coordinator looks for moves every round (here every 250 ms): ten rounds on end with the
        // lie heard and the plan sure of p1 and p2 (a round where it is not moves nobody by estimate
        // anyway, so it proves nothing: the count starts again after it, as after a stall).
        long settledSince = rounds;
        await Overlay.WaitUntilAsync(() =>
        {
            long now = overlay.Coordinator.LatencyMoveRounds;
            if (!PlanSure(overlay, liar.Near, liar.Far)) settledSince = now;
            return now >= settledSince + 10 || liar.Moves.Count > 0;
        }, $"ten rounds of latency moves on end with the plan sure of p1 and p2 ({PlanSays(overlay, liar.Near, liar.Far)})", 3 * Overlay.Deadline);
        await liar.StopAsync();

        string moved = string.Join("; ", liar.Moves.SelectMany(m => m.Shards).Select(s => $"shard {s.Shard} -> node {s.ParentId}"));
        output.WriteLine($"{overlay.Coordinator.LatencyMoveRounds - rounds} rounds after the lie was heard; moves sent to the liar: {(moved.Length == 0 ? "none" : moved)}");
        Assert.Empty(liar.Moves);
        Assert.Equal(0, overlay.Coordinator.LatencyMoves);
        Assert.Equal((int)liar.Near.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == liar.Id).Parents[0]);
        // The coordinator says why it did not take the claim.
        Assert.True(log.Has(LogLevel.Debug, $"peer {liar.Id} reported an RTT to node {liar.Far.Id}, which never was its parent"),
            string.Join("\n", log.Lines.Where(l => l.Message.Contains("RTT", StringComparison.Ordinal)).Select(l => l.Message)));
    }

    /// <summary>
    /// What a liar still gets (docs/security.md, "Lies about RTTs and coordinates"): it lies about
    /// its real parent's RTT and its own coordinate, and is moved to a free slot near where it says
    /// it is; then about the parent it had before, and is moved back; but only once per rest.
    /// </summary>
    [Fact]
    public async Task A_peer_that_lies_about_its_own_parents_and_coordinate_moves_between_them_at_most_once_per_rest()
    {
        var log = new LogCapture();
        await using var overlay = await StartAsync(log);
        var liar = await JoinAsync(overlay);

        // Its edge to p1 is 200 ms long, and it is next to p2, sure of it (error 0.3).
        liar.Lie = new Heartbeat(1, Beside(liar.Far.Coordinate, 0.3f), [new ParentRtt(liar.Near.Id, 200_000, 200_000, 50)]);
        liar.Start();
        await Overlay.WaitUntilAsync(() => liar.Moves.Count >= 1, "the liar is moved");
        // Now its edge to p2 is 200 ms long, and p1, its parent before, 1 ms away.
        liar.Lie = new Heartbeat(1, Beside(liar.Near.Coordinate, 0.3f),
            [new ParentRtt(liar.Far.Id, 200_000, 200_000, 50), new ParentRtt(liar.Near.Id, 1_000, 1_000, 50)]);
        await Overlay.WaitUntilAsync(() => liar.Moves.Count >= 2, "the liar is moved back");
        await liar.StopAsync();

        var (first, second) = (liar.Moves[0], liar.Moves[1]);
        Assert.Equal(liar.Far.Id, first.Shards[0].ParentId);
        Assert.Equal(liar.Near.Id, second.Shards[0].ParentId);
        // A moved peer rests 30 rounds: the rounds of its two moves, as the coordinator logged them
        // (counted under the lock the moves are made under, not when a Move reached the liar).
        var rounds = log.Lines.Where(l => l.Category == "coordinator").Select(l => MoveRound().Match(l.Message))
            .Where(m => m.Success && m.Groups[2].Value.Split(", ").Any(e => e.StartsWith($"peer {liar.Id} shard ", StringComparison.Ordinal)))
            .Select(m => long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        output.WriteLine($"moved to node {first.Shards[0].ParentId}, then to node {second.Shards[0].ParentId}; logged in rounds {string.Join(", ", rounds)}");
        Assert.Equal(2, rounds.Count);
        Assert.True(rounds[1] - rounds[0] >= Planner.ImproveRest, $"moved again {rounds[1] - rounds[0]} rounds after the first move");
    }

    /// <summary>The coordinator's line for a round of latency moves: the round, and the moves ("peer P shard S -> N", comma-separated).</summary>
    [System.Text.RegularExpressions.GeneratedRegex(@"^round (\d+) of latency moves: moving \d+ peer edge\(s\) to parents with a much lower estimated delay from the source: (.*)$")]
    private static partial System.Text.RegularExpressions.Regex MoveRound();

    /// <summary>
    /// A coordinator (latency-aware, 4 moves a round) and two peers on hosts on a line (RTT =
    /// distance in ms): the coordinator in the middle, p1 100 ms to one side, p2 100 ms to the
    /// other. The coordinator feeds both; each has a free slot. Its rounds of latency moves come
    /// every 250 ms instead of every second: the tests count rounds (the rest is 30 of them), and
    /// the liar's lie, heartbeated every 200 ms, is heard in every round. p2's coordinate must
    /// leave room for the lies (<see cref="RoomForLies"/>): p2 fits it at its join from two
    /// landmarks (the coordinator and p1), and now and then the fit puts most of its 100 ms in its
    /// height. Such an overlay is started again, a few times at most: p2 measures only the
    /// coordinator afterwards, so its coordinate does not come right.
    /// </summary>
    private static async Task<Overlay> StartAsync(LogCapture? log)
    {
        for (int attempt = 1; ; attempt++)
        {
            var (overlay, p1) = await StartLineAsync(log);
            var p2 = await overlay.AddPeerAsync(upload: 2, configure: LinePeer);
            await UntilRightAsync(p2, p1);
            if (RoomForLies(p1.Coordinate, p2.Coordinate) is not { } none) return overlay;
            await overlay.DisposeAsync();
            Assert.True(attempt < 5, $"no room for a lie to move a peer in {attempt} overlays: the last put p1 at {p1.Coordinate}, p2 at {p2.Coordinate}: {none}");
        }
    }

    /// <summary>
    /// Null when a peer that says it is beside p1, or beside p2 (<see cref="Beside"/>), is nearer
    /// it than the other by estimate by half as much again as a latency move needs (the gain
    /// <see cref="Planner.ImproveLatency(int, Func{int, int, MeasuredEdgeRtt?})"/> asks of a leaf,
    /// p1 and p2 each 100 ms from the source), so that the lie can move it (the plan's coordinates
    /// of the two move a little with their heartbeats); else why not. Whatever a peer claims, its
    /// gain from p2 is at most the distance of p1 and p2 in the plane plus p1's height less p2's:
    /// a loaded run timed out waiting for the liar's move with p2's height 101 ms and 21 ms from
    /// the coordinator in the plane (p1's height 20 ms, 95 ms in the plane), a gain of 21 ms where
    /// a move needs 45.
    /// </summary>
    private static string? RoomForLies(NetworkCoordinate p1, NetworkCoordinate p2)
    {
        string? Gain(NetworkCoordinate from, NetworkCoordinate to, string name)
        {
            var liar = Node.FromWire(Beside(Node.ToWire(to), 0.3f));
            double now = from.EstimateRtt(liar), gain = now - to.EstimateRtt(liar);
            double needed = Math.Max(Planner.ImproveMinGainMs, Planner.ImproveMinGainShare * (100 + now));
            return gain >= 1.5 * needed ? null : $"beside {name}, a peer is {gain:F0} ms nearer it than the other by estimate, and a move needs {needed:F0}";
        }
        return Gain(p1, p2, "p2") ?? Gain(p2, p1, "p1");
    }

    /// <summary>
    /// The line of <see cref="StartAsync"/> up to p1, whose coordinate is right: p2 joins once it
    /// is, since it fits its own to what it measures to p1 and the coordinator, and p1's must be
    /// right for the two to end up apart.
    /// </summary>
    internal static async Task<(Overlay Overlay, Peer P1)> StartLineAsync(LogCapture? log)
    {
        double[] at = [0, -100, 100, 0];
        var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { LatencyAware = true, LatencyMovesPerSecond = 4, LatencyMoveInterval = TimeSpan.FromMilliseconds(250) }, loggers: log?.Factory);
        overlay.Network.UseLatencyModel(["coord", "p1", "p2", "liar"], (i, j) => TimeSpan.FromMilliseconds(Math.Abs(at[i] - at[j]) / 2));
        var p1 = await overlay.AddPeerAsync(upload: 2, configure: LinePeer);
        await UntilRightAsync(p1, null);
        return (overlay, p1);
    }

    /// <summary>
    /// A peer on the line pings every 250 ms until 4 samples, then every 1.25 s (the default
    /// interval is 2 s): its coordinate comes right after as many samples as at the CLI's 1 s, in
    /// a quarter of the time.
    /// </summary>
    internal static PeerOptions LinePeer(PeerOptions o) => o with { HeartbeatInterval = TimeSpan.FromMilliseconds(250) };

    /// <summary>
    /// Waits until <paramref name="peer"/>'s coordinate is right, and sure enough for a move by
    /// estimate, for 2 s on end (its heartbeats bring it to the coordinator, and the coordinator's
    /// landmarks show it to a joiner), up to <paramref name="within"/> (3 minutes unless given): an
    /// estimated RTT to the coordinator within 30 ms of the 100 ms on the line, more than 100 ms to
    /// <paramref name="other"/> (200 on the line), and an error of at most 0.4. A first sample
    /// that a loaded host inflated (seen: 1.2 s) fits it far off, and sure of it (one landmark, one
    /// sample, a perfect fit); later samples bring it back. p2's direction from the coordinator is
    /// set by its fit alone (afterwards it measures only the coordinator): a late answer to its
    /// Landmarks set it wrong for good (once in a loaded CI run) before a peer fitted again with
    /// its control link's least RTT (LateLandmarksTests).
    /// </summary>
    internal static async Task UntilRightAsync(Peer peer, Peer? other, TimeSpan? within = null)
    {
        bool Right() => peer.Coordinate is { Error: <= 0.4 } c && Math.Abs(c.EstimateRtt(Coordinator.Anchor) - 100) <= 30
            && (other is null || c.EstimateRtt(other.Coordinate) > 100);
        var bound = within ?? 3 * Overlay.Deadline;
        var deadline = DateTime.UtcNow + bound;
        var since = DateTime.MaxValue;
        while (DateTime.UtcNow - since < TimeSpan.FromSeconds(2))
        {
            Assert.True(DateTime.UtcNow < deadline, $"peer {peer.Id}'s coordinate is not right after {bound.TotalSeconds:0} s: {peer.Coordinate}{(other is null ? "" : $", {peer.Coordinate.EstimateRtt(other.Coordinate):0.#} ms from peer {other.Id}'s {other.Coordinate} by estimate")}");
            if (!Right()) since = DateTime.MaxValue;
            else if (since == DateTime.MaxValue) since = DateTime.UtcNow;
            await Task.Delay(100);
        }
    }

    /// <summary>
    /// True when the plan holds coordinates for <paramref name="near"/> and <paramref name="far"/>
    /// sure enough to move a peer by (<see cref="Planner.ImproveMaxError"/>) and more than 100 ms
    /// apart by estimate (200 on the line): without that nothing the tests see says anything.
    /// </summary>
    private static bool PlanSure(Overlay overlay, Landmark near, Landmark far) => Sure(overlay.Coordinator.PlannedCoordinate((int)near.Id), overlay.Coordinator.PlannedCoordinate((int)far.Id));

    private static bool Sure(NetworkCoordinate near, NetworkCoordinate far) =>
        near.Error <= Planner.ImproveMaxError && far.Error <= Planner.ImproveMaxError && near.EstimateRtt(far) > 100;

    private static string PlanSays(Overlay overlay, Landmark near, Landmark far)
    {
        var (n, f) = (overlay.Coordinator.PlannedCoordinate((int)near.Id), overlay.Coordinator.PlannedCoordinate((int)far.Id));
        return $"the plan holds p1 at {n}, p2 at {f}, {n.EstimateRtt(f):F0} ms apart by estimate";
    }

    /// <summary>
    /// The liar joins as a viewer that uploads nothing: it asks for landmarks (every peer's
    /// coordinate), then joins next to p1 ("near"), which it says it measured at 5 ms; p2 is "far".
    /// The landmarks must show p1 and p2 apart and sure (<see cref="Sure"/>). A peer's error grows
    /// again for a while when a stalled machine inflates its pings (more than its last 4 samples),
    /// and the plan takes it from its heartbeats: landmarks that catch such a moment are dropped
    /// (the connection closed before the join) and asked for again once the plan is sure of both
    /// again, up to a deadline.
    /// </summary>
    private async Task<Liar> JoinAsync(Overlay overlay)
    {
        var deadline = DateTime.UtcNow + 3 * Overlay.Deadline;
        while (true)
        {
            var connection = await overlay.Network.Host("liar").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
            var nonce = new byte[Protocol.NonceLength];
            new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0, 0, [], "liar:1", nonce, null, WireCoordinate.Unknown).Write(connection.Pipe.Output);
            await connection.Pipe.Output.FlushAsync();
            var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
            Assert.Equal(FrameType.Landmarks, type);
            var landmarksReader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
            Assert.True(Landmarks.TryRead(ref landmarksReader, out var landmarks));
            var near = landmarks.Nodes.Single(n => n.Address == "p1:1");
            var far = landmarks.Nodes.Single(n => n.Address == "p2:1");
            var nearAt = Node.FromWire(near.Coordinate);
            var farAt = Node.FromWire(far.Coordinate);
            output.WriteLine($"p1 at {nearAt}, p2 at {farAt}: {nearAt.EstimateRtt(farAt):F0} ms apart by estimate");
            if (!Sure(nearAt, farAt))
            {
                await connection.DisposeAsync();
                Assert.True(DateTime.UtcNow < deadline, $"the coordinator's coordinates of p1 and p2 are not sure and apart by {(3 * Overlay.Deadline).TotalSeconds:0} s: p1 at {nearAt}, p2 at {farAt}, {nearAt.EstimateRtt(farAt):F0} ms apart by estimate");
                await Overlay.WaitUntilAsync(() => PlanSure(overlay, near, far), $"the plan is sure of p1 and p2 again ({PlanSays(overlay, near, far)})", deadline - DateTime.UtcNow);
                continue;
            }
            return await PlaceAsync(connection, nonce, near, far);
        }
    }

    /// <summary>The liar's join, once the landmarks it was given show p1 and p2 apart and sure.</summary>
    private static async Task<Liar> PlaceAsync(IConnection connection, byte[] nonce, Landmark near, Landmark far)
    {
        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0, 0, [], "liar:1", nonce, null,
            near.Coordinate with { Error = 0.3f }, [new MeasuredRtt(near.Id, 5_000)]).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
        Assert.Equal(FrameType.Welcome, type);
        var welcomeReader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.True(Welcome.TryRead(ref welcomeReader, out var welcome));
        Assert.Equal(near.Id, welcome.Shards[0].ParentId);
        return new Liar(connection, (int)welcome.PeerId, near, far);
    }

    /// <summary>A coordinate 5% farther from the origin than <paramref name="c"/>, with the least height (a node with a short access link) and error <paramref name="error"/>.</summary>
    private static WireCoordinate Beside(WireCoordinate c, float error) => new(c.X * 1.05f, c.Y * 1.05f, (float)Vivaldi.MinHeight, error);

    /// <summary>
    /// The liar's control link once it is placed: it heartbeats <see cref="Lie"/> every 200 ms (so
    /// its link stays alive too) and keeps every Move it is sent.
    /// </summary>
    private sealed class Liar(IConnection connection, int id, Landmark near, Landmark far)
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Move> _moves = [];
        private Task _lying = Task.CompletedTask;
        private Task _reading = Task.CompletedTask;

        public int Id => id;

        /// <summary>Its parent at join.</summary>
        public Landmark Near => near;

        /// <summary>The other peer.</summary>
        public Landmark Far => far;

        private Heartbeat _lie;

        /// <summary>What it heartbeats; changed by the test as it goes.</summary>
        public Heartbeat Lie
        {
            get
            {
                lock (_moves) return _lie;
            }
            set
            {
                lock (_moves) _lie = value;
            }
        }

        public IReadOnlyList<Move> Moves
        {
            get
            {
                lock (_moves) return [.. _moves];
            }
        }

        public void Start()
        {
            _lying = LieAsync();
            _reading = ReadMovesAsync();
        }

        public async Task StopAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_lying, _reading);
            connection.Abort();
        }

        private async Task LieAsync()
        {
            var output = connection.Pipe.Output;
            try
            {
                for (ulong i = 1; ; i++)
                {
                    (Lie with { Value = i }).Write(output);
                    await output.FlushAsync(_stop.Token);
                    await Task.Delay(200, _stop.Token);
                }
            }
            catch (OperationCanceledException)
            {
                // Stopped.
            }
        }

        private async Task ReadMovesAsync()
        {
            var input = connection.Pipe.Input;
            try
            {
                while (true)
                {
                    var result = await input.ReadAsync(_stop.Token);
                    var buffer = result.Buffer;
                    while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
                    {
                        var reader = new SequenceReader<byte>(body);
                        if (type == FrameType.Move && Move.TryRead(ref reader, out var move))
                            lock (_moves) _moves.Add(move);
                    }
                    input.AdvanceTo(buffer.Start, buffer.End);
                    if (result.IsCompleted) return;
                }
            }
            catch (OperationCanceledException)
            {
                // Stopped.
            }
        }
    }
}

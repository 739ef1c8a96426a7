using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A first join whose Welcome is lost (the connection breaks after the coordinator placed the
/// joiner) is tried again by the peer as a new join with the same join token. The coordinator
/// must end up with one listed session for that peer, and a later rejoin in place must find the
/// peer's own session, not a ghost of the lost Welcome.
/// </summary>
public sealed class RetriedFirstJoinTests
{
    /// <summary>
    /// The way to the coordinator ("door:1", on its own host): passes each connection on, except
    /// that the coordinator's answer on the first is dropped and both sides are reset (a Welcome
    /// lost as the connection broke); the second is passed on only once <see cref="Release"/> is
    /// called, and the last one passed on can be broken (<see cref="BreakLast"/>).
    /// </summary>
    private sealed class Door : IAsyncDisposable
    {
        private readonly IConnectionListener _listener;
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly Task _serving;
        private Tuple<IConnection, IConnection>? _last;
        private int _accepted;
        private volatile bool _welcomeDropped;

        private Door(IConnectionListener listener, Overlay overlay)
        {
            _listener = listener;
            _serving = ServeAsync(overlay);
        }

        public static async Task<Door> OpenAsync(Overlay overlay, bool holdSecond)
        {
            var door = new Door(await overlay.Network.Host("door").ListenAsync(Address, CancellationToken.None), overlay);
            if (!holdSecond) door.Release();
            return door;
        }

        public const string Address = "door:1";

        /// <summary>The join token of the Join on the first connection passed on.</summary>
        public ulong FirstToken { get; private set; }

        /// <summary>True once the coordinator's answer to the first connection was dropped and both sides reset.</summary>
        public bool WelcomeDropped => _welcomeDropped;

        public void Release() => _release.TrySetResult();

        /// <summary>Resets both sides of the connection passed on last (the peer's control link breaks).</summary>
        public void BreakLast()
        {
            var (down, up) = Volatile.Read(ref _last) ?? throw new InvalidOperationException("no connection passed on yet");
            down.Abort();
            up.Abort();
        }

        private async Task ServeAsync(Overlay overlay)
        {
            try
            {
                while (await _listener.AcceptAsync(CancellationToken.None) is { } down)
                {
                    int n = Interlocked.Increment(ref _accepted);
                    if (n == 2) await _release.Task;
                    var up = await overlay.Network.Host("door").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
                    if (n == 1)
                    {
                        // The joiner's Join, read as the node a joiner goes through can (docs/security.md), and passed on.
                        var (type, body) = await RawFrames.ReadAsync(down.Pipe.Input);
                        var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(body));
                        if (type != ShardStream.Wire.FrameType.Hello || !ShardStream.Wire.Hello.TryRead(ref reader, out var join)) throw new IOException($"the door read a {type} frame first, not a Join");
                        FirstToken = join.PeerId;
                        join.Write(up.Pipe.Output);
                        await up.Pipe.Output.FlushAsync();
                    }
                    _ = FirstJoinTests.PumpAsync(down.Pipe.Input, up.Pipe.Output);
                    if (n == 1)
                    {
                        _ = DropAnswerAsync(down, up);
                        continue;
                    }
                    _ = FirstJoinTests.PumpAsync(up.Pipe.Input, down.Pipe.Output);
                    Volatile.Write(ref _last, Tuple.Create(down, up));
                }
            }
            catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException or IOException)
            {
                // The test is over.
            }
        }

        /// <summary>Reads the coordinator's first bytes (its Welcome: the joiner is placed), passes none on, and resets both sides.</summary>
        private async Task DropAnswerAsync(IConnection down, IConnection up)
        {
            try
            {
                await up.Pipe.Input.ReadAsync();
            }
            catch (IOException)
            {
                // Reset already: the same.
            }
            up.Abort();
            down.Abort();
            _welcomeDropped = true;
        }

        public async ValueTask DisposeAsync()
        {
            await _listener.DisposeAsync();
            Release();
            await _serving.WaitAsync(Overlay.Deadline);
        }
    }

    private static List<OverlayNode> Listed(Overlay overlay) => [.. overlay.Coordinator.Snapshot().Nodes.Where(n => n.Id != 0)];

    private static string Describe(IEnumerable<OverlayNode> nodes) => string.Join("; ", nodes.Select(n => $"{n.Id} {n.Address} under {n.Parents[0]}"));

    /// <summary>
    /// The peer's first join is placed (peer G) and its Welcome lost; before its second join,
    /// another peer leaves (the coordinator's list gets a free slot); the second join places it
    /// again. Its control link then breaks, and it joins again in its place: it must keep the id
    /// it streams under, the one its second join gave it.
    /// </summary>
    [Fact]
    public async Task A_peer_whose_first_welcome_was_lost_keeps_its_id_when_it_joins_again_in_its_place()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, configure: o => o with { RejoinGrace = TimeSpan.FromMinutes(3) }, loggers: logs.Factory);
        var leaver = await overlay.AddPeerAsync(upload: 0);
        await using var door = await Door.OpenAsync(overlay, holdSecond: true);
        var joining = overlay.AddPeerAsync(joinAddress: Door.Address, upload: 0);
        await Overlay.WaitUntilAsync(() => door.WelcomeDropped, "the coordinator answered the peer's first join, and the answer was lost");
        await Overlay.WaitUntilAsync(() => Listed(overlay).Count == 2, "the peer's first join is listed");
        int firstPlace = Listed(overlay).Single(n => n.Id != leaver.Id).Id;
        await leaver.LeaveAsync(Overlay.Deadline);
        await Overlay.WaitUntilAsync(() => Listed(overlay).All(n => n.Id != leaver.Id), "the leaver is out");
        door.Release();
        var peer = await joining;
        int id = peer.Id;

        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 91));
        await Overlay.WaitUntilAsync(() => peer.BytesWritten == 100_000, "the peer has the first part");

        door.BreakLast();
        await Overlay.WaitUntilAsync(() => peer.Rejoins == 1, "the peer joined again after its control link broke");
        Assert.True(peer.Id == id, $"the peer streamed as peer {id} and joined again as peer {peer.Id} (its lost first join was peer {firstPlace}); listed: {Describe(Listed(overlay))}");
        Assert.Contains(logs.Lines, l => l.Message.Contains($"peer {id} (p2:1) joined again on a new connection", StringComparison.Ordinal));

        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 92));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(overlay.Peers.Single(p => p.Peer == peer));
    }

    private static int Parent(Overlay overlay, int id) => Listed(overlay).SingleOrDefault(n => n.Id == id)?.Parents[0] ?? -1;

    /// <summary>
    /// A stronger joiner (upload 2) takes a relay's place under the coordinator (which serves one
    /// child), and the relay is moved under it; the joiner's Welcome is lost. Its second join must
    /// take its own place at once: one listed entry per peer, the relay's move to it stands (no
    /// repair moves it again), and every viewer gets every byte.
    /// </summary>
    [Fact]
    public async Task A_join_tried_again_after_its_welcome_was_lost_takes_its_own_place_and_nobody_is_moved()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, configure: o => o with { Upload = 1 }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 1);
        var viewer = await overlay.AddPeerAsync(upload: 0);
        Assert.Equal(0, Parent(overlay, relay.Id));
        Assert.Equal(relay.Id, Parent(overlay, viewer.Id));
        await using var door = await Door.OpenAsync(overlay, holdSecond: true);
        var joining = overlay.AddPeerAsync(joinAddress: Door.Address, upload: 2);
        await Overlay.WaitUntilAsync(() => door.WelcomeDropped, "the coordinator answered the joiner's first join, and the answer was lost");
        int placed = Listed(overlay).Single(n => n.Id != relay.Id && n.Id != viewer.Id).Id;
        Assert.True(Parent(overlay, relay.Id) == placed, $"the joiner (peer {placed}) did not take the relay's place: {Describe(Listed(overlay))}");
        int viewerParent = Parent(overlay, viewer.Id);
        door.Release();
        var peer = await joining;

        // What a user checks: one entry per peer, the joiner in the place its first join was given.
        Assert.True(Listed(overlay).Count == 3, $"listed for 3 peers: {Describe(Listed(overlay))}");
        Assert.Equal(placed, peer.Id);
        Assert.Contains(logs.Lines, l => l.Message.Contains($"peer {placed} (p3:1) joined again as new on a new connection before it read its Welcome", StringComparison.Ordinal));

        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, 93));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == 200_000),
            $"every viewer has the stream (listed: {Describe(Listed(overlay))}; the relay's parents {string.Join(",", relay.ParentIds())})");
        Assert.Equal(placed, Parent(overlay, relay.Id));
        Assert.Equal(viewerParent, Parent(overlay, viewer.Id));
        Assert.Equal(0, relay.Rejoins);
        Assert.Equal(0, viewer.Rejoins);
        Assert.DoesNotContain(logs.Lines, l => l.Message.Contains($"lost parent {placed}", StringComparison.Ordinal));
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }

    /// <summary>
    /// A first join (no resume points) with the join token of a listed peer that has read its
    /// Welcome is not that peer's (it joins again with its next chunks): it is refused, and the
    /// peer stays listed once. Placed, it was a second session with the peer's token, and the
    /// peer's next rejoin in place could take that one's id.
    /// </summary>
    [Fact]
    public async Task A_first_join_with_the_token_of_a_peer_that_read_its_welcome_is_refused()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, loggers: logs.Factory);
        var peer = await overlay.AddPeerAsync(upload: 0);
        await Overlay.WaitUntilAsync(() => logs.Has(Microsoft.Extensions.Logging.LogLevel.Debug, $"peer {peer.Id} attached to all its parents"), "the coordinator heard the peer's Attached");
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 94));
        await Overlay.WaitUntilAsync(() => peer.BytesWritten == 100_000, "the peer has the first part");

        // Another node joins as new with the peer's token (the node a peer joins through sees it).
        var hello = new ShardStream.Wire.Hello(ShardStream.Wire.Protocol.MinVersion, ShardStream.Wire.Protocol.Version, ShardStream.Wire.HelloRole.Join, peer.Token, 0, [], "stranger:1",
            new byte[ShardStream.Wire.Protocol.NonceLength]);
        var (type, reason) = await Adversary.UnauthorisedControlTests.AskAsync(overlay, overlay.Coordinator.ListenAddress, hello);
        Assert.True(type == ShardStream.Wire.FrameType.Goodbye, $"answered with {type}; listed: {Describe(Listed(overlay))}");
        Assert.Contains($"is listed peer {peer.Id}'s, which read its Welcome", reason);
        Assert.True(Listed(overlay).Count == 1, $"listed: {Describe(Listed(overlay))}");

        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 95));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(overlay.Peers.Single());
    }

    /// <summary>
    /// The joiner's first Welcome is lost. Meanwhile a stranger that learned the joiner's token
    /// (here the way the joiner went, which read its Join; a reachability probe no longer shows it,
    /// ProbedTokenTests) joins with that token before the joiner tries again, takes its place (its
    /// Welcome is sent again) and says it attached. The joiner's own join is then another node's
    /// to the coordinator and is refused: it must join again under a token of its own, not end.
    /// </summary>
    [Fact]
    public async Task A_joiner_whose_token_a_stranger_took_its_place_with_before_its_retry_joins_again_under_a_token_of_its_own()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, loggers: logs.Factory);
        await using var door = await Door.OpenAsync(overlay, holdSecond: true);
        var joining = overlay.AddPeerAsync(joinAddress: Door.Address, upload: 0);
        await Overlay.WaitUntilAsync(() => door.WelcomeDropped, "the coordinator answered the joiner's first join, and the answer was lost");
        var placed = Listed(overlay).Single();
        ulong stolen = door.FirstToken;

        await using var impostor = await Adversary.StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "mallory", token: stolen);
        Assert.Equal(placed.Id, impostor.Id);
        await impostor.SendAsync(o => new ShardStream.Wire.Attached((ulong)impostor.Id).Write(o));
        await Overlay.WaitUntilAsync(() => logs.Has(Microsoft.Extensions.Logging.LogLevel.Debug, $"peer {placed.Id} attached to all its parents"), "the coordinator heard the impostor's Attached");

        door.Release();
        var peer = await joining;
        Assert.True(peer.Id != placed.Id && peer.Token != stolen, $"the joiner is peer {peer.Id} with token {peer.Token:x}, the impostor peer {placed.Id} with {stolen:x}");
        Assert.True(Listed(overlay).Count == 2, $"listed: {Describe(Listed(overlay))}");

        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 97));
        await Overlay.WaitUntilAsync(() => peer.BytesWritten == 100_000, "the joiner has the stream");
    }

    /// <summary>
    /// The joiner's first Welcome is lost while the stream runs, and its second join comes only
    /// once the chunk its first Welcome started it at has left the coordinator's replay window
    /// (3 s here; a joiner's lost answers and Busy retries can take 30 s, the default window).
    /// The Welcome sent again must start it where its parent can still replay from, as a first
    /// join now would, not at that chunk: else its output begins with a gap, counted lost.
    /// </summary>
    [Fact]
    public async Task A_welcome_sent_again_after_the_first_join_point_left_the_replay_window_starts_the_joiner_inside_it()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, configure: o => o with { ReplayWindowAge = TimeSpan.FromSeconds(3) }, loggers: logs.Factory);
        overlay.StartStreaming();
        int seed = 200;
        await overlay.WriteAsync(Overlay.RandomBytes(10_000, seed++));
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.WindowOf(0).Newest >= 0, "the coordinator cut its first chunk");
        await using var door = await Door.OpenAsync(overlay, holdSecond: true);
        var joining = overlay.AddPeerAsync(joinAddress: Door.Address, upload: 0);
        await Overlay.WaitUntilAsync(() => door.WelcomeDropped, "the coordinator answered the joiner's first join, and the answer was lost");
        long newestAtPlacement = overlay.Coordinator.WindowOf(0).Newest;

        // A live source: a little every 100 ms, until the window no longer holds the first join point.
        var deadline = DateTime.UtcNow + Overlay.Deadline;
        while (overlay.Coordinator.WindowOf(0).Oldest <= newestAtPlacement)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the window still holds chunk {newestAtPlacement}: {overlay.Coordinator.WindowOf(0)}");
            await overlay.WriteAsync(Overlay.RandomBytes(2_000, seed++));
            await Task.Delay(100);
        }
        door.Release();
        var peer = await joining;
        Assert.Contains(logs.Lines, l => l.Message.Contains($"peer {peer.Id} (p1:1) joined again as new on a new connection before it read its Welcome", StringComparison.Ordinal)
            && l.Message.Contains("may have left the replay windows, so it starts at chunk", StringComparison.Ordinal));

        await overlay.WriteAsync(Overlay.RandomBytes(20_000, seed));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(overlay.Peers.Single());
    }
    /// <summary>
    /// A stronger joiner (upload 3) takes a relay's place under the coordinator, the relay and its
    /// viewer are moved under it (their Moves name the joiner's first join point, chunk 0), and a
    /// late viewer is placed under it while its Welcome is lost (its entry starts at its own join
    /// point). The joiner's second join comes once its first join point is older than its parents
    /// surely hold (half the 10 s window less the 2 s join backlog), so the Welcome sent again starts
    /// it later, at the point a first join gets then (2 s back), past the late viewer's. Every child placed under it must still write the whole stream from its own join
    /// point: the late viewer, which had no other parent, needs the chunks between its join point
    /// and the joiner's new one from the coordinator.
    /// </summary>
    [Fact]
    public async Task The_children_of_a_joiner_whose_welcome_sent_again_moved_its_join_point_lose_no_byte()
    {
        var logs = new LogCapture();
        var window = TimeSpan.FromSeconds(10);
        await using var overlay = await Overlay.StartAsync(1, configure: o => o with { Upload = 1, ReplayWindowAge = window }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 1);
        var viewer = await overlay.AddPeerAsync(upload: 0);
        overlay.StartStreaming();
        int seed = 300;
        await overlay.WriteAsync(Overlay.RandomBytes(10_000, seed++));
        await Overlay.WaitUntilAsync(() => relay.BytesWritten == 10_000 && viewer.BytesWritten == 10_000, "the relay and its viewer have the first part");
        await using var door = await Door.OpenAsync(overlay, holdSecond: true);
        var joining = overlay.AddPeerAsync(joinAddress: Door.Address, upload: 3);
        await Overlay.WaitUntilAsync(() => door.WelcomeDropped, "the coordinator answered the joiner's first join, and the answer was lost");
        var placedAt = DateTime.UtcNow;
        int placed = Listed(overlay).Single(n => n.Id != relay.Id && n.Id != viewer.Id).Id;
        Assert.True(Parent(overlay, relay.Id) == placed, $"the joiner (peer {placed}) did not take the relay's place: {Describe(Listed(overlay))}");
        // On a host of its own: the joiner, not yet in the overlay's list, is p3.
        // It attaches to the joiner once the joiner streams: its join ends after the joiner's.
        var lateJoining = overlay.AddPeerAsync(upload: 0, configure: o => o with { ListenAddress = "late:1" }, network: _ => overlay.Network.Host("late"));
        await Overlay.WaitUntilAsync(() => Listed(overlay).Count == 4, "the late viewer is placed");
        int lateId = Listed(overlay).Single(n => n.Address == "late:1").Id;
        Assert.True(Parent(overlay, lateId) == placed, $"the late viewer (peer {lateId}) is not under the joiner (peer {placed}): {Describe(Listed(overlay))}");

        // A live source, a little every 100 ms, until the first join point is older than the
        // coordinator takes the joiner's parents to hold surely, and a first join's point (2 s back)
        // is past the late viewer's; the coordinator's window still holds both.
        var surely = window / 2 - new CoordinatorOptions().JoinBacklog;
        while (DateTime.UtcNow - placedAt < surely + TimeSpan.FromSeconds(1))
        {
            await overlay.WriteAsync(Overlay.RandomBytes(2_000, seed++));
            await Task.Delay(100);
        }
        string plan = Describe(Listed(overlay));
        door.Release();
        var peer = await joining;
        Assert.Equal(placed, peer.Id);
        await lateJoining;
        await Overlay.WaitUntilAsync(() => logs.Lines.Any(l => l.Message.Contains($"peer {placed} (p3:1) joined again as new on a new connection before it read its Welcome", StringComparison.Ordinal)),
            "the coordinator sent the joiner's Welcome again");
        string again = string.Join("; ", logs.Lines.Where(l => l.Message.Contains("joined again", StringComparison.Ordinal)).Select(l => l.Message));
        Assert.True(again.Contains("may have left the replay windows, so it starts at chunk", StringComparison.Ordinal), $"the Welcome sent again kept the join point: {again}");

        await overlay.WriteAsync(Overlay.RandomBytes(20_000, seed));
        await overlay.EndAsync();
        foreach (var p in overlay.Peers)
        {
            var failure = await Record.ExceptionAsync(() => overlay.AssertIdenticalAsync(p));
            Assert.True(failure is null, $"{failure?.Message} (the plan at the second join: {plan}; the late viewer is peer {lateId})");
        }
    }
}

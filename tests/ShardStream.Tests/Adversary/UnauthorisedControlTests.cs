using System.Buffers;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A stranger that speaks the protocol asks for what the coordinator did not give it: a node
/// serves only a child the coordinator placed under it, for the shards placed, once; a joiner's
/// declared upload is believed only up to the cap.
/// </summary>
public class UnauthorisedControlTests
{
    [Fact]
    public async Task An_attach_without_a_ticket_is_refused_with_the_reason()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1);
        var peer = await overlay.AddPeerAsync();

        var (type, reason) = await AskAsync(overlay, peer.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Attach, 77, 0, [new ShardStart(0, 0)], "stranger:1"));

        Assert.Equal(FrameType.Goodbye, type);
        Assert.Contains("no admission ticket", reason);
    }

    [Fact]
    public async Task The_same_shard_asked_sixteen_times_is_refused_even_with_a_ticket()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1);
        var ticket = overlay.Coordinator.IssueTicket(parentId: 0, childId: 77, shards: 0);
        var sixteen = Enumerable.Repeat(new ShardStart(0, 0), 16).ToArray();

        var (type, reason) = await AskAsync(overlay, overlay.Coordinator.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Attach, 77, 0, sixteen, "stranger:1", null, ticket));

        Assert.Equal(FrameType.Goodbye, type);
        Assert.Contains("asked more than once", reason);
    }

    [Fact]
    public async Task A_ticket_admits_once_and_only_the_child_and_parent_it_names()
    {
        await using var overlay = await Overlay.StartAsync(shards: 2);
        var peer = await overlay.AddPeerAsync();
        var ticket = overlay.Coordinator.IssueTicket(parentId: 0, childId: 77, shards: 0);
        Hello Attach(ulong child, byte shard, byte[] t) => new(Protocol.MinVersion, Protocol.Version, HelloRole.Attach, child, 0, [new ShardStart(shard, 0)], "stranger:1", null, t);

        var other = await AskAsync(overlay, overlay.Coordinator.ListenAddress, Attach(78, 0, ticket));
        var wrongShard = await AskAsync(overlay, overlay.Coordinator.ListenAddress, Attach(77, 1, ticket));
        var wrongParent = await AskAsync(overlay, peer.ListenAddress, Attach(77, 0, ticket));
        var first = await AskAsync(overlay, overlay.Coordinator.ListenAddress, Attach(77, 0, ticket));
        var again = await AskAsync(overlay, overlay.Coordinator.ListenAddress, Attach(77, 0, ticket));

        Assert.Contains("is for peer 77, not peer 78", other.Reason);
        Assert.Contains("does not cover", wrongShard.Reason);
        Assert.Contains("is for node 0", wrongParent.Reason);
        Assert.Equal(FrameType.Welcome, first.Type);
        Assert.Equal(FrameType.Goodbye, again.Type);
        Assert.Contains("used already", again.Reason);
    }

    [Fact]
    public async Task A_joiner_that_claims_655_times_the_stream_rate_is_counted_at_the_cap()
    {
        await using var overlay = await Overlay.StartAsync(shards: 2, configure: o => o with { MaxPeerUpload = 3 });
        var nonce = new byte[Protocol.NonceLength];

        // The liar answers the coordinator's reachability probe with the proof of its join token (a joiner that
        // nobody can reach at "liar:1" would be placed as a leaf, budget 0, whatever it claims).
        const ulong token = 0x1234;
        await using var listener = await overlay.Network.Host("liar").ListenAsync("liar:1", CancellationToken.None);
        var probe = ProbeAnswer.AnswerAsync(listener, token);
        var (type, _) = await AskAsync(overlay, overlay.Coordinator.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, token, 65_534, [], "liar:1", nonce), keepOpen: true);
        await probe;

        Assert.Equal(FrameType.Welcome, type);
        var liar = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Address == "liar:1");
        Assert.Equal(6, liar.Budget); // floor(3 x K), not floor(655.34 x K) = 1310
    }

    /// <summary>
    /// A latency-aware coordinator reads a joiner's Join twice (the landmark round, then the
    /// placing Join): the capped claim was logged at each (event 1670 twice for one joiner, seen in
    /// the security.md audit with the CLI's default --latency-aware true). It is logged once, at the
    /// Join that places the joiner; and a joiner that declares no upload (the default, (K+1)/K) is
    /// said to declare that, not 655.35x (the wire's "default" value read as a percentage).
    /// </summary>
    [Fact]
    public async Task A_claim_over_the_cap_is_logged_once_for_a_joiner_that_measured_landmarks_first()
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { MaxPeerUpload = 1, LatencyAware = true }, loggers: log);
        var claimer = await overlay.AddPeerAsync(upload: 100);
        var quiet = await overlay.AddPeerAsync();
        Assert.True(log.Lines.Any(l => l.Id.Id == 1713), "the joiners measured no landmarks:\n" + log.Dump()); // "measured 1 of 1 node(s) the coordinator named"
        string[] capped = [.. log.Lines.Where(l => l.Id.Id == 1670).Select(l => l.Message)];
        Assert.True(capped.Length == 2, log.Dump());
        Assert.StartsWith("a joiner from p1:1 declares an upload of 100x the stream rate; counted as the cap, 1x", capped[0]);
        Assert.StartsWith("a joiner from p2:1 declares an upload of 2x the stream rate; counted as the cap, 1x", capped[1]);
        Assert.All(new[] { claimer, quiet }, p => Assert.Equal(1, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == p.Id).Budget));
    }

    [Fact]
    public async Task An_accusation_against_a_node_that_is_not_the_accusers_parent_evicts_no_one()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1);
        var a = await overlay.AddPeerAsync();
        var b = await overlay.AddPeerAsync();
        // A stranger joins honestly (under a or b), then accuses the other one of sending forged bytes.
        var (connection, welcome) = await JoinRawAsync(overlay, "accuser");
        ulong parent = welcome.Shards[0].ParentId;
        var stranger = parent == (ulong)a.Id ? b : a;

        new ParentLost((ulong)stranger.Id, [new ShardStart(0, 0)], "bad data: chunk 3 of shard 0 does not match the stream's signed hash").Write(connection.Pipe.Output);
        // Frames on a link are handled in order: once the accuser is gone, its accusation was judged.
        new Leave(welcome.PeerId).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != (int)welcome.PeerId), "the accuser has left");

        Assert.Contains(overlay.Coordinator.Snapshot().Nodes, n => n.Id == stranger.Id);
        connection.Abort();
    }

    /// <summary>
    /// security.md: "Each peer may accuse two parents; the third accusation evicts the accuser".
    /// A stranger under a chain of honest relays accuses each parent the plan gives it: the first
    /// two are cut off, the third stays and the accuser is out of the plan. (No test held the rule
    /// before; with it raised to 20 this fails. Its log line said "accuses a 3th parent".)
    /// </summary>
    [Fact]
    public async Task A_peer_that_accuses_a_third_parent_is_evicted_itself_and_that_parent_stays()
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, loggers: log);
        for (int i = 0; i < 4; i++) await overlay.AddPeerAsync(upload: 1);
        var (connection, welcome) = await JoinRawAsync(overlay, "accuser");
        int me = (int)welcome.PeerId;
        int ParentOfMe() => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == me)?.Parents[0] ?? -1;
        var accused = new List<int>();
        for (int n = 1; n <= 3; n++)
        {
            int parent = ParentOfMe();
            Assert.True(parent > 0, $"accusation {n}: the accuser's parent is {parent}, not a peer:\n{log.Dump()}");
            accused.Add(parent);
            new ParentLost((ulong)parent, [new ShardStart(0, 0)], $"bad data: chunk {n} of shard 0 does not match the stream's signed hash").Write(connection.Pipe.Output);
            await connection.Pipe.Output.FlushAsync();
            if (n < 3) await Overlay.WaitUntilAsync(() => ParentOfMe() != parent, $"accusation {n} cut parent {parent} off and moved the accuser");
        }
        await Overlay.WaitUntilAsync(() => ParentOfMe() == -1, "the accuser is out of the plan");
        var ids = overlay.Coordinator.Snapshot().Nodes.Select(n => n.Id).ToList();
        Assert.DoesNotContain(accused[0], ids);
        Assert.DoesNotContain(accused[1], ids);
        Assert.Contains(accused[2], ids);
        Assert.Contains(log.Lines, l => l.Id.Id == 1674 && l.Message.StartsWith($"peer {me} accuses parent {accused[2]} after accusing 2 others", StringComparison.Ordinal));
        connection.Abort();
    }

    [Fact]
    public async Task An_accusation_that_comes_after_the_accused_parent_left_still_cuts_it_off()
    {
        // A child closes the link of a parent it caught lying before it reports it, and a parent
        // that has the whole stream leaves once its children closed: the report can come after the
        // liar left (CliLyingRelayTests(flip) once lacked the coordinator's "is cut off" line).
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, loggers: log.Factory);
        var liar = await overlay.AddPeerAsync();
        // The child joins under it (the coordinator feeds one child).
        var (connection, welcome) = await JoinRawAsync(overlay, "accuser");
        Assert.Equal((ulong)liar.Id, welcome.Shards[0].ParentId);

        // The liar leaves first; the child's report comes after.
        await liar.LeaveAsync(Overlay.Deadline);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != liar.Id), "the liar has left");
        new ParentLost((ulong)liar.Id, [new ShardStart(0, 0)], "bad data: chunk 3 of shard 0 does not match the stream's signed hash").Write(connection.Pipe.Output);
        // Frames on a link are handled in order: once the child is gone, its accusation was judged.
        new Leave(welcome.PeerId).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != (int)welcome.PeerId), "the child has left");
        connection.Abort();

        // The coordinator says so, as for a liar still in the overlay, and refuses the liar's address from now on.
        Assert.True(log.Has(LogLevel.Warning, $"peer {liar.Id} (p1:1) is cut off: its child {welcome.PeerId} reports: bad data"),
            string.Join("\n", log.Lines.Select(l => $"{l.Level}: {l.Message}")));
        var (again, reason) = await AskAsync(overlay, overlay.Coordinator.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0, 0, [], "p1:1", new byte[Protocol.NonceLength]));
        Assert.Equal(FrameType.Goodbye, again);
        Assert.Contains("p1:1 was cut off", reason);
    }

    [Fact]
    public async Task A_fill_that_no_move_asked_for_is_refused_and_serves_no_chunk()
    {
        // The coordinator has room for one child (a), so the stranger is placed under a and its
        // control link carries no chunk of its own.
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, loggers: log.Factory);
        var a = await overlay.AddPeerAsync(upload: 1);
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, 7));
        await Overlay.WaitUntilAsync(() => a.BytesWritten == 200_000, "the first peer has the first 200,000 bytes");

        // A stranger joins honestly, then asks the coordinator to replay shard 0 on its control
        // link from the first chunk on, for ever, though no Move named a parent that starts later.
        var (connection, welcome) = await JoinRawAsync(overlay, "filler");
        Assert.Equal((ulong)a.Id, welcome.Shards[0].ParentId);
        new Fill([new ShardStart(0, 0)], ulong.MaxValue).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();

        // Everything the control link brings until the coordinator says goodbye: never a chunk.
        var goodbye = await RawFrames.ReadUntilGoodbyeAsync(connection.Pipe.Input, type => Assert.NotEqual(FrameType.Chunk, type));
        Assert.Contains("that no move asked for", goodbye.Reason);
        connection.Abort();

        // The stranger is out of the overlay: its place is not kept for it to join again (it did
        // not lose its link, it was cut off; the drain after the end waited the whole 40 s rejoin
        // grace for it).
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != (int)welcome.PeerId), "the stranger is out of the plan");
        Assert.False(log.Has(LogLevel.Information, $"peer {welcome.PeerId}: control link broken on its side"),
            string.Join("\n", log.Lines.Where(l => l.Category == "coordinator").Select(l => l.Message)));

        // The honest peer keeps streaming.
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 8));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(overlay.PeerById(a.Id));
    }

    [Fact]
    public async Task Rejoins_in_place_allow_no_fill_that_no_move_asked_for()
    {
        // The coordinator has room for one child (a), which joins once it read the first 200,000 bytes
        // (no join backlog: at the head), so it holds the stream only from there; the stranger is
        // placed under it, and is never moved.
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1, JoinBacklog = TimeSpan.Zero }, loggers: log.Factory);
        overlay.StartStreaming();
        await overlay.WriteReadAsync(Overlay.RandomBytes(200_000, 11));
        var a = await overlay.AddPeerAsync(upload: 1);
        Assert.True(a.StartOffset > 0, "the first peer joined after the stream began");
        const ulong token = 0x5157_2A6E_11;
        var (first, welcome) = await JoinRawAsync(overlay, "filler", token);
        Assert.Equal((ulong)a.Id, welcome.Shards[0].ParentId);
        ulong until = welcome.StartSeq;
        Assert.True(until > 0, "the stranger's parent holds the stream only from a later chunk");

        // It joins again in its place three times, each time saying it has nothing (chunk 0 next).
        var links = new List<IConnection> { first };
        for (int i = 0; i < 3; i++)
        {
            var (again, rewelcome) = await JoinRawAsync(overlay, "filler", token, [new ShardStart(0, 0)]);
            Assert.Equal(welcome.PeerId, rewelcome.PeerId);
            links.Add(again);
        }

        // On its last control link, it asks the coordinator three times for every chunk before
        // its parent's first: each fill it is allowed is the coordinator's window replayed to it.
        var input = links[^1].Pipe.Input;
        int chunks = 0;
        string refused = "";
        for (int fill = 0; fill < 3 && refused.Length == 0; fill++)
        {
            new Fill([new ShardStart(0, 0)], until).Write(links[^1].Pipe.Output);
            await links[^1].Pipe.Output.FlushAsync();
            for (ulong got = 0; got < until;)
            {
                var (type, body) = await RawFrames.ReadAsync(input);
                if (type == FrameType.Chunk)
                {
                    got++;
                    chunks++;
                }
                else if (type == FrameType.Goodbye)
                {
                    var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
                    Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
                    refused = goodbye.Reason;
                    break;
                }
            }
        }
        foreach (var link in links) link.Abort();

        Assert.True(chunks == 0, $"the stranger was sent {chunks} chunks ({until} before its parent's first, {chunks / (double)until:0.#} times) for fills no move asked for");
        Assert.Contains("that no move asked for", refused);

        // The honest peer keeps streaming.
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 12));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(overlay.PeerById(a.Id));
    }

    [Fact]
    public async Task A_stranger_cut_off_for_a_fill_that_resets_its_link_while_the_goodbye_waits_is_out_at_once()
    {
        // The stranger is the coordinator's child, behind a slow downlink: the coordinator's
        // goodbye for its violation waits behind the chunks queued for it, and the stranger resets
        // its link meanwhile, so the send under way fails.
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: log.Factory);
        overlay.Network.SetDownloadRate("filler", 20_000);
        overlay.StartStreaming();
        var (connection, welcome) = await JoinRawAsync(overlay, "filler");
        Assert.Equal(0UL, welcome.Shards[0].ParentId);
        await overlay.WriteAsync(Overlay.RandomBytes(300_000, 9));
        while ((await RawFrames.ReadAsync(connection.Pipe.Input)).Type != FrameType.Chunk)
        {
        }

        new Fill([new ShardStart(0, 0)], ulong.MaxValue).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        await Overlay.WaitUntilAsync(() => log.Has(LogLevel.Warning, "that no move asked for"), "the coordinator found the violation");
        connection.Abort();

        string broken = $"peer {welcome.PeerId}: control link broken on its side";
        await Overlay.WaitUntilAsync(() => log.Has(LogLevel.Information, broken) || overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != (int)welcome.PeerId),
            "the stranger is out of the plan, or its place is kept");
        Assert.False(log.Has(LogLevel.Information, broken), string.Join("\n", log.Lines.Where(l => l.Category is "coordinator" or "connection").Select(l => l.Message)));
    }

    /// <summary>Sends <paramref name="hello"/> to <paramref name="address"/> from host "stranger" and reads the answer's first frame (a Goodbye's reason with it).</summary>
    internal static async Task<(FrameType Type, string Reason)> AskAsync(Overlay overlay, string address, Hello hello, bool keepOpen = false)
    {
        var connection = await overlay.Network.Host("stranger").ConnectAsync(address, CancellationToken.None);
        hello.Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        using var timeout = new CancellationTokenSource(Overlay.Deadline);
        var input = connection.Pipe.Input;
        while (true)
        {
            var result = await input.ReadAsync(timeout.Token);
            var buffer = result.Buffer;
            if (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
            {
                string reason = "";
                var reader = new SequenceReader<byte>(body);
                if (type == FrameType.Goodbye && Goodbye.TryRead(ref reader, out var goodbye)) reason = goodbye.Reason;
                input.AdvanceTo(buffer.Start);
                if (!keepOpen) connection.Abort();
                return (type, reason);
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) throw new IOException("closed without an answer");
        }
    }

    /// <summary>
    /// A stranger on host <paramref name="host"/> joins as any viewer does and reads its Welcome; the
    /// connection stays the test's. With <paramref name="token"/> and <paramref name="resume"/>, it
    /// joins with that token, and again in its place when the coordinator lists it.
    /// </summary>
    private static async Task<(IConnection Connection, Welcome Welcome)> JoinRawAsync(Overlay overlay, string host, ulong token = 0, ShardStart[]? resume = null)
    {
        var connection = await overlay.Network.Host(host).ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, token, 0, resume ?? [], $"{host}:1", new byte[Protocol.NonceLength]).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
        Assert.Equal(FrameType.Welcome, type);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.True(Welcome.TryRead(ref reader, out var welcome));
        return (connection, welcome);
    }
}

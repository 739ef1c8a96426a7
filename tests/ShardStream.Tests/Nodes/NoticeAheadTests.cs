using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The coordinator's notices to a peer whose control link also carries the stream (the
/// coordinator serves it a shard there) must not wait behind the chunks queued on that link, as
/// Moves do not (<see cref="MoveAheadTests"/>): a slow reader, or one whose reading runs behind,
/// has seconds of stream queued there, and it acts on a stale plan meanwhile. Each test holds the
/// peer's reading of that link, so that what is queued for it is known, lets the coordinator send
/// the notice, then lets the peer read, and looks at what it had read of the stream when it read
/// the notice.
/// </summary>
public sealed class NoticeAheadTests
{
    /// <summary>No slow-child finding: the tests make the backlog, and decide who is found slow.</summary>
    private static readonly TimeSpan Lenient = TimeSpan.FromSeconds(120);

    /// <summary>
    /// The last chunk of <paramref name="shard"/> (of <paramref name="shards"/>) the coordinator
    /// has cut once it has cut all <paramref name="total"/> bytes written so far.
    /// </summary>
    private static async Task<long> LastChunkCutAsync(Overlay overlay, long total, int shard, int shards)
    {
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == total, "the coordinator cut the stream written so far");
        long last = overlay.Coordinator.ChunksCut - 1;
        while (last % shards != shard) last--;
        return last;
    }

    /// <summary>
    /// A chain coordinator → relay → child (one shard-stream each) in <paramref name="overlay"/>,
    /// with 100,000 bytes through it; then the relay's reading of its control link is held while
    /// 6 MB more are written: about 2 MiB wait in the network's buffers, the rest in the
    /// coordinator's queue for that link. Returns the last chunk cut, queued on that link.
    /// </summary>
    private static async Task<(Peer Relay, Peer Child, HeldReadingTransport Held, long Last)> HeldChainAsync(Overlay overlay, int seed, ILoggerFactory? relayLogs = null)
    {
        HeldReadingTransport? held = null;
        var relay = await overlay.AddPeerAsync(upload: 1, configure: o => o with { SlowChildAge = Lenient }, network: t => held = new HeldReadingTransport(t, "coord"), loggers: relayLogs);
        var child = await overlay.AddPeerAsync(upload: 1, configure: o => o with { SlowChildAge = Lenient });
        var plan = overlay.Coordinator.Snapshot();
        Assert.True(plan.Nodes.Single(n => n.Id == relay.Id).Parents[0] == 0 && plan.Nodes.Single(n => n.Id == child.Id).Parents[0] == relay.Id,
            $"setup: the chain should be coordinator, relay {relay.Id}, child {child.Id}\n{plan.Render()}");
        overlay.StartStreaming();
        long total = 100_000;
        await overlay.WriteAsync(Overlay.RandomBytes((int)total, seed));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == total), "every peer has the first part");
        held!.Held = true;
        for (int i = 0; i < 6; i++) await overlay.WriteAsync(Overlay.RandomBytes(1_000_000, seed + 1 + i));
        total += 6_000_000;
        return (relay, child, held, await LastChunkCutAsync(overlay, total, 0, 1));
    }

    /// <summary>
    /// A relay fed by the coordinator on its control link, told to drop a child the coordinator
    /// took out of the overlay (DropChild), stops serving it before it reads the stream queued
    /// there before the notice. Behind that stream, it went on relaying the whole backlog to a
    /// peer out of the overlay, whose slot the plan had given to others, and an attach of that
    /// peer with a ticket issued before would have been served.
    /// </summary>
    [Fact]
    public async Task A_drop_child_overtakes_the_stream_queued_on_the_parents_control_link()
    {
        var logs = new LogCapture();
        // A chain coordinator → relay → child (one shard-stream each). The coordinator keeps the
        // place of a peer whose control link broke for 2 s: the test waits for the removal.
        await using var overlay = await Overlay.StartAsync(1, minPeers: 2, loggers: logs.Factory,
            configure: o => o with { Upload = 1, RejoinGrace = TimeSpan.FromSeconds(2), SlowChildAge = Lenient });
        var (relay, child, held, last) = await HeldChainAsync(overlay, 81);
        int childId = child.Id;
        bool? dropReadFirst = null, servedAtLast = null;
        relay.ChunkDue = (_, seq) =>
        {
            if (seq != last) return;
            dropReadFirst = logs.Has(LogLevel.Information, $"the coordinator took child {childId} out of the overlay: stopped serving it");
            servedAtLast = relay.ChildIds()[0].Contains(childId);
        };

        // Only the child's path to the coordinator breaks; its link to the relay goes on. The
        // coordinator takes it out (2 s on, long after the chunks above were queued for the relay)
        // and tells the relay.
        var childHost = overlay.PeerById(childId).Host;
        overlay.Network.Block(childHost, "coord");
        overlay.Network.Cut(childHost, "coord");
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Information, $"peer {childId} is out of the overlay"), "the coordinator told the relay to drop the child");
        held.Held = false;

        await Overlay.WaitUntilAsync(() => servedAtLast is not null, "the relay read the last chunk queued before the notice");
        Assert.True(dropReadFirst == true && servedAtLast == false,
            $"the relay read chunk {last}, queued on its control link before the coordinator told it to drop child {childId}, before that notice: it still served the child then ({servedAtLast}), relaying the backlog to a peer out of the overlay");

        // The child joins again as a new peer once it reaches the coordinator, and nothing is lost.
        overlay.Network.Unblock(childHost, "coord");
        await Overlay.WaitUntilAsync(() => child.Id != childId && overlay.Coordinator.Snapshot().Nodes.Any(n => n.Id == child.Id), "the child has joined again");
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 90));
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
        Assert.Equal(0, child.LostBytes);
    }

    /// <summary>
    /// A relay fed one shard by the coordinator on its control link, demoted as its other parent
    /// found it slow, reads the Demoted notice before the stream queued there before it. Behind
    /// it, the notice came only after that whole backlog (a slow download's seconds), and the
    /// peer's user learned why it relays nothing no sooner than its children had all moved away.
    /// </summary>
    [Fact]
    public async Task A_demoted_notice_overtakes_the_stream_queued_on_the_control_link()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 2, minPeers: 4, loggers: logs.Factory, configure: o => o with { SlowChildAge = Lenient });
        var reading = new Dictionary<int, HeldReadingTransport>();
        for (int i = 0; i < 4; i++)
        {
            HeldReadingTransport? held = null;
            // Every link the peer opened (to the coordinator and to its parents) can be held.
            var peer = await overlay.AddPeerAsync(upload: 2, configure: o => o with { SlowChildAge = Lenient }, network: t => held = new HeldReadingTransport(t, ""));
            reading[peer.Id] = held!;
        }

        // A relay fed one shard by the coordinator (on its control link) and the other by a peer.
        var node = overlay.Coordinator.Snapshot().Nodes.FirstOrDefault(n => n.Id != 0 && n.Budget > 0 && n.Parents.Contains(0) && n.Parents.Any(p => p > 0));
        Assert.True(node is not null, "setup: no relay receives one shard from the coordinator and the other from a peer\n" + overlay.Coordinator.Snapshot().Render());
        int fed = Array.IndexOf(node.Parents, 0);
        var parent = overlay.PeerById(node.Parents[1 - fed]).Peer;
        var slow = overlay.PeerById(node.Id).Peer;
        overlay.StartStreaming();
        long total = 100_000;
        await overlay.WriteAsync(Overlay.RandomBytes((int)total, 91));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten == total), "every peer has the first part");

        // It reads nothing for a while: of 10 MB more, 5 MB are its shard from the coordinator,
        // about 2 MiB of which wait in the network's buffers, the rest in the coordinator's queue.
        reading[slow.Id].Held = true;
        for (int i = 0; i < 10; i++) await overlay.WriteAsync(Overlay.RandomBytes(1_000_000, 92 + i));
        total += 10_000_000;
        long last = await LastChunkCutAsync(overlay, total, fed, 2);
        bool? noticeReadFirst = null;
        slow.ChunkDue = (_, seq) =>
        {
            if (seq == last) noticeReadFirst = logs.Lines.Any(l => l.Category == "peer" && l.Message.StartsWith("the coordinator moved this peer to the leaves", StringComparison.Ordinal));
        };

        // Its peer parent finds it slow: the coordinator demotes it and tells it why.
        ((IPeerParents)parent).SendToCoordinator(new SlowChild((ulong)slow.Id, 2_200, (1_000, 2_000)).Write);
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {slow.Id} demoted"), "the relay was demoted");
        reading[slow.Id].Held = false;

        await Overlay.WaitUntilAsync(() => noticeReadFirst is not null, "the relay read the last chunk of its shard queued before the notice");
        Assert.True(noticeReadFirst == true,
            $"peer {slow.Id} read chunk {last}, queued on its control link before the coordinator's Demoted notice, before that notice");
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
    /// <summary>
    /// A relay fed by the coordinator on its control link, made a leaf because joiners could not
    /// connect to it when they measured it (Notice(Leaf), section 17 of docs/protocol.md), reads
    /// the notice before the stream queued there before it: its user is told at once that it
    /// relays nothing and what to open, not once its reading has caught up with that backlog.
    /// </summary>
    [Fact]
    public async Task A_leaf_notice_overtakes_the_stream_queued_on_the_control_link()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, minPeers: 1, loggers: logs.Factory, configure: o => o with { LatencyAware = true, SlowChildAge = Lenient });
        HeldReadingTransport? held = null;
        var relay = await overlay.AddPeerAsync(configure: o => o with { SlowChildAge = Lenient }, network: t => held = new HeldReadingTransport(t, "coord"));
        overlay.StartStreaming();
        long total = 100_000;
        await overlay.WriteAsync(Overlay.RandomBytes((int)total, 101));
        await Overlay.WaitUntilAsync(() => relay.BytesWritten == total, "the relay has the first part");

        held!.Held = true;
        for (int i = 0; i < 6; i++) await overlay.WriteAsync(Overlay.RandomBytes(1_000_000, 102 + i));
        total += 6_000_000;
        long last = await LastChunkCutAsync(overlay, total, 0, 1);
        bool? noticeReadFirst = null;
        relay.ChunkDue = (_, seq) =>
        {
            if (seq == last) noticeReadFirst = logs.Has(LogLevel.Warning, "this peer relays nothing");
        };

        // Joiners whose connects to the relay are dropped report it not measured; two reports make
        // it a leaf. The first joiner's does not count: it reached no other peer, and may be the
        // one cut off.
        for (int i = 2; i <= 4; i++) overlay.Network.Block($"p{i}", overlay.PeerById(relay.Id).Host, silently: true);
        for (int i = 2; i <= 4; i++) await overlay.AddPeerAsync(configure: o => o with { SlowChildAge = Lenient });
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"cannot connect to peer {relay.Id}") && overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == relay.Id).Budget == 0,
            "the relay was made a leaf");
        held.Held = false;

        await Overlay.WaitUntilAsync(() => noticeReadFirst is not null, "the relay read the last chunk queued before the notice");
        Assert.True(noticeReadFirst == true, $"the relay read chunk {last}, queued on its control link before the coordinator's Leaf notice, before that notice");
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }

    /// <summary>
    /// A relay fed by the coordinator on its control link, evicted because its child reports that
    /// it sent bad data, reads the coordinator's Goodbye(Refused, "evicted: …") before the stream
    /// queued there before it, which is dropped (it is leaving). Behind that stream, the goodbye
    /// came only after the whole backlog, or not at all: the close timeout reset the link first on
    /// a slow link, and the relay said "connection lost" instead of why it was evicted.
    /// </summary>
    [Fact]
    public async Task An_evictions_goodbye_overtakes_the_stream_queued_on_the_control_link()
    {
        await using var overlay = await Overlay.StartAsync(1, minPeers: 2,
            configure: o => o with { Upload = 1, SlowChildAge = Lenient });
        var relayLogs = new LogCapture();
        var (relay, child, held, last) = await HeldChainAsync(overlay, 111, relayLogs.Factory);
        bool readLast = false;
        relay.ChunkDue = (_, seq) =>
        {
            if (seq == last) readLast = true;
        };

        // Its child accuses it of sending bad data: the coordinator evicts it.
        int relayId = relay.Id;
        ((IPeerParents)child).SendToCoordinator(new ParentLost((ulong)relayId, [new ShardStart(0, 0)], "flipped bytes").Write);
        await Overlay.WaitUntilAsync(() => !overlay.Coordinator.Snapshot().Nodes.Any(n => n.Id == relayId), "the coordinator evicted the relay");
        held.Held = false;

        await Overlay.WaitUntilAsync(() => relayLogs.Lines.Any(l => l.Message.StartsWith("lost the coordinator", StringComparison.Ordinal)), "the relay lost the coordinator");
        bool readLastFirst = readLast;
        string lost = relayLogs.Lines.First(l => l.Message.StartsWith("lost the coordinator", StringComparison.Ordinal)).Message;
        Assert.True(!readLastFirst && lost.Contains($"evicted: child {child.Id} reports that you sent: flipped bytes", StringComparison.Ordinal),
            $"the relay read chunk {last}, queued on its control link before the coordinator evicted it, before the eviction's goodbye ({readLastFirst}), or did not read why: '{lost}'");

        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 120));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(overlay.PeerById(child.Id));
    }

    /// <summary>
    /// An eviction that comes while the peer's Welcome still waits in its control link's queue (a
    /// repair under the gate right after the join, before the link's writer took the Welcome) must
    /// not pass the Welcome: the goodbye would be the peer's answer to its Join, a refusal that
    /// ends a first joiner. The peer's side reads nothing until the eviction, so the writer is held
    /// by the network's buffers behind 6 MB of other frames queued first; the Welcome (a notice
    /// stands in for it) is queued behind them. Everything queued before the goodbye goes, then the
    /// goodbye; only chunks would be dropped.
    /// </summary>
    [Fact]
    public async Task An_eviction_before_the_writer_took_the_welcome_does_not_pass_it()
    {
        var network = new VirtualNetwork();
        await using var listener = await network.Host("coord").ListenAsync("coord:1", CancellationToken.None);
        var peerSide = await network.Host("peer").ConnectAsync("coord:1", CancellationToken.None);
        var coordSide = (await listener.AcceptAsync(CancellationToken.None))!;
        var options = new EvictOptions().LinkOptions;
        await using var control = new Link(coordSide, "peer 1", options, NullLogger.Instance, TimeProvider.System);
        await using var fromCoordinator = new Link(peerSide, "coordinator", options, NullLogger.Instance, TimeProvider.System);
        control.Start((_, _, _) => { });
        const int Before = 6_000;
        var filler = FrameWriting.ToArray(new Notice(NoticeCode.Leaf, new string('f', 1000)).Write);
        for (int i = 0; i < Before; i++) control.Send(filler);
        var session = new PeerSession(1, "peer:1", control);
        session.SendWelcome(control, [FrameWriting.ToArray(new Notice(NoticeCode.Leaf, "the welcome").Write)]);
        session.Evict("evicted: no upload capacity is left", NullLogger.Instance);

        int notices = 0;
        fromCoordinator.Start((_, type, _) => { if (type == FrameType.Notice) Interlocked.Increment(ref notices); });
        await Overlay.WaitUntilAsync(() => fromCoordinator.Closed.IsCompleted, "the peer's side closed");
        Assert.True(Volatile.Read(ref notices) == Before + 1 && fromCoordinator.ReceivedGoodbye == GoodbyeCode.Refused,
            $"the peer read {Volatile.Read(ref notices)} of the {Before + 1} frames queued before the eviction (the last its Welcome's stand-in), then goodbye {fromCoordinator.ReceivedGoodbye}");
    }

    private sealed record EvictOptions : NodeOptions;
}

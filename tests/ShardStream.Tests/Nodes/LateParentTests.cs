using System.Diagnostics;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A peer moved under a parent that joined after the point this peer has reached: the new parent
/// holds the stream only from its own join point, so it cannot replay what the peer still needs.
/// The peer must get those bytes anyway (docs/resilience.md, "A parent that joined later").
/// </summary>
public sealed class LateParentTests
{
    private static async Task StreamAsync(Overlay overlay, int parts, int partSize, int seed)
    {
        for (int i = 0; i < parts; i++) await overlay.WriteAsync(Overlay.RandomBytes(partSize, seed * 1000 + i));
    }

    /// <summary>
    /// K = 1, a chain: the coordinator serves one child (relay), relay one (lagging); then
    /// <paramref name="parts"/> parts of 50,000 bytes streamed, until the lagging peer has them. A
    /// long heartbeat timeout unless given: no failure detector acts on a node the test freezes. The lagging
    /// peer takes the network <paramref name="laggingNetwork"/> makes for the relay's host, when given.
    /// </summary>
    private static async Task<(Overlay Overlay, Peer Relay, Peer Lagging)> StartChainAsync(int parts, int seed, Func<CoordinatorOptions, CoordinatorOptions> configure, ILoggerFactory? loggers = null,
        Func<string, Func<ITransport, ITransport>>? laggingNetwork = null, TimeSpan? heartbeatTimeout = null, Func<PeerOptions, PeerOptions>? laggingOptions = null)
    {
        var overlay = await Overlay.StartAsync(shards: 1, minPeers: 2, heartbeatTimeout: heartbeatTimeout ?? TimeSpan.FromSeconds(60), configure: o => configure(o with { Upload = 1 }), loggers: loggers);
        try
        {
            var relay = await overlay.AddPeerAsync(upload: 1);
            var lagging = await overlay.AddPeerAsync(upload: 0, configure: laggingOptions, network: laggingNetwork?.Invoke(overlay.PeerById(relay.Id).Host));
            Assert.Equal(relay.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == lagging.Id).Parents[0]);
            overlay.StartStreaming();
            await StreamAsync(overlay, parts, 50_000, seed);
            await Overlay.WaitUntilAsync(() => lagging.BytesWritten == parts * 50_000L, "the lagging peer has the first parts");
            return (overlay, relay, lagging);
        }
        catch
        {
            await overlay.DisposeAsync();
            throw;
        }
    }

    [Fact]
    public async Task A_lagging_peer_moved_under_a_strong_joiner_that_starts_after_its_position_loses_no_byte()
    {
        // The test kills the frozen relay at the end.
        var (overlay, relay, lagging) = await StartChainAsync(4, 1, o => o with { RejoinGrace = TimeSpan.FromSeconds(1) });
        await using var disposing = overlay;
        await MoveUnderStrongJoinerAsync(overlay, relay, lagging);

        // The frozen relay dies.
        overlay.Network.Kill(overlay.PeerById(relay.Id).Host);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != relay.Id), "the coordinator has dropped the dead relay");
        await StreamAsync(overlay, 4, 50_000, 4);
        await overlay.EndAsync();

        foreach (var p in overlay.Peers.Where(p => p.Peer != relay)) await overlay.AssertIdenticalAsync(p);
    }

    /// <summary>
    /// The lagging peer's relay freezes (or <paramref name="fallBehind"/> holds the lagging peer
    /// back otherwise) while the stream goes on, until a joiner would start after the lagging peer's
    /// position (200,000 with a frozen relay); then a strong joiner takes the relay's place and the
    /// lagging peer is moved under it (a fill from the coordinator first). Returns the joiner.
    /// </summary>
    private static async Task<Peer> MoveUnderStrongJoinerAsync(Overlay overlay, Peer relay, Peer lagging, Action? fallBehind = null)
    {
        // Its relay freezes: the lagging peer stops at 200,000 while the stream goes on, a live
        // source of a part every 100 ms, until a joiner would start after its position (once the
        // chunks there are older than the coordinator's join backlog, 2 s).
        (fallBehind ?? (() => overlay.Network.Freeze(overlay.PeerById(relay.Id).Host)))();
        await StreamAsync(overlay, 4, 50_000, 2);
        var deadline = DateTime.UtcNow + Overlay.Deadline;
        for (int i = 0; overlay.Coordinator.JoinPointOffset <= lagging.StartOffset + lagging.BytesWritten; i++)
        {
            Assert.True(DateTime.UtcNow < deadline, $"a joiner would still start at {overlay.Coordinator.JoinPointOffset}, after {i} more parts");
            await overlay.WriteAsync(Overlay.RandomBytes(10_000, 3000 + i));
            long written = overlay.Written.Length;
            await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed == written, "the part is read");
            await Task.Delay(100);
        }

        // A strong joiner takes the relay's place next to the coordinator; the lagging peer is
        // moved under it (a join's rebalancing Move), though the joiner holds the stream only from
        // its own join point, after the lagging peer's position.
        // Its position is read before the join: once moved, it takes the chunks in between from
        // the coordinator at once, and may have them all by the time the join returns here.
        long position = lagging.StartOffset + lagging.BytesWritten;
        if (fallBehind is null) Assert.Equal(200_000, position);
        var strong = await overlay.AddPeerAsync(upload: 4);
        Assert.True(strong.StartOffset > position, $"the joiner starts at {strong.StartOffset}, after the lagging peer's position {position}");
        Assert.Equal(strong.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == lagging.Id).Parents[0]);
        return strong;
    }

    /// <summary>
    /// The lagging peer's control link breaks while it waits for the coordinator's fill (the path
    /// between them stands still from the Move on, and then the link is reset): the fill is lost
    /// with the link, which the peer makes again in its place. The coordinator still holds every
    /// chunk the fill was to bring.
    /// </summary>
    [Fact]
    public async Task A_fill_broken_off_with_the_control_link_loses_no_byte_the_coordinator_holds()
    {
        var log = new LogCapture();
        var (overlay, relay, lagging) = await StartChainAsync(4, 21, o => o with { RejoinGrace = TimeSpan.FromSeconds(30) }, log.Factory);
        await using var disposing = overlay;
        string host = overlay.PeerById(lagging.Id).Host;
        int relayId = relay.Id;
        int frozen = 0;
        lagging.MoveTaken = () =>
        {
            if (Interlocked.Exchange(ref frozen, 1) == 0) overlay.Network.Freeze(host, "coord");
            return Task.CompletedTask;
        };
        await MoveUnderStrongJoinerAsync(overlay, relay, lagging);
        // The fill is asked (the coordinator is the shard's parent meanwhile), and stands still on the path.
        await Overlay.WaitUntilAsync(() => lagging.ParentIds()[0] is not (-1) && lagging.ParentIds()[0] != relayId, "the lagging peer asked the coordinator for the fill");
        int parentDuringFill = lagging.ParentIds()[0];
        overlay.Network.Cut(host, "coord");
        overlay.Network.Thaw(host, "coord");
        await Overlay.WaitUntilAsync(() => lagging.Rejoins == 1, "the lagging peer joined again after its control link broke");

        overlay.Network.Kill(overlay.PeerById(relay.Id).Host);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != relay.Id), "the coordinator has dropped the dead relay");
        await StreamAsync(overlay, 4, 50_000, 22);
        await overlay.EndAsync();

        Assert.Equal(0, parentDuringFill);
        foreach (var p in overlay.Peers.Where(p => p.Peer != relay))
        {
            try
            {
                await overlay.AssertIdenticalAsync(p);
            }
            catch (Exception e) when (e is not TimeoutException)
            {
                throw new Xunit.Sdk.XunitException($"{e.Message}\n{string.Join("\n", log.Lines.Where(l => l.Level >= LogLevel.Information).Select(l => $"{l.Category}: {l.Message}"))}");
            }
        }
    }

    /// <summary>
    /// The lagging peer's host is loaded and its reads run behind: it reads its relay's link late
    /// (the chunks wait unread, so it falls behind while the relay is taken for alive) until a
    /// joiner would start after its position, and once it has taken in the Move under the strong
    /// joiner, it reads its control link late too, for three of its heartbeat timeouts (2 s), while
    /// the coordinator sends the fill there. The fill came; it waits unread.
    /// </summary>
    [Fact]
    public async Task A_fill_whose_chunks_wait_unread_is_not_given_up()
    {
        var log = new LogCapture();
        var heartbeatTimeout = TimeSpan.FromSeconds(2);
        HeldReadingTransport? fromRelay = null, fromCoordinator = null;
        var (overlay, relay, lagging) = await StartChainAsync(4, 31, o => o with { RejoinGrace = TimeSpan.FromSeconds(1) }, log.Factory,
            relayHost => t => fromCoordinator = new HeldReadingTransport(fromRelay = new HeldReadingTransport(t, relayHost), "coord"), heartbeatTimeout);
        await using var disposing = overlay;
        int relayId = relay.Id;
        var heldFor = new Stopwatch();
        lagging.MoveTaken = () =>
        {
            if (!heldFor.IsRunning)
            {
                fromCoordinator!.Held = true;
                heldFor.Start();
            }
            return Task.CompletedTask;
        };
        await MoveUnderStrongJoinerAsync(overlay, relay, lagging, fallBehind: () => fromRelay!.Held = true);
        await Overlay.WaitUntilAsync(() => lagging.ParentIds()[0] is not (-1) && lagging.ParentIds()[0] != relayId, "the lagging peer asked the coordinator for the fill");
        int parentDuringFill = lagging.ParentIds()[0];
        await Overlay.WaitUntilAsync(() => heldFor.Elapsed >= heartbeatTimeout * 3, "the lagging peer did not read its control link for three heartbeat timeouts");
        fromCoordinator!.Held = false;
        fromRelay!.Held = false;

        overlay.Network.Kill(overlay.PeerById(relay.Id).Host);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != relay.Id), "the coordinator has dropped the relay");
        await StreamAsync(overlay, 4, 50_000, 32);
        await overlay.EndAsync();

        Assert.Equal(0, parentDuringFill);
        string said = string.Join("\n", log.Lines.Where(l => l.Level >= LogLevel.Information).Select(l => $"{l.Category}: {l.Message}"));
        foreach (var p in overlay.Peers.Where(p => p.Peer != relay))
        {
            try
            {
                await overlay.AssertIdenticalAsync(p);
            }
            catch (Exception e) when (e is not TimeoutException)
            {
                throw new Xunit.Sdk.XunitException($"{e.Message}\n{said}");
            }
        }
        Assert.False(log.Has(LogLevel.Warning, "stopped at chunk"), said);
    }

    /// <summary>
    /// As in A_fill_broken_off_with_the_control_link_loses_no_byte_the_coordinator_holds, but the
    /// lagging peer cannot reach the coordinator again before the stream has ended and the
    /// coordinator's wait for its peers (a 3 s drain) is over: the chunks the fill
    /// was to bring were only in the coordinator's window, and are lost with it. The peer stops
    /// with a reason that says which chunks of which shard it lacks, never as if the stream were
    /// complete.
    /// </summary>
    [Fact]
    public async Task A_fill_broken_off_that_the_coordinators_end_leaves_short_stops_the_peer_saying_what_it_lacks()
    {
        var log = new LogCapture();
        var (overlay, relay, lagging) = await StartChainAsync(4, 31, o => o with { RejoinGrace = TimeSpan.FromSeconds(30), DrainTimeout = TimeSpan.FromSeconds(3) }, log.Factory,
            laggingOptions: o => o with { RejoinFor = TimeSpan.FromSeconds(5) });
        await using var disposing = overlay;
        var (_, output, run, host) = overlay.PeerById(lagging.Id);
        int frozen = 0;
        lagging.MoveTaken = () =>
        {
            if (Interlocked.Exchange(ref frozen, 1) == 0) overlay.Network.Freeze(host, "coord");
            return Task.CompletedTask;
        };
        await MoveUnderStrongJoinerAsync(overlay, relay, lagging);
        await Overlay.WaitUntilAsync(() => lagging.ParentIds()[0] == 0, "the lagging peer asked the coordinator for the fill");
        // The path breaks for good: the fill is lost with the control link, and no rejoin gets through.
        overlay.Network.Block(host, "coord");
        overlay.Network.Cut(host, "coord");
        overlay.Network.Thaw(host, "coord");
        await Overlay.WaitUntilAsync(() => log.Has(LogLevel.Warning, "broke off with the control link"), "the fill broke off");

        overlay.Network.Kill(overlay.PeerById(relay.Id).Host);
        await StreamAsync(overlay, 4, 50_000, 32);
        await overlay.EndAsync();
        // As the CLI does once the run is over; the path comes back, to nobody.
        await overlay.Coordinator.DisposeAsync();
        overlay.Network.Unblock(host, "coord");

        string ended = await Overlay.HowEndedAsync(run, () => $"completed, {output.Length} bytes, {lagging.LostBytes} counted lost");
        var wrote = output.ToArray();
        Assert.True(overlay.Written.AsSpan((int)lagging.StartOffset, wrote.Length).SequenceEqual(wrote), "what the lagging peer wrote is not the stream's");
        Assert.True(wrote.Length < overlay.Written.Length - lagging.StartOffset, $"wrote all {wrote.Length} bytes");
        Assert.True(System.Text.RegularExpressions.Regex.IsMatch(ended, @"shard\(s\) 0 lack chunks [0-9]+ to [0-9]+, which only the coordinator held"), ended);
    }

    [Fact]
    public async Task A_move_that_came_on_the_control_link_before_a_rejoin_as_a_new_peer_asks_no_fill_on_the_new_one()
    {
        // A join point at the head, no rejoin grace; a long slow-child age: the slow-child policy
        // does not act on the frozen nodes either.
        var log = new LogCapture();
        var (overlay, relay, lagging) = await StartChainAsync(2, 11,
            o => o with { JoinBacklog = TimeSpan.Zero, RejoinGrace = TimeSpan.Zero, SlowChildAge = TimeSpan.FromSeconds(60) }, log.Factory);
        await using var disposing = overlay;

        // Its relay freezes: the lagging peer stays at 100,000 while the stream goes on.
        overlay.Network.Freeze(overlay.PeerById(relay.Id).Host);
        await StreamAsync(overlay, 2, 50_000, 12);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.JoinPointOffset > 100_000, "a joiner would start after the lagging peer's position");

        // A strong joiner takes the relay's place; the Move that puts the lagging peer under it
        // (with a fill first: it holds the stream only from its join point) is taken from the
        // lagging peer's queue and held there. The joiner then freezes too.
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lagging.MoveTaken = async () =>
        {
            held.TrySetResult();
            await release.Task;
        };
        var strong = await overlay.AddPeerAsync(upload: 4);
        Assert.Equal(strong.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == lagging.Id).Parents[0]);
        await held.Task.WaitAsync(Overlay.Deadline);
        overlay.Network.Freeze(overlay.PeerById(strong.Id).Host);

        // The lagging peer loses its control link and cannot reach the coordinator until it has
        // been taken out; then it joins again as a new peer (a new id, a new session).
        int first = lagging.Id;
        string host = overlay.PeerById(first).Host;
        overlay.Network.Block(host, "coord");
        overlay.Network.Cut(host, "coord");
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != first), "the coordinator took the lagging peer out");
        overlay.Network.Unblock(host, "coord");
        await Overlay.WaitUntilAsync(() => lagging.Rejoins == 1 && lagging.Id != first, "the lagging peer joined again as a new peer");

        // The old link's Move goes on now: taken in, it would ask the new session for a fill that
        // no Move on its link allowed, and the coordinator would cut the peer off for it.
        release.SetResult();
        string violation = "that no move asked for";
        await Overlay.WaitUntilAsync(() => log.Has(LogLevel.Debug, "came on a control link replaced since") || log.Has(LogLevel.Warning, violation), "the held Move was handled");
        Assert.False(log.Has(LogLevel.Warning, violation), string.Join("\n", log.Lines.Where(l => l.Message.Contains("fill", StringComparison.OrdinalIgnoreCase)).Select(l => $"{l.Category}: {l.Message}")));
        Assert.Contains(overlay.Coordinator.Snapshot().Nodes, n => n.Id == lagging.Id);
        overlay.Network.Kill(overlay.PeerById(relay.Id).Host);
        overlay.Network.Kill(overlay.PeerById(strong.Id).Host);
    }
}

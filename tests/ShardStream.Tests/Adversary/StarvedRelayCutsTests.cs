using ShardStream.Nodes;
using ShardStream.Tests.Nodes;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// The cascade of the withheld-shard check (9202): a relay dies, and the repair of its child, an
/// honest relay, takes longer than two heartbeat timeouts (here: the child cannot connect to any
/// node with room until the test lets it). The child sends its own children nothing, as it has
/// nothing, and they cut it off as withholding, again and again. Counted as lost parents (a
/// second report within the retry window takes the edge out of the plan, event 804, and two
/// children that "cannot connect" make a relay a leaf, 806), those cuts took the honest relay's
/// edges out of the plan.
/// </summary>
public class StarvedRelayCutsTests
{
    [Fact]
    public async Task Cuts_of_an_honest_relay_that_starves_while_it_is_repaired_are_not_counted_against_it()
    {
        var log = new RecordingLogger();
        // Windows long enough for the relay's repair however long a loaded machine makes the wait below.
        var window = TimeSpan.FromSeconds(120);
        Func<PeerOptions, PeerOptions> windowed = o => o with { ReplayWindowAge = window };
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1, ReplayWindowAge = window }, heartbeatTimeout: TimeSpan.FromSeconds(2), loggers: log);
        // The coordinator feeds the one that dies; it feeds two relays; each of them two leaves.
        var dying = await overlay.AddPeerAsync(upload: 2, configure: windowed);
        var relays = new[] { await overlay.AddPeerAsync(upload: 2, configure: windowed), await overlay.AddPeerAsync(upload: 2, configure: windowed) };
        for (int i = 0; i < 4; i++) await overlay.AddPeerAsync(upload: 0, configure: windowed);
        var plan = overlay.Coordinator.Snapshot();
        int ParentOf(int id) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents[0] ?? -1;
        List<Peer> ChildrenOf(Peer parent) => overlay.Peers.Select(p => p.Peer).Where(p => ParentOf(p.Id) == parent.Id).ToList();
        Assert.True(ParentOf(dying.Id) == 0 && relays.All(r => ParentOf(r.Id) == dying.Id && ChildrenOf(r).Count == 2), plan.Render());
        var (relay, spare) = (relays[0], relays[1]);
        var children = ChildrenOf(relay);

        overlay.StartStreaming();
        await using var source = LiveSource.Start(overlay, rate: 160 * 1024, maxSeconds: 180, seed: 1);
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten > 0), "every viewer wrote the first bytes");
        // Room for the relay's children elsewhere, as a drop of their edges would take.
        var fillers = ChildrenOf(spare);
        foreach (var f in fillers) await f.DisposeAsync();
        await Overlay.WaitUntilAsync(() => fillers.All(f => ParentOf(f.Id) == -1), "the spare relay's leaves are out of the plan");

        // The relay's repair cannot complete: it cannot connect to any node that has room.
        string relayHost = overlay.PeerById(relay.Id).Host;
        foreach (var to in new[] { "coord", overlay.PeerById(spare.Id).Host }) overlay.Network.Block(relayHost, to, silently: true);
        overlay.Network.Kill(overlay.PeerById(dying.Id).Host);
        // Each child's report of the relay handled at least twice by the coordinator: attached there
        // again (1664), the edge dropped (804) or no other room for it (805), or not counted (9308).
        int Handled(Peer child) => log.Lines.Count(l => l.Id.Id is 1664 or 804 or 805 or 9308
            && l.Message.StartsWith($"peer {child.Id} ", StringComparison.Ordinal) && l.Message.Contains($"parent {relay.Id}", StringComparison.Ordinal));
        try
        {
            await Overlay.WaitUntilAsync(() => children.All(c => Handled(c) >= 2), "each child's cut of the starving relay was handled twice", TimeSpan.FromSeconds(90));
        }
        catch (TimeoutException e)
        {
            string handled = string.Join(", ", children.Select(c => $"peer {c.Id} {Handled(c)}"));
            throw new TimeoutException($"{e.Message} (lines handling a cut: {handled}); the plan now:\n{overlay.Coordinator.Snapshot().Render()}\n{log.Dump()}");
        }
        // Neither an edge to it taken out of the plan (804) nor the relay made a leaf as unreachable (806).
        Assert.DoesNotContain(log.Lines, l => (l.Id.Id == 804 && l.Message.Contains($"parent {relay.Id} (", StringComparison.Ordinal))
            || (l.Id.Id == 806 && l.Message.Contains($"peer {relay.Id} (", StringComparison.Ordinal)));
        Assert.True(overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == relay.Id).Budget > 0, $"the honest relay was made a leaf:\n{log.Dump()}");

        foreach (var to in new[] { "coord", overlay.PeerById(spare.Id).Host }) overlay.Network.Unblock(relayHost, to);
        await source.StopAsync();
        await overlay.EndAsync(TimeSpan.FromSeconds(120));
        try
        {
            foreach (var p in overlay.Peers.Where(p => p.Peer != dying && !fillers.Contains(p.Peer))) await overlay.AssertIdenticalAsync(p);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"{e.Message}\n{log.Dump()}");
        }
    }
}

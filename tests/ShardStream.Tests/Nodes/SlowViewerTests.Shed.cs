using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>A relay whose uplink does not carry its children, that can be neither demoted nor exchanged with a child.</summary>
public sealed partial class SlowViewerTests
{
    /// <summary>
    /// Found across network namespaces (K = 4, a viewer behind a 1 Mbit/s uplink with the default
    /// --upload): its children were found slow together again and again, the coordinator could
    /// neither demote it (no room elsewhere for all its children and one more viewer) nor exchange
    /// it with a child (none could take its place), so it kept its place and its budget (event
    /// 904), and a viewer that joined later was placed under it too; that viewer fell more than the
    /// replay window behind and lost bytes. Here: a coordinator with two slots feeds the relay
    /// (declared upload 4, uplink 1.5 times the stream) and a second relay A (upload 2); the relay
    /// has two leaf children, A one leaf child that leaves once streaming starts, which frees a slot
    /// outside the relay's subtree. The relay's children are found slow together; one of them moves
    /// into A's free slot and the relay keeps the one its uplink carries, with its budget lowered to
    /// it, so that both catch up and a later joiner is not placed under it.
    /// </summary>
    [Fact]
    public async Task A_relay_whose_uplink_cannot_carry_its_children_and_that_cannot_be_demoted_sheds_them_into_free_slots_and_takes_no_more()
    {
        const int rate = 256 * 1024;           // 2.1 Mbit/s
        var lagBound = TimeSpan.FromSeconds(1.5);
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 2 }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 4);
        var other = await overlay.AddPeerAsync(upload: 3);
        var leaves = new List<Peer>();
        for (int i = 0; i < 3; i++) leaves.Add(await overlay.AddPeerAsync(upload: 0));
        string Plan() => string.Join(", ", overlay.Coordinator.Snapshot().Nodes.Select(n => $"{n.Id}<-{n.Parents[0]} ({n.Budget})"));
        int ParentOf(Peer p) => overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == p.Id).Parents[0];
        var underRelay = leaves.Where(l => ParentOf(l) == relay.Id).ToList();
        var underOther = leaves.Where(l => ParentOf(l) == other.Id).ToList();
        output.WriteLine($"plan: {Plan()}");
        Assert.True(ParentOf(relay) == 0 && ParentOf(other) == 0 && underRelay.Count == 3 && underOther.Count == 0, $"not the shape the test needs: {Plan()}");
        // Its uplink carries 1.5 times the stream; its three children need three times.
        overlay.Network.SetUploadRate(overlay.PeerById(relay.Id).Host, rate * 3 / 2);
        overlay.StartStreaming();
        await using var source = LiveSource.Start(overlay, rate, maxSeconds: 150, seed: 31);

        string Lags() => string.Join(", ", underRelay.Select(c => $"peer {c.Id} {source.Lag(c).TotalSeconds:0.0} s"));
        Peer? late = null;
        try
        {
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {relay.Id} is not demoted") || source.Ended, "the relay's children are found slow together");
            Assert.False(source.Ended, $"the source ended first: {Lags()}");
            output.WriteLine($"found at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {Plan()}");
            // Back to the live rate: each within lagBound of the source, checked on the same poll.
            await Overlay.WaitUntilAsync(() => underRelay.All(c => source.Lag(c) < lagBound) || source.Ended, $"the relay's children are within {lagBound.TotalSeconds} s of the source");
            Assert.False(source.Ended, $"the source ended first: {Lags()}; {Plan()}");
            output.WriteLine($"caught up at {source.Elapsed.TotalSeconds:0.0} s: {Lags()}; {Plan()}");
            // A later joiner is not placed under the relay whose uplink was found short.
            late = await overlay.AddPeerAsync(upload: 0);
            output.WriteLine($"a later joiner, peer {late.Id}: {Plan()}");
            Assert.NotEqual(relay.Id, ParentOf(late));
            // It keeps what its uplink carries (one child: 1.5 times the stream), and no free slot.
            var relayNode = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == relay.Id);
            Assert.Equal(underRelay.Count(c => ParentOf(c) == relay.Id), relayNode.Budget);
            Assert.True(relayNode.Budget is 1, $"the relay kept {relayNode.Budget}: {Plan()}");
        }
        finally
        {
            foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Warning)) output.WriteLine($"{source.At(l.Timestamp).TotalSeconds:0.0} {l.Category}: {l.Message}");
        }

        Assert.False(logs.Has(LogLevel.Warning, "stopping it ("), "someone was stopped");
        await source.StopAsync();
        await overlay.EndAsync();
        foreach (var p in underRelay.Append(relay).Append(other)) await overlay.AssertIdenticalAsync(overlay.PeerById(p.Id));
    }
}

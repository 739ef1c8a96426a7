using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A peer evicted because no upload capacity is left for it leaves nothing of itself at the
/// coordinator: the eviction took it out of the tracker's list before its control link closed,
/// and the cleanup that runs when a peer leaves (its probe's round trip, its slow findings) used
/// to run only for a peer still listed then, so a stranger evicted again and again grew the
/// coordinator's memory each time. The viewers here upload nothing (so the coordinator never
/// probed them): what it kept, and must drop, is the eviction policy's findings about them.
/// </summary>
public sealed class EvictionForgetsTests
{
    private const int Rate = 1024 * 1024;          // the source: 1 MiB/s
    private const int MaxSourceSeconds = 40;

    [Fact]
    public async Task A_viewer_evicted_when_its_relay_dies_is_forgotten_and_the_other_gets_every_byte()
    {
        // Coordinator (1 slot) -> relay 1 (2 slots) -> viewers 2 and 3 (none), the CLI's eviction
        // case (CliClaimsTests). Both viewers' downloads are below the stream rate, so the relay
        // reports them slow and the coordinator notes its findings about each. When the relay
        // dies, the coordinator has one slot for two orphans: one moves there, the other is evicted.
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, configure: o => o with { Upload = 1 });
        var relay = await overlay.AddPeerAsync(upload: 2);
        // Told to stop at once when evicted, instead of trying to join again (refused: no room).
        for (int i = 0; i < 2; i++) await overlay.AddPeerAsync(upload: 0, configure: o => o with { RejoinFor = TimeSpan.Zero });
        var viewers = overlay.Peers.Skip(1).ToArray();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.Count(n => n.Id != 0 && n.Parents[0] == relay.Id) == 2, "both viewers are placed under the relay");
        foreach (var v in viewers) overlay.Network.SetDownloadRate(v.Host, Rate / 4);

        overlay.StartStreaming();
        (Peer Peer, MemoryStream Output, Task Run, string Host)? evicted = null;
        bool killed = false;
        // The relay dies once the coordinator holds findings about both viewers; the live source
        // (bounded) goes on 2 s of stream after the eviction.
        await using (var source = LiveSource.Start(overlay, Rate, MaxSourceSeconds, seed: 31))
        {
            await Overlay.WaitUntilAsync(() => source.Ended || viewers.All(v => overlay.Coordinator.RemembersSlowFindings(v.Peer.Id)),
                "the coordinator holds slow findings about both viewers, or the source ended", within: TimeSpan.FromSeconds(2 * MaxSourceSeconds));
            if (!source.Ended)
            {
                foreach (var v in viewers) overlay.Network.SetDownloadRate(v.Host, 0);
                overlay.Network.Kill(overlay.PeerById(relay.Id).Host);
                killed = true;
                await Overlay.WaitUntilAsync(() => source.Ended || viewers.Any(v => v.Run.IsCompleted), "a viewer is evicted, or the source ended", within: TimeSpan.FromSeconds(2 * MaxSourceSeconds));
                if (viewers.FirstOrDefault(v => v.Run.IsCompleted) is { Peer: not null } first)
                {
                    evicted = first;
                    var at = source.Elapsed + TimeSpan.FromSeconds(2);
                    await Overlay.WaitUntilAsync(() => source.Ended || source.Elapsed >= at, "2 s of stream after the eviction");
                }
            }
        }
        Assert.True(killed, "the coordinator never held slow findings about both viewers");
        Assert.True(evicted is not null, "neither viewer was evicted when the relay died");

        var (gone, _, run, _) = evicted.Value;
        var failure = await Assert.ThrowsAsync<StreamInterruptedException>(() => run);
        Assert.Contains("evicted: no upload capacity is left in the overlay for this peer; join again later", failure.Message);
        Assert.DoesNotContain(overlay.Coordinator.Snapshot().Nodes, n => n.Id == gone.Id);
        Assert.False(overlay.Coordinator.RemembersSlowFindings(gone.Id), $"the coordinator still keeps slow findings about evicted peer {gone.Id}");

        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(viewers.Single(v => v.Peer != gone));
    }
}

using ShardStream.Nodes;
using ShardStream.Tests.Nodes;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A relay that joined honestly sends its children one chunk every 2 s, every chunk right and in
/// order, and everything else at once (<see cref="Attacks.Trickle"/>): never silent for two
/// heartbeat timeouts (4 s here), so the withheld-shard check (9202) never fires, while its
/// children fall ever further behind the head. Before the trickle check (9203) they stayed under it
/// to the end, writing 8 KiB a second of a 160 KiB/s stream. Now a child more than the check's
/// bound behind the head that got less than half of what the source made over that time cuts
/// the relay off, and every honest viewer writes the whole stream; no honest relay is made a leaf
/// or loses an edge on the way (the liar's children's own children cut them too, as they starve).
/// </summary>
public class TrickledStreamTests
{
    [Fact]
    public async Task The_children_of_a_relay_that_trickles_the_stream_cut_it_off_and_write_the_whole_stream()
    {
        var log = new RecordingLogger();
        var heartbeatTimeout = TimeSpan.FromSeconds(2);
        // Windows long enough for a child that the liar held back for two bounds.
        var window = TimeSpan.FromSeconds(120);
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, configure: o => o with { ReplayWindowAge = window }, heartbeatTimeout: heartbeatTimeout, loggers: log);
        var liar = new TamperingTransport(overlay.Network.Host("liar"), (_, f) => [f]) { PerConnection = Attacks.Trickle(TimeSpan.FromSeconds(2)) };
        var (relay, victims) = await LiarRelay.StartAsync(overlay, liar, heartbeatTimeout, log, o => o with { ReplayWindowAge = window });
        await using var _ = relay;
        liar.Active = true;

        // 40 s of a live source at 160 KiB/s; a trickled child would take 800 s to write it.
        await using (var source = LiveSource.Start(overlay, rate: 160 * 1024, maxSeconds: 40, seed: 2))
            await Overlay.WaitUntilAsync(() => source.Ended, "the source wrote its 40 s", TimeSpan.FromSeconds(120));
        long written = overlay.Written.Length;
        try
        {
            await Overlay.WaitUntilAsync(() => victims.All(v => v.Peer.StartOffset + v.Peer.BytesWritten >= written), "the liar's children write the whole stream", TimeSpan.FromSeconds(120));
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException($"{e.Message}: they wrote {string.Join(", ", victims.Select(v => v.Peer.BytesWritten))} of {written}\n{string.Join("\n", log.Lines.Where(l => l.Level >= Microsoft.Extensions.Logging.LogLevel.Information).Select(l => $"{l.Id.Id} {l.Message}"))}");
        }
        Assert.True(liar.Rewritten > 0, "the liar never held a frame back");
        Assert.Contains(log.Lines, l => l.Id.Id == 9203 && l.Message.StartsWith($"parent {relay.Id} ", StringComparison.Ordinal));
        Assert.DoesNotContain(log.Lines, l => l.Id.Id == 9202);
        // No honest relay lost an edge to its children's cuts (804) or was made a leaf for them (806).
        var honest = overlay.Peers.Select(p => p.Peer.Id).ToList();
        Assert.DoesNotContain(log.Lines, l => (l.Id.Id == 804 && honest.Any(id => l.Message.Contains($"parent {id} (", StringComparison.Ordinal)))
            || (l.Id.Id == 806 && honest.Any(id => l.Message.Contains($"peer {id} (", StringComparison.Ordinal))));
        await overlay.EndAsync(TimeSpan.FromSeconds(120));
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

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
/// A relay that sends just over half (<see cref="Attacks.Share"/>, 55%) is not a trickle: its
/// children are cut off it by the lag bound (9204) once more than two trickle bounds behind and
/// not gaining on the head.
/// </summary>
public class TrickledStreamTests
{
    [Fact]
    public async Task The_children_of_a_relay_that_trickles_the_stream_cut_it_off_and_write_the_whole_stream()
    {
        await using var rig = await Rig.StartAsync(Attacks.Trickle(TimeSpan.FromSeconds(2)));
        var (overlay, log, relay, victims) = (rig.Overlay, rig.Log, rig.Relay, rig.Victims);

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
            throw new TimeoutException($"{e.Message}: they wrote {string.Join(", ", victims.Select(v => v.Peer.BytesWritten))} of {written}\n{rig.Said()}");
        }
        Assert.Contains(log.Lines, l => l.Id.Id == 9203 && l.Message.StartsWith($"parent {relay.Id} ", StringComparison.Ordinal));
        Assert.DoesNotContain(log.Lines, l => l.Id.Id == 9202);
        await rig.AssertHonestKeptAndIdenticalAsync();
    }

    [Fact]
    public async Task The_children_of_a_relay_that_sends_just_over_half_of_the_stream_are_moved_off_it_while_the_source_runs()
    {
        await using var rig = await Rig.StartAsync(Attacks.Share(0.55));
        var (overlay, log, relay, victims) = (rig.Overlay, rig.Log, rig.Relay, rig.Victims);
        int ParentOf(Peer peer) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == peer.Id)?.Parents[0] ?? -1;

        // A live source for up to 180 s at 160 KiB/s: at 55%, the liar's children fall 0.45 s behind a second.
        await using (var source = LiveSource.Start(overlay, rate: 160 * 1024, maxSeconds: 180, seed: 3))
        {
            await Overlay.WaitUntilAsync(() => source.Ended || victims.All(v => ParentOf(v.Peer) is not -1 && ParentOf(v.Peer) != relay.Id),
                "the liar's children are moved off it, or the source ends", TimeSpan.FromSeconds(400));
            var still = victims.Where(v => ParentOf(v.Peer) == relay.Id).Select(v => $"peer {v.Peer.Id} ({source.Lag(v.Peer).TotalSeconds:0.#} s behind)").ToList();
            Assert.True(still.Count == 0, $"still under the liar when its source ended after {source.Elapsed.TotalSeconds:0} s: {string.Join(", ", still)}\n{rig.Said()}");
        }
        Assert.Contains(log.Lines, l => l.Id.Id == 9204 && l.Message.StartsWith($"parent {relay.Id} ", StringComparison.Ordinal));
        await rig.AssertHonestKeptAndIdenticalAsync();
    }

    /// <summary>K = 1, heartbeat timeout 2 s, windows of 120 s (long enough for a child the liar held back for two bounds); the liar relay lies from the start.</summary>
    private sealed class Rig : IAsyncDisposable
    {
        public required Overlay Overlay { get; init; }
        public required RecordingLogger Log { get; init; }
        public required TamperingTransport Liar { get; init; }
        public required Peer Relay { get; init; }
        public required List<(Peer Peer, MemoryStream Output, Task Run, string Host)> Victims { get; init; }

        public static async Task<Rig> StartAsync(Func<FrameRewriter> attack)
        {
            var log = new RecordingLogger();
            var heartbeatTimeout = TimeSpan.FromSeconds(2);
            var window = TimeSpan.FromSeconds(120);
            var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, configure: o => o with { ReplayWindowAge = window }, heartbeatTimeout: heartbeatTimeout, loggers: log);
            var liar = new TamperingTransport(overlay.Network.Host("liar"), (_, f) => [f]) { PerConnection = attack };
            var (relay, victims) = await LiarRelay.StartAsync(overlay, liar, heartbeatTimeout, log, o => o with { ReplayWindowAge = window });
            liar.Active = true;
            return new Rig { Overlay = overlay, Log = log, Liar = liar, Relay = relay, Victims = victims };
        }

        /// <summary>What the nodes said, from information up.</summary>
        public string Said() => string.Join("\n", Log.Lines.Where(l => l.Level >= Microsoft.Extensions.Logging.LogLevel.Information).Select(l => $"{l.Id.Id} {l.Message}"));

        /// <summary>The liar lied; no honest relay lost an edge to its children's cuts (804) or was made a leaf for them (806); after the end, every viewer wrote the source's bytes.</summary>
        public async Task AssertHonestKeptAndIdenticalAsync()
        {
            Assert.True(Liar.Rewritten > 0, "the liar never held a frame back");
            var honest = Overlay.Peers.Select(p => p.Peer.Id).ToList();
            Assert.DoesNotContain(Log.Lines, l => (l.Id.Id == 804 && honest.Any(id => l.Message.Contains($"parent {id} (", StringComparison.Ordinal)))
                || (l.Id.Id == 806 && honest.Any(id => l.Message.Contains($"peer {id} (", StringComparison.Ordinal))));
            await Overlay.EndAsync(TimeSpan.FromSeconds(120));
            foreach (var p in Overlay.Peers) await Overlay.AssertIdenticalAsync(p);
        }

        public async ValueTask DisposeAsync()
        {
            await Relay.DisposeAsync();
            await Overlay.DisposeAsync();
        }
    }
}

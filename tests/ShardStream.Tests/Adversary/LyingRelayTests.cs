using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A relay that joined honestly lies to the viewers below it. Whatever it sends, an honest peer
/// writes no byte the source did not write at that offset, loses none, and does not stop early.
/// </summary>
public class LyingRelayTests
{
    private const int Viewers = 6;

    public static TheoryData<string> Lies => ["flip", "offset", "seq", "end", "move"];

    [Theory]
    [MemberData(nameof(Lies))]
    public async Task Honest_viewers_below_a_lying_relay_write_only_the_source_and_all_of_it(string lie)
    {
        const int shards = 1;
        FrameRewriter rewrite = lie switch
        {
            "flip" => Attacks.FlipBytes,
            "offset" => Attacks.ForgeOffsets,
            "seq" => (t, f) => Attacks.ForgeSeqsAhead(shards)(t, f),
            "move" => Attacks.MoveToNowhere(),
            _ => Attacks.EarlyEnd(shards),
        };
        await using var overlay = await Overlay.StartAsync(shards: shards, minPeers: 1 + Viewers);
        var liar = new TamperingTransport(overlay.Network.Host("liar"), rewrite);
        await using var relay = new Peer(new PeerOptions
        {
            JoinAddress = overlay.Coordinator.ListenAddress,
            ListenAddress = "liar:1",
            HeartbeatTimeout = TimeSpan.FromSeconds(10),
            HeartbeatInterval = TimeSpan.FromSeconds(2),
        }, liar, Overlay.Loggers);
        await relay.StartAsync(CancellationToken.None);
        var relayRun = Task.Run(() => relay.RunAsync(Stream.Null, CancellationToken.None));
        for (int i = 0; i < Viewers; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        Assert.Contains(overlay.Peers, p => p.Peer.ParentIds().Contains(relay.Id));

        await overlay.WriteAsync(Overlay.RandomBytes(100_000, seed: 1));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten > 0), "every viewer wrote the first bytes");
        liar.Active = true;
        for (int i = 0; i < 20; i++)
        {
            await overlay.WriteAsync(Overlay.RandomBytes(10_000, seed: 100 + i));
            await Task.Delay(5);
        }
        await overlay.EndAsync();

        var source = overlay.Written;
        foreach (var p in overlay.Peers)
        {
            try
            {
                await p.Run.WaitAsync(Overlay.Deadline);
            }
            catch (StreamInterruptedException)
            {
                // Judged by its bytes below.
            }
            var got = p.Output.ToArray();
            long forged = 0;
            for (int i = 0; i < got.Length && p.Peer.StartOffset + i < source.Length; i++)
                if (got[i] != source[p.Peer.StartOffset + i]) forged++;
            forged += Math.Max(0, p.Peer.StartOffset + got.Length - source.Length);
            Assert.True(forged == 0, $"peer {p.Peer.Id} wrote {forged} forged bytes ({lie}; parents {string.Join(",", p.Peer.ParentIds())}, the liar is {relay.Id})");
        }
        Assert.True(liar.Rewritten > 0, "the liar never got to lie");
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Tests.Nodes;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A liar that passes as a starving relay (event 9308). It withholds the stream from one child
/// (<see cref="Attacks.StallAfterOneChunk"/>: one chunk 2.5 s into each attach, then nothing, so
/// the child's cuts come about 7 s apart) and says its own parent (the coordinator) is lost on
/// its control link (<see cref="Attacks.ReportParentLost"/>) right after each of that child's cuts
/// that the coordinator counted against it: the child's next two cuts find it under repair and
/// are excused, the one after finds its repair too old (it is more than 17 s back) and counts,
/// but as a first attempt, so the edge is never dropped. The liar sees its child's cuts as its
/// link to it closing; the test reads them from the coordinator's log, which says the same.
/// Before, the excuse count of a child started again at each counted report, and the liar kept
/// its child for as long as it liked (two excuses every three cuts). Then each child had at most
/// <see cref="RepairService.StarvedParentExcuses"/> excused reports about one parent in a period
/// of minutes that no report resets (3 here). Now none: the liar's parent is the coordinator,
/// which still sends it the shard on a link that keeps up, so its report starts no repair (event
/// 9312) and its child's cuts find it fed, not starving (9313); the child is moved off it.
/// </summary>
public class StarvingLiarTests
{
    [Fact]
    public Task A_liar_that_times_reports_of_its_own_parent_lost_cannot_keep_its_childs_cuts_excused() => LiarLosesItsChildAsync(silentAttaches: false);

    /// <summary>
    /// The liar above, which also never completes an attach to the coordinator (every connection it
    /// opens but its join's sends nothing: each re-attach times out and it reports the coordinator
    /// lost again, as an honest peer does), so the shard keeps coming on its control link, where it
    /// was served from its join. The coordinator feeds it there on a link that keeps up: its reports
    /// start no repair (9312) and its child's cuts count (9313). Before, only an attach link was
    /// taken as the coordinator feeding it: it stayed under repair, fed, and its child's cuts were excused.
    /// </summary>
    [Fact]
    public Task A_liar_fed_on_its_control_link_that_never_attaches_again_cannot_keep_its_childs_cuts_excused() => LiarLosesItsChildAsync(silentAttaches: true);

    private static async Task LiarLosesItsChildAsync(bool silentAttaches)
    {
        var log = new RecordingLogger();
        var heartbeatTimeout = TimeSpan.FromSeconds(2);
        // Windows long enough for a child the liar held back for many cuts.
        var window = TimeSpan.FromSeconds(180);
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, configure: o => o with { ReplayWindowAge = window }, heartbeatTimeout: heartbeatTimeout, loggers: log);
        var due = new System.Runtime.CompilerServices.StrongBox<int>(0);
        // On from the start, to see which connection its join opened; it sends nothing before a report is due.
        var reports = new TamperingTransport(overlay.Network.Host("liar"), (_, f) => [f])
        {
            Active = true,
            Opened = true,
            PerConnection = Attacks.ReportParentLost(() => 0, () => Interlocked.Exchange(ref due.Value, 0) > 0),
        };
        // Every connection it opens but its join's sends nothing (the second test): it never completes an attach.
        ITransport attaches = silentAttaches ? new TamperingTransport(reports, (_, f) => [f]) { Active = true, Opened = true, PerConnection = Attacks.SilentAttaches } : reports;
        var liar = new TamperingTransport(attaches, (_, f) => [f]) { PerConnection = Attacks.StallAfterOneChunk(TimeSpan.FromSeconds(2.5)) };
        var (relay, victims) = await LiarRelay.StartAsync(overlay, liar, heartbeatTimeout, log, o => o with { ReplayWindowAge = window });
        await using var _ = relay;
        // One child is lied to; the other, if any, is served honestly (and never cuts it).
        var (victim, host) = (victims[0].Peer, victims[0].Host);
        liar.OnlyTo = host;
        int ParentOf(Peer peer) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == peer.Id)?.Parents[0] ?? -1;
        // The coordinator's handling of the child's reports about the liar: attached there again (1664, excused or not), excused (9308).
        int Said(int id) => log.Lines.Count(l => l.Id.Id == id && l.Message.StartsWith($"peer {victim.Id} lost parent {relay.Id},", StringComparison.Ordinal));
        int Counted() => Said(1664) - Said(9308);
        // Excused: when the report came (9308), or as the liar began a repair right after it (9310).
        int Excused() => Said(9308) + log.Lines.Count(l => l.Id.Id == 9310 && l.Message.StartsWith($"peer {victim.Id} lost parent {relay.Id} ", StringComparison.Ordinal));
        liar.Active = true;

        await using var source = LiveSource.Start(overlay, rate: 160 * 1024, maxSeconds: 300, seed: 4);
        using var stop = new CancellationTokenSource();
        // After each cut counted against it, the liar says its own parent is lost.
        var adversary = Attacks.DueWhenItGrowsAsync(Counted, due, stop.Token);
        int most = 2 * RepairService.StarvedParentExcuses;
        try
        {
            await Overlay.WaitUntilAsync(() => (ParentOf(victim) is not -1 && ParentOf(victim) != relay.Id) || Excused() > most,
                $"the liar's child is moved off it, or more than {most} of its cuts are excused", TimeSpan.FromSeconds(400));
        }
        finally
        {
            await stop.CancelAsync();
            await adversary;
        }
        Assert.True(Excused() == 0 && ParentOf(victim) != relay.Id,
            $"the liar kept its child: {Excused()} of its cuts excused ({Said(1664)} sent back to it), its parent {ParentOf(victim)}\n{log.Dump()}");
        await source.StopAsync();
        await overlay.EndAsync(TimeSpan.FromSeconds(180));
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

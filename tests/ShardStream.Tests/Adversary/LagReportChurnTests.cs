using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A child that reports its parent lost again and again, in a full tree (K = 1, no free slot):
/// each time the coordinator takes the edge out of the plan, an honest leaf elsewhere gives the
/// reporter its place and takes the reporter's old one. The liar is a stranger (a control link
/// only, a leaf) that reports whichever node the plan makes its parent: with cause 1 (a lag cut,
/// event 9320) one report a time, or without a cause twice within the retry window (the second
/// counts the parent as unreachable, event 804). Eight relays, a leaf under each: it has seven to
/// drop after its first parent, each time for one honest leaf's place.
/// </summary>
public class LagReportChurnTests
{
    private const int Relays = 8;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_child_that_reports_parent_after_parent_lost_moves_at_most_a_bounded_number_of_honest_peers(bool lag)
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1, MaxPeerUpload = Relays }, heartbeatTimeout: TimeSpan.FromSeconds(5), loggers: log);
        // A full tree: the coordinator's one slot, a hub's one per relay, one per relay, each a node's.
        await AddFullTreeAsync(overlay);
        await using var liar = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        var before = overlay.Coordinator.Snapshot();
        Assert.True(before.Nodes.All(n => n.Used == n.Budget) && before.Nodes.Count == 2 * Relays + 2, before.Render());

        var (movedHonest, dropped) = await ChurnAsync(overlay, liar, log, lag, rounds: Relays + 3);

        // Not fewer either: in a full tree the first ones each make room (a test that can fail both ways).
        Assert.True(movedHonest.Count == RepairService.DropsMakingRoom,
            $"{(lag ? "lag" : "plain")} reports of one child dropped its edge to {dropped.Count} parents ({string.Join(",", dropped)}) and moved {movedHonest.Count} honest peers ({string.Join(",", movedHonest)}); {RepairService.DropsMakingRoom} may be moved:\n{overlay.Coordinator.Snapshot().Render()}");
        Assert.True(log.Lines.Count(l => l.Id.Id == 9321 && l.Message.StartsWith($"peer {liar.Id} ", StringComparison.Ordinal)) == 1, $"the cap was not said once:\n{log.Dump()}");
    }

    /// <summary>
    /// K = 2, the stranger under one relay in both shards of a full tree: each drop moves it in
    /// both, each shard exchanging places with a leaf, two honest peers a report. The cap counts
    /// the peers moved, not the drops: 3 in all (before, 2 drops under the cap moved 4, and with K
    /// shards 3 drops moved 3 × K).
    /// </summary>
    [Fact]
    public async Task With_two_shards_from_one_parent_the_cap_counts_the_peers_moved()
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 2, configure: o => o with { Upload = 1, MaxPeerUpload = Relays }, heartbeatTimeout: TimeSpan.FromSeconds(5), loggers: log);
        // A full tree: the coordinator's slot in each shard, a hub's one per relay, one per relay in each shard, each a leaf's.
        await AddFullTreeAsync(overlay);
        await using var liar = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        var before = overlay.Coordinator.Snapshot();
        Assert.True(before.Nodes.All(n => n.Used == n.Budget) && before.Nodes.Count == 2 * Relays + 2
            && before.Nodes.Where(n => n.Id != 0).All(n => n.Parents[0] == n.Parents[1]), before.Render());

        var (movedHonest, dropped) = await ChurnAsync(overlay, liar, log, lag: true, rounds: Relays);

        Assert.True(movedHonest.Count == RepairService.DropsMakingRoom,
            $"lag reports of one child getting 2 shards from each parent dropped its edge to {dropped.Count} parents ({string.Join(",", dropped)}) and moved {movedHonest.Count} honest peers ({string.Join(",", movedHonest)}); {RepairService.DropsMakingRoom} may be moved:\n{overlay.Coordinator.Snapshot().Render()}");
        Assert.True(log.Lines.Count(l => l.Id.Id == 9321 && l.Message.StartsWith($"peer {liar.Id} ", StringComparison.Ordinal)) == 1, $"the cap was not said once:\n{log.Dump()}");
    }

    /// <summary>
    /// A child whose first drops each take a free slot moves nobody: only drops that move another
    /// peer to make it room count toward <see cref="RepairService.DropsMakingRoom"/>. Eight relays
    /// with a free slot each; the stranger, under one, has its edges to 3 of them dropped into
    /// free slots; then leaves fill the tree, and its next lag cuts still move it, each for one
    /// honest leaf's place, 3 times. Before, the 3 free ones counted: it was sent back to a
    /// parent it cut for lag, for up to 230 s, having moved nobody.
    /// </summary>
    [Fact]
    public async Task Drops_into_free_slots_do_not_count_toward_the_cap()
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1, MaxPeerUpload = Relays }, heartbeatTimeout: TimeSpan.FromSeconds(5), loggers: log);
        await overlay.AddPeerAsync(upload: Relays);
        for (int i = 0; i < Relays; i++) await overlay.AddPeerAsync(upload: 1);
        await using var liar = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        var (free, freeDropped) = await ChurnAsync(overlay, liar, log, lag: true, rounds: RepairService.DropsMakingRoom);
        Assert.True(free.Count == 0 && freeDropped.Count == RepairService.DropsMakingRoom, $"into free slots: {freeDropped.Count} dropped, {free.Count} honest moved:\n{overlay.Coordinator.Snapshot().Render()}");

        for (int i = 0; i < Relays - 1; i++) await overlay.AddPeerAsync(upload: 0);
        var full = overlay.Coordinator.Snapshot();
        Assert.True(full.Nodes.All(n => n.Used == n.Budget) && full.Nodes.Count == 2 * Relays + 2, full.Render());
        var (movedHonest, dropped) = await ChurnAsync(overlay, liar, log, lag: true, rounds: Relays);
        Assert.True(movedHonest.Count == RepairService.DropsMakingRoom,
            $"in the full tree its edges to {dropped.Count} parents ({string.Join(",", dropped)}) were dropped, moving {movedHonest.Count} honest peers ({string.Join(",", movedHonest)}); {RepairService.DropsMakingRoom} may be moved, none was before:\n{overlay.Coordinator.Snapshot().Render()}");
    }

    /// <summary>A hub of <see cref="Relays"/> under the coordinator, the relays under it, a leaf under all but one (the stranger's place).</summary>
    private static async Task AddFullTreeAsync(Overlay overlay)
    {
        await overlay.AddPeerAsync(upload: Relays);
        for (int i = 0; i < Relays; i++) await overlay.AddPeerAsync(upload: 1);
        for (int i = 0; i < Relays - 1; i++) await overlay.AddPeerAsync(upload: 0);
    }

    /// <summary>
    /// Up to <paramref name="rounds"/> times, the stranger reports the node the plan makes its
    /// parent lost in shard 0, with every shard it gets from that parent (with cause 1 once, or
    /// without a cause twice); returns the honest peers whose parent changed meanwhile (once per
    /// shard), and the parents it was moved away from.
    /// </summary>
    private static async Task<(List<int> MovedHonest, HashSet<int> Dropped)> ChurnAsync(Overlay overlay, StrangerControlLink liar, RecordingLogger log, bool lag, int rounds)
    {
        Dictionary<int, int[]> Parents() => overlay.Coordinator.Snapshot().Nodes.Skip(1).ToDictionary(n => n.Id, n => n.Parents);
        int[] handled = [9320, 1664, 9301, 9309, 804, 805, 9321];
        async Task ReportAsync(int parent, ShardStart[] shards, LossCause cause)
        {
            int mark = log.Lines.Count;
            await liar.SendAsync(o => new ParentLost((ulong)parent, shards, "", cause).Write(o));
            await Overlay.WaitUntilAsync(() => log.Lines.Skip(mark).Any(l => handled.Contains(l.Id.Id) && l.Message.StartsWith($"peer {liar.Id} ", StringComparison.Ordinal)),
                $"the coordinator handled the report about {parent}");
        }

        var movedHonest = new List<int>();
        var dropped = new HashSet<int>();
        for (int round = 0; round < rounds; round++)
        {
            var was = Parents();
            int parent = was[liar.Id][0];
            if (parent == 0) break;
            ShardStart[] shards = [.. Enumerable.Range(0, was[liar.Id].Length).Where(s => was[liar.Id][s] == parent).Select(s => new ShardStart((byte)s, 0))];
            await ReportAsync(parent, shards, lag ? LossCause.Lag : LossCause.Lost);
            if (!lag) await ReportAsync(parent, shards, LossCause.Lost);
            var now = Parents();
            if (now[liar.Id][0] != parent) dropped.Add(parent);
            movedHonest.AddRange(now.Keys.SelectMany(id => Enumerable.Range(0, now[id].Length).Where(s => id != liar.Id && was.TryGetValue(id, out var p) && p[s] != now[id][s]).Select(_ => id)));
        }

        return (movedHonest, dropped);
    }
}

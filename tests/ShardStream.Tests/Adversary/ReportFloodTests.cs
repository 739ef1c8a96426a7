using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A stranger (a control link only, a leaf under the coordinator) that sends 1,000 ParentLost
/// frames about its parent at once. Each one the coordinator takes is a Move sent (event 1664) or
/// a delayed one started (9302), under its gate: past <see cref="RepairService.ReportBurst"/> they
/// are dropped, said once (event 9322), and the stranger stays in the overlay; the honest peers
/// write the whole stream.
/// </summary>
public class ReportFloodTests
{
    private const int Reports = 1000;

    [Fact]
    public async Task A_flood_of_parent_lost_reports_from_one_peer_is_cut_at_its_burst()
    {
        var log = new RecordingLogger();
        const int shards = 2;
        // The stranger leaves with no goodbye before the end: a short RejoinGrace lets the end go on
        // without keeping its place for 4 heartbeat timeouts (40 s here) in case it joins again.
        await using var overlay = await Overlay.StartAsync(shards: shards, configure: o => o with { Upload = 4, RejoinGrace = TimeSpan.FromSeconds(1) }, loggers: log);
        await overlay.AddPeerAsync(upload: 1);
        await overlay.AddPeerAsync(upload: 1);
        var liar = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        int read = 0;
        overlay.Coordinator.ParentLostRead = (reporter, _) =>
        {
            if (reporter == liar.Id) Interlocked.Increment(ref read);
            return true;
        };
        overlay.StartStreaming();
        var data = Overlay.RandomBytes(256 * 1024, seed: 7);
        await overlay.WriteAsync(data[..(data.Length / 2)]);

        var lost = new ParentLost(0, [new ShardStart(0, 0), new ShardStart(1, 0)], "");
        await liar.SendAsync(o =>
        {
            for (int i = 0; i < Reports; i++) lost.Write(o);
        });
        await Overlay.WaitUntilAsync(() => Volatile.Read(ref read) == Reports, $"the coordinator read the {Reports} reports");
        // Counted once the last was read: each report the coordinator took said one of these before the next frame was read.
        int handled = log.Lines.Count(l => l.Id.Id is 1664 or 9302 && l.Message.StartsWith($"peer {liar.Id} ", StringComparison.Ordinal));
        int burst = RepairService.ReportBurst(shards);
        // The bucket refills by one a shard per heartbeat interval (2 s here) while the flood is read: twice the burst is room for 40 s of it.
        Assert.True(handled <= 2 * burst, $"the coordinator took {handled} of {Reports} reports from one peer; its burst is {burst}:\n{log.Dump()}");
        Assert.True(handled >= 1, $"no report was taken at all:\n{log.Dump()}");
        Assert.Single(log.Lines, l => l.Id.Id == 9322 && l.Message.StartsWith($"peer {liar.Id} ", StringComparison.Ordinal));
        Assert.Contains(overlay.Coordinator.Snapshot().Nodes, n => n.Id == liar.Id);

        await overlay.WriteAsync(data[(data.Length / 2)..]);
        await liar.DisposeAsync();
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

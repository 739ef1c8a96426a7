using ShardStream.Nodes;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// When a relay dies, each of its children reports it lost, all at about the same time. The first
/// report (or the coordinator's own detection) takes the relay out and moves every orphan; the
/// reports that come after it name a parent already out of the overlay. The coordinator answered
/// each of those with the child's place in the plan again, a Move it had sent already: the child
/// attached twice, and its new parent logged a broken pipe for the attach it dropped (seen with
/// the CLI after kill -9 of a relay, two runs of two). A child told its place since the parent left
/// is not told again.
/// </summary>
public sealed class DuplicateMoveTests(ITestOutputHelper output)
{
    private const int Rate = 512 * 1024;
    private const int MaxSourceSeconds = 30;

    [Fact]
    public async Task Children_that_report_a_dead_relay_after_it_was_taken_out_are_moved_once()
    {
        var log = new LogCapture();
        // Coordinator (1 slot) -> relay p1 (3 slots) -> relay p2 (2 slots) and viewers p3, p4 (none).
        // When p1 dies, p2 takes the coordinator's slot and the viewers go under p2.
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 4, configure: o => o with { Upload = 1 }, loggers: log.Factory);
        var dying = await overlay.AddPeerAsync(upload: 3);
        await overlay.AddPeerAsync(upload: 2);
        await overlay.AddPeerAsync(upload: 0);
        await overlay.AddPeerAsync(upload: 0);
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.Count(n => n.Id != 0 && n.Parents[0] == dying.Id) == 3, "three peers are placed under p1");
        var orphans = overlay.Peers.Skip(1).Select(p => p.Peer.Id).ToArray();

        overlay.StartStreaming();
        await using (var source = LiveSource.Start(overlay, Rate, MaxSourceSeconds, seed: 47))
        {
            await Overlay.WaitUntilAsync(() => source.Ended || source.Elapsed >= TimeSpan.FromSeconds(2), "2 s of stream");
            overlay.Network.Kill(overlay.PeerById(dying.Id).Host);
            await Overlay.WaitUntilAsync(() => source.Ended || orphans.All(id => Parent(overlay, id) is { } p && p != dying.Id), "every orphan has a new parent in the plan");
            // Every report has come in by then, and every Move has been applied.
            var at = source.Elapsed + TimeSpan.FromSeconds(3);
            await Overlay.WaitUntilAsync(() => source.Ended || source.Elapsed >= at, "3 s of stream after the repair");
            Assert.False(source.Ended, "the source ended before the repair was over");
        }
        await overlay.EndAsync();
        foreach (var id in orphans) await overlay.AssertIdenticalAsync(overlay.PeerById(id));

        foreach (var l in log.Lines.Where(l => l.Message.StartsWith("moving shard", StringComparison.Ordinal) || l.Message.Contains("already out", StringComparison.Ordinal)))
            output.WriteLine($"{l.Category}: {l.Message}");
        // Each orphan is told its new place once: one "moving" line each (p2 and the two viewers).
        int moves = log.Lines.Count(l => l.Message.StartsWith("moving shard(s) 0@", StringComparison.Ordinal));
        Assert.True(moves == orphans.Length, $"{moves} moves applied for {orphans.Length} orphans");
    }

    private static int? Parent(Overlay overlay, int id) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents[0];
}

using System.Text.RegularExpressions;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Every peer the coordinator takes out of the overlay has its line (event 1660, PeerRemoved):
/// one that left, failed or finished, and one evicted for lack of upload, after the line of the
/// removal that evicted it and before what its eviction causes. After the end nobody is evicted.
/// </summary>
public sealed partial class PeerRemovedLineTests
{
    [Fact]
    public async Task Finished_viewers_orphaned_after_the_end_are_taken_by_the_coordinator_not_evicted()
    {
        // Coordinator (1 slot) -> relay (2 slots) -> two viewers (none). The relay's removal waits
        // until both viewers said they finished (their goodbyes came), and theirs wait for the
        // relay's: its departure then leaves two orphans for the coordinator's one slot. Until
        // 2026-12-07 one of them, finished but still listed, was evicted and told "evicted: no
        // upload capacity is left in the overlay for this peer; join again later" after its
        // "stream complete". After the end the coordinator takes both (the second beyond its budget).
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, configure: o => o with { Upload = 1 }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 2);
        var viewerLogs = new[] { new LogCapture(), new LogCapture() };
        var viewers = new[] { await overlay.AddPeerAsync(upload: 0, loggers: viewerLogs[0].Factory), await overlay.AddPeerAsync(upload: 0, loggers: viewerLogs[1].Factory) };
        Assert.All(viewers, v => Assert.Equal(relay.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == v.Id).Parents[0]));
        using var viewersDone = new CountdownEvent(viewers.Length);
        using var relayRemoved = new ManualResetEventSlim();
        overlay.Coordinator.GoneRemoval = (gone, remove) =>
        {
            if (gone == relay.Id)
            {
                Assert.True(viewersDone.Wait(Overlay.Deadline), "the viewers never said they finished");
                remove();
                relayRemoved.Set();
                return;
            }
            viewersDone.Signal();
            Assert.True(relayRemoved.Wait(Overlay.Deadline), "the relay was never removed");
            remove();
        };

        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, seed: 61));
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);

        var lines = CoordinatorLines(logs);
        string Dump() => string.Join("\n", lines);
        var removed = lines.Select(l => Removed().Match(l)).Where(m => m.Success).ToList();
        foreach (var p in overlay.Peers)
            Assert.True(removed.Count(m => m.Groups[1].Value == $"{p.Peer.Id}") == 1, $"peer {p.Peer.Id} has not one removal line (1660):\n{Dump()}");
        Assert.DoesNotContain(removed, m => m.Groups[2].Value == "is evicted");
        for (int i = 0; i < viewers.Length; i++)
        {
            var told = viewerLogs[i].Lines.Where(l => l.Message.Contains("evicted", StringComparison.Ordinal)).Select(l => l.Message).ToList();
            Assert.True(told.Count == 0, $"viewer {viewers[i].Id} finished and was told: {string.Join("\n", told)}\ncoordinator:\n{Dump()}");
        }
        // The relay's line counts both viewers' moves to the coordinator (it said 1 when one was evicted).
        Assert.Equal("2", removed.Single(m => m.Groups[1].Value == $"{relay.Id}").Groups[4].Value);
    }

    [Fact]
    public async Task A_viewer_evicted_during_the_stream_has_its_line_after_its_cause_and_before_its_goodbye()
    {
        // The same overlay, the relay killed while the source runs: one viewer moves to the
        // coordinator's slot, the other is evicted. Its removal line came after the line that
        // closed its link with "evicted" (and after its parents were told to drop it): the
        // coordinator's log read the eviction first and its removal second.
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, configure: o => o with { Upload = 1 }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 2);
        // Told to stop at once when evicted, instead of trying to join again (refused: no room).
        for (int i = 0; i < 2; i++) await overlay.AddPeerAsync(upload: 0, configure: o => o with { RejoinFor = TimeSpan.Zero });
        var viewers = overlay.Peers.Skip(1).ToArray();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.Count(n => n.Id != 0 && n.Parents[0] == relay.Id) == 2, "both viewers are placed under the relay");
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(200_000, seed: 62));
        await Overlay.WaitUntilAsync(() => viewers.All(v => v.Peer.BytesWritten == 200_000), "both viewers have the first part");

        overlay.Network.Kill(overlay.PeerById(relay.Id).Host);
        await Overlay.WaitUntilAsync(() => viewers.Any(v => v.Run.IsCompleted), "a viewer is evicted");
        var evicted = viewers.First(v => v.Run.IsCompleted);
        var failure = await Assert.ThrowsAsync<StreamInterruptedException>(() => evicted.Run);
        Assert.Contains("evicted: no upload capacity is left in the overlay for this peer; join again later", failure.Message);
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, seed: 63));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(viewers.Single(v => v != evicted));

        var lines = CoordinatorLines(logs);
        string Dump() => string.Join("\n", lines);
        int relayLine = lines.FindIndex(l => Removed().Match(l) is { Success: true } m && m.Groups[1].Value == $"{relay.Id}");
        int evictedLine = lines.FindIndex(l => Removed().Match(l) is { Success: true } m && m.Groups[1].Value == $"{evicted.Peer.Id}" && m.Groups[2].Value == "is evicted");
        int closingLine = lines.FindIndex(l => l.StartsWith($"peer {evicted.Peer.Id} ", StringComparison.Ordinal) && l.Contains("closing: evicted", StringComparison.Ordinal));
        Assert.True(relayLine >= 0 && evictedLine >= 0 && closingLine >= 0, $"relay's removal line {relayLine}, the evicted viewer's {evictedLine}, its closing line {closingLine}:\n{Dump()}");
        Assert.True(relayLine < evictedLine, $"the evicted viewer's removal line (1660) comes before the relay's, whose departure evicted it:\n{Dump()}");
        Assert.True(evictedLine < closingLine, $"the evicted viewer's link closed with 'evicted' before its removal line (1660):\n{Dump()}");
    }

    private static List<string> CoordinatorLines(LogCapture logs) => logs.Lines.Where(l => l.Category == "coordinator").Select(l => l.Message).ToList();

    [GeneratedRegex(@"^peer (\d+) (is gone|is leaving|is evicted) \((.*)\); (\d+) reattachment\(s\) sent$")]
    private static partial Regex Removed();
}

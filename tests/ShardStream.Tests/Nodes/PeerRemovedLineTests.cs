using System.Text.RegularExpressions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Every peer the coordinator takes out of the overlay has its line (event 1660, PeerRemoved):
/// one that left, failed or finished, and one evicted for lack of upload, here after the end,
/// when it had finished already, after the line of the removal that evicted it.
/// </summary>
public sealed partial class PeerRemovedLineTests
{
    [Fact]
    public async Task A_finished_viewer_evicted_after_the_end_has_its_removal_line()
    {
        // Coordinator (1 slot) -> relay (2 slots) -> two viewers (none). The relay's removal waits
        // until both viewers said they finished (their goodbyes came), and theirs wait for the
        // relay's: its departure then leaves two orphans for the coordinator's one slot, and one of
        // them, finished but still listed, is evicted. (Without the first wait a viewer's goodbye
        // could come after the eviction, 2 runs of 10: it was evicted before it was known to have
        // finished, and its line rightly did not say so.)
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, configure: o => o with { Upload = 1 }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 2);
        var viewers = new[] { await overlay.AddPeerAsync(upload: 0), await overlay.AddPeerAsync(upload: 0) };
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

        var lines = logs.Lines.Where(l => l.Category == "coordinator").Select(l => l.Message).ToList();
        string Dump() => string.Join("\n", lines);
        var removed = lines.Select(l => Removed().Match(l)).Where(m => m.Success).ToList();
        foreach (var p in overlay.Peers)
            Assert.True(removed.Count(m => m.Groups[1].Value == $"{p.Peer.Id}") == 1, $"peer {p.Peer.Id} has not one removal line (1660):\n{Dump()}");
        var evicted = Assert.Single(removed, m => m.Groups[2].Value == "is evicted");
        Assert.Contains(viewers, v => $"{v.Id}" == evicted.Groups[1].Value);
        Assert.Contains("no upload capacity is left for it", evicted.Groups[3].Value, StringComparison.Ordinal);
        Assert.Contains("it had finished", evicted.Groups[3].Value, StringComparison.Ordinal);
        // After the relay's line, whose departure evicted it.
        Assert.True(removed.FindIndex(m => m.Groups[1].Value == $"{relay.Id}") < removed.IndexOf(evicted), Dump());
        // The relay's line counts the reattachments sent: the other viewer's move to the
        // coordinator, not the evicted one's entry, for which no Move goes out (it said 2).
        Assert.Equal("1", removed.Single(m => m.Groups[1].Value == $"{relay.Id}").Groups[4].Value);
    }

    [GeneratedRegex(@"^peer (\d+) (is gone|is leaving|is evicted) \((.*)\); (\d+) reattachment\(s\) sent$")]
    private static partial Regex Removed();
}

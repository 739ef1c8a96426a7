using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// What the slow-child lines (events 900-916, docs/logging.md) tell an operator, read in the order
/// they come: a parent that is a peer says it reports the child (the coordinator decides), the
/// coordinator says what it decided, "still slow" (907) comes before the stop it leads to (906),
/// and a child that took nothing in the window is said to have taken nothing, not "0.0 Mbit/s".
/// The slow viewer's download is all but stopped (1 byte/s): no send to it completes once the
/// stream runs, and the heartbeat timeout (30 s) is longer than the whole episode.
/// </summary>
public sealed class SlowChildLinesTests
{
    private const int Rate = 256 * 1024;           // the live source: 256 KiB/s
    private const int MaxSourceSeconds = 40;
    private static readonly TimeSpan HeartbeatTimeout = TimeSpan.FromSeconds(30);
    // Heartbeats (and the slow-child check, on their tick) as often as with the tests' usual 10 s timeout.
    private static readonly TimeSpan HeartbeatInterval = TimeSpan.FromSeconds(2);

    [Fact]
    public async Task A_leaf_of_the_coordinator_behind_for_the_grace_is_still_slow_before_it_is_stopped()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 1, configure: o => o with { Upload = 1, HeartbeatInterval = HeartbeatInterval }, heartbeatTimeout: HeartbeatTimeout, loggers: logs.Factory);
        var viewer = await overlay.AddPeerAsync(upload: 0, configure: o => o with { RejoinFor = TimeSpan.Zero, HeartbeatInterval = HeartbeatInterval });
        Assert.Equal(0, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == viewer.Id).Parents[0]);
        overlay.Network.SetDownloadRate(overlay.PeerById(viewer.Id).Host, 1);
        overlay.StartStreaming();
        string stopped = $"peer {viewer.Id}, judged as a leaf, is still slow";
        await using (var source = LiveSource.Start(overlay, Rate, MaxSourceSeconds, seed: 41))
            await Overlay.WaitUntilAsync(() => source.Ended || logs.Has(LogLevel.Warning, stopped), "the coordinator stopped the viewer, or the source ended", within: TimeSpan.FromSeconds(MaxSourceSeconds + 5));
        overlay.Network.SetDownloadRate(overlay.PeerById(viewer.Id).Host, 0);

        var lines = logs.Lines.Where(l => l.Category == "coordinator").Select(l => l.Message).ToList();
        string Dump() => string.Join("\n", lines);
        // The viewer is the coordinator's only child.
        int found = lines.FindIndex(l => l.Contains(": slow: ", StringComparison.Ordinal));
        Assert.True(found >= 0, Dump());
        // It took nothing: said so, with the window, not as a rate of 0.0.
        Assert.Contains("(it took nothing in ", lines[found], StringComparison.Ordinal);
        Assert.DoesNotContain("took 0.0 Mbit/s", Dump(), StringComparison.Ordinal);
        // The coordinator decides, and says what: a leaf behind for less than the grace is kept for now.
        Assert.EndsWith("; the coordinator decides", lines[found], StringComparison.Ordinal);
        Assert.Contains(lines.Skip(found), l => l.StartsWith($"peer {viewer.Id}, judged as a leaf, is slow (", StringComparison.Ordinal) && l.Contains("not stopped yet", StringComparison.Ordinal));
        // Still slow (907), then stopped (906): in that order.
        int still = lines.FindIndex(l => l.Contains(": still slow ", StringComparison.Ordinal));
        int stop = lines.FindIndex(l => l.StartsWith(stopped, StringComparison.Ordinal));
        Assert.True(still >= 0 && stop >= 0 && still < stop, $"907 at line {still}, 906 at line {stop}:\n{Dump()}");
        Assert.Contains("it took nothing", lines[stop], StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_peer_that_finds_a_child_slow_says_it_reports_it_and_the_coordinator_says_what_it_decided()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 2, configure: o => o with { Upload = 1, HeartbeatInterval = HeartbeatInterval }, heartbeatTimeout: HeartbeatTimeout, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 2, configure: o => o with { HeartbeatInterval = HeartbeatInterval });
        var viewer = await overlay.AddPeerAsync(upload: 0, configure: o => o with { RejoinFor = TimeSpan.Zero, HeartbeatInterval = HeartbeatInterval });
        Assert.Equal(relay.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == viewer.Id).Parents[0]);
        overlay.Network.SetDownloadRate(overlay.PeerById(viewer.Id).Host, 1);
        overlay.StartStreaming();
        string kept = $"peer {viewer.Id}, judged as a leaf, is slow (";
        await using (var source = LiveSource.Start(overlay, Rate, MaxSourceSeconds, seed: 42))
            await Overlay.WaitUntilAsync(() => source.Ended || logs.Has(LogLevel.Information, kept) || logs.Has(LogLevel.Warning, $"peer {viewer.Id}, judged as a leaf, is still slow"),
                "the coordinator judged the viewer, or the source ended", within: TimeSpan.FromSeconds(MaxSourceSeconds + 5));
        overlay.Network.SetDownloadRate(overlay.PeerById(viewer.Id).Host, 0);

        var lines = logs.Lines;
        string Dump() => string.Join("\n", lines.Select(l => $"{l.Category}: {l.Message}"));
        var found = lines.FirstOrDefault(l => l.Category == "peer" && l.Message.Contains(": slow: ", StringComparison.Ordinal)).Message;
        Assert.True(found is not null, Dump());
        // The relay demotes nothing: it reports the child, and the coordinator decides.
        Assert.DoesNotContain("demoting", found, StringComparison.Ordinal);
        Assert.EndsWith("; reported to the coordinator, which decides", found, StringComparison.Ordinal);
        Assert.Contains("(it took nothing in ", found, StringComparison.Ordinal);
        // The coordinator's line: the leaf, behind for less than the grace, is kept for now (the relay's figures in it).
        var decided = lines.FirstOrDefault(l => l.Category == "coordinator" && l.Message.StartsWith(kept, StringComparison.Ordinal)).Message;
        Assert.True(decided is not null, Dump());
        Assert.Contains($"its parent, peer {relay.Id}, found", decided, StringComparison.Ordinal);
        Assert.Contains("it took nothing while", decided, StringComparison.Ordinal);
    }
}

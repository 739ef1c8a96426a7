using ShardStream.Tests.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// security.md, promise 4: "A report that a parent went silent evicts it only when the reporter is
/// its child in the plan." A relay's control link goes silent (its host frozen); a stranger that is
/// not its child reports it lost every 100 ms, from the freeze until the relay is out of the plan
/// (by its real child's report or its own timeout): none of those reports takes it for dead.
/// </summary>
public class SilentParentReportTests
{
    [Fact]
    public async Task A_silent_node_is_not_taken_for_dead_on_the_word_of_a_peer_that_is_not_its_child()
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 2 }, heartbeatTimeout: TimeSpan.FromSeconds(3), loggers: log);
        var relay = await overlay.AddPeerAsync(upload: 1);
        await using var stranger = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero);
        var child = await overlay.AddPeerAsync(upload: 0);
        int ParentOf(int id) => overlay.Coordinator.Snapshot().Nodes.SingleOrDefault(n => n.Id == id)?.Parents[0] ?? -1;
        Assert.Equal(0, ParentOf(stranger.Id));
        Assert.Equal(relay.Id, ParentOf(child.Id));

        overlay.Network.Freeze("p1");
        int reports = 0;
        while (ParentOf(relay.Id) != -1)
        {
            Assert.True(reports < 300, "the frozen relay is still in the plan after 30 s:\n" + log.Dump());
            await stranger.SendAsync(o => new ParentLost((ulong)relay.Id, [new ShardStart(0, 0)], "").Write(o));
            reports++;
            await Task.Delay(100);
        }
        Assert.DoesNotContain(log.Lines, l => l.Id.Id == 1662 && l.Message.StartsWith($"peer {stranger.Id} lost parent {relay.Id}", StringComparison.Ordinal));
        Assert.True(reports > 5, $"the relay was out of the plan after {reports} reports: nothing was tried");
    }
}

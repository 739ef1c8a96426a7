using System.Reflection;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A parent's slow figures are scaled by K/n, n the shards it serves the child. A report checked as
/// coming from a parent can reach the judgement after a move took all of them (n = 0): its figures,
/// those of a part of the stream, were then compared unscaled with the whole stream's rate. Such a
/// report is ignored, as one from a peer that is not a parent.
/// </summary>
public class SlowReportFromNoParentTests
{
    [Fact]
    public async Task A_slow_finding_from_a_peer_that_serves_none_of_the_childs_shards_is_ignored()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 2, loggers: logs.Factory);
        await overlay.AddPeerAsync();
        await overlay.AddPeerAsync();
        var judged = await overlay.AddPeerAsync(upload: 0);
        var former = await overlay.AddPeerAsync(upload: 0);
        Assert.DoesNotContain(former.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == judged.Id).Parents);
        var eviction = (EvictionPolicy)typeof(Coordinator).GetField("_eviction", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(overlay.Coordinator)!;

        // As when the isParent check of the report passed and a move took the shards before the judgement.
        var queueAge = new CoordinatorOptions().SlowChildGrace + TimeSpan.FromSeconds(1);
        eviction.OnSlow(judged.Id, former.Id, "test: a former parent's finding", (0.5, 0.5), queueAge);

        string said = string.Join("\n", logs.Lines.Where(l => l.Category == "coordinator").Select(l => l.Message));
        Assert.True(logs.Has(LogLevel.Warning, $"peer {former.Id} reported peer {judged.Id} as slow, but the plan does not have"), said);
        Assert.False(logs.Lines.Any(l => l.Message.StartsWith($"peer {judged.Id}, judged as a leaf", StringComparison.Ordinal)), said);
    }
}

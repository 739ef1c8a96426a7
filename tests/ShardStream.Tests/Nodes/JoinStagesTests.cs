using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The coordinator records where a join's time goes (<c>shardstream.join.stage.duration</c>, per
/// stage): what an operator reads on /metrics to tell a slow dial-back from a busy lock.
/// </summary>
public sealed class JoinStagesTests
{
    [Fact]
    public async Task A_latency_aware_join_records_every_stage_of_its_way_in()
    {
        var seen = new ConcurrentDictionary<string, double>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == ShardStreamMetrics.MeterName && instrument.Name == "shardstream.join.stage.duration") l.EnableMeasurementEvents(instrument);
            },
        };
        listener.SetMeasurementEventCallback<double>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
                if (tag.Key == "stage" && tag.Value is string stage) seen.AddOrUpdate(stage, value, (_, old) => Math.Min(old, value));
        });
        listener.Start();

        await using var overlay = await Overlay.StartAsync(shards: 2, configure: o => o with { LatencyAware = true });
        // The second joiner is sent landmarks (the coordinator and the first peer) before it is
        // placed, and measures them while the coordinator waits for its next Join on the same connection.
        await overlay.AddPeerAsync();
        await overlay.AddPeerAsync();

        Assert.Equal(["hello", "landmarks", "lock", "measuring", "placement", "probe", "welcome"], seen.Keys.Order());
        Assert.All(seen.Values, v => Assert.True(v >= 0 && v < Overlay.Deadline.TotalSeconds, $"{v} s"));
    }
}

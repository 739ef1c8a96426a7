using System.Diagnostics.Metrics;

namespace ShardStream.Nodes;

/// <summary>
/// The overlay's instruments (System.Diagnostics.Metrics, no exporter here: the CLI exports them
/// in the Prometheus text format, docs/metrics.md). Names follow OpenTelemetry's conventions; the
/// Prometheus exporter turns <c>shardstream.sent</c> with unit <c>By</c> into
/// <c>shardstream_sent_bytes_total</c>. One process runs one node in the CLI; in a process with
/// several nodes (tests, the demo) the counters add up over them.
/// </summary>
public static class ShardStreamMetrics
{
    /// <summary>The meter's name: what an exporter subscribes to.</summary>
    public const string MeterName = "ShardStream";

    private static readonly Meter Meter = new(MeterName, "1.0");

    internal static readonly Counter<long> Joins = Meter.CreateCounter<long>("shardstream.joins", "{peer}", "Peers placed in the overlay by the coordinator.");

    internal static readonly Counter<long> Leaves = Meter.CreateCounter<long>("shardstream.leaves", "{peer}", "Peers taken out of the overlay (how: graceful = said Leave, failed = link lost).");

    internal static readonly Counter<long> Evictions = Meter.CreateCounter<long>("shardstream.evictions", "{peer}", "Peers evicted because no upload capacity was left for them.");

    internal static readonly Counter<long> Moves = Meter.CreateCounter<long>("shardstream.moves", "{move}", "Shard re-attachments the coordinator sent (one per peer and shard).");

    internal static readonly Histogram<int> Depth = Meter.CreateHistogram<int>("shardstream.placement.depth", "{hop}",
        "Hops from the coordinator of each placement (join or move), per shard.",
        advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 32] });

    internal static readonly Counter<long> Received = Meter.CreateCounter<long>("shardstream.received", "By", "Stream bytes taken in, per shard (the coordinator: read from the source; a peer: accepted from its parent).");

    internal static readonly Counter<long> Sent = Meter.CreateCounter<long>("shardstream.sent", "By", "Stream bytes queued to children, per shard (live and replayed).");

    internal static readonly Counter<long> Stalls = Meter.CreateCounter<long>("shardstream.stalls", "{stall}", "A shard's parent was lost: the shard stalls until a chunk comes from the new parent.");

    internal static readonly Histogram<double> StallDuration = Meter.CreateHistogram<double>("shardstream.stall.duration", "s",
        "From a shard's parent lost to the first chunk from its new parent.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30] });

    internal static readonly Counter<long> Gaps = Meter.CreateCounter<long>("shardstream.gaps", "{gap}", "Ranges of the stream skipped because no replay window held them any more.");

    internal static readonly Counter<long> Lost = Meter.CreateCounter<long>("shardstream.lost", "By", "Stream bytes skipped in gaps.");

    internal static readonly Counter<long> HeartbeatTimeouts = Meter.CreateCounter<long>("shardstream.heartbeat.timeouts", "{link}", "Links closed because the other side fell silent.");

    internal static readonly Histogram<double> ProbeRtt = Meter.CreateHistogram<double>("shardstream.probe.rtt", "s",
        "Round trip of the coordinator's reachability probe to a joiner (hello sent to welcome read).",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1] });

    internal static readonly Histogram<double> LinkRtt = Meter.CreateHistogram<double>("shardstream.link.rtt", "s",
        "Round-trip time samples of pings on links (version 6), less the time the pong waited at the other side.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1] });

    internal static readonly Histogram<double> JoinStage = Meter.CreateHistogram<double>("shardstream.join.stage.duration", "s",
        "Where a join's time goes at the coordinator, per stage (docs/performance.md, \"Where a join's time goes\"): hello = accepted to hello read, landmarks = hello to a landmark round's answer written, measuring = landmarks written to the next Join read on the same connection (version 10), probe = the dial-back, lock = waiting for the coordinator's lock, placement = under it (plan, signatures, Moves, welcome queued), welcome = accepted (on a kept connection: the placing Join read) to welcome queued.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] });

    private static readonly object[] ShardTags = Enumerable.Range(0, Wire.Protocol.MaxShards).Select(s => (object)s.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();

    /// <summary>The <c>shard</c> tag, without boxing per call.</summary>
    internal static KeyValuePair<string, object?> Shard(int shard) => new("shard", ShardTags[shard]);

    /// <summary>
    /// Adds 0 to every counter, with each shard's tag where it has one, once a node knows its shard
    /// count: a counter is then exported from the start at 0 instead of appearing only at its first
    /// event (Prometheus' rate() and alerts on absent series need that). Histograms stay absent
    /// until their first observation.
    /// </summary>
    internal static void Announce(int shardCount)
    {
        foreach (var counter in new[] { Joins, Evictions, Gaps, Lost, HeartbeatTimeouts }) counter.Add(0);
        Leaves.Add(0, new KeyValuePair<string, object?>("how", "graceful"));
        Leaves.Add(0, new KeyValuePair<string, object?>("how", "failed"));
        for (int shard = 0; shard < shardCount; shard++)
            foreach (var counter in new[] { Moves, Received, Sent, Stalls }) counter.Add(0, Shard(shard));
    }

    /// <summary>
    /// The gauges of one node, and the coordinator's count of rebuilds: read when an exporter
    /// collects. Disposed with the node. They share the meter's name, so an exporter that
    /// subscribes to <see cref="MeterName"/> sees them.
    /// </summary>
    internal static Meter CreateNodeMeter(Func<IEnumerable<Measurement<long>>> peers, Func<IEnumerable<Measurement<long>>> latencyRebuilds, Func<int> children, Func<long> queuedBytes, Func<double> oldestQueued, Func<long> windowBytes)
    {
        var meter = new Meter(MeterName, "1.0");
        meter.CreateObservableGauge("shardstream.peers", peers, "{peer}", "Peers in the overlay (the coordinator only).");
        meter.CreateObservableCounter("shardstream.latency.rebuilds", latencyRebuilds, "{rebuild}", "Rebuilds of the trees by regions carried out to their end (the coordinator only, with --latency-rebuild).");
        meter.CreateObservableGauge("shardstream.children", children, "{link}", "Child links this node sends shards to.");
        meter.CreateObservableGauge("shardstream.queue", queuedBytes, "By", "Bytes queued to all children, not yet written to their sockets.");
        meter.CreateObservableGauge("shardstream.queue.oldest", oldestQueued, "s", "Age of the oldest chunk queued to any child.");
        meter.CreateObservableGauge("shardstream.replay_window", windowBytes, "By", "Bytes held in the replay window.");
        return meter;
    }
}

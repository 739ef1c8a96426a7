using System.Buffers;
using System.Text.Json;
using ShardStream.Nodes;

namespace ShardStream.Cli.Http;

/// <summary>The JSON of <c>/api/overlay</c> and <c>/api/peer</c>, written by hand (no reflection: the AOT build keeps working).</summary>
internal static class OverlayJson
{
    /// <summary>
    /// The overlay's JSON (<c>/api/overlay</c>): the header's figures now, and the plan's part from
    /// <paramref name="plan"/>; its <c>nodes</c> array only when <paramref name="withNodes"/> (the
    /// page's events leave it out while the plan is the one the page has).
    /// </summary>
    public static byte[] Overlay(Coordinator coordinator, PlanJson plan, double rate, bool withNodes)
    {
        var buffer = new ArrayBufferWriter<byte>(512 + (withNodes ? plan.Nodes.Length : 0));
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("role", "coordinator");
            w.WriteNumber("time", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            w.WriteString("stream", coordinator.StreamKey.Address);
            w.WriteNumber("shards", plan.Shards);
            w.WriteString("topology", plan.Topology);
            w.WriteNumber("bytesStreamed", coordinator.BytesStreamed);
            w.WriteNumber("rate", Math.Round(rate, 1));
            w.WriteNumber("viewers", plan.Viewers);
            w.WriteNumber("maxDepth", plan.MaxDepth);
            w.WriteNumber("latencyRebuilds", coordinator.LatencyRebuilds);
            w.WriteStartObject("source");
            w.WriteNumber("budget", plan.SourceBudget);
            w.WriteNumber("used", plan.SourceUsed);
            // Each shard-stream is a K-th of the stream.
            w.WriteNumber("upload", Math.Round(rate * plan.SourceUsed / Math.Max(1, plan.Shards), 1));
            w.WriteNumber("children", coordinator.ChildCount);
            w.WriteEndObject();
            if (withNodes)
            {
                w.WritePropertyName("nodes");
                w.WriteRawValue(plan.Nodes, skipInputValidation: true);
            }
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>The plan's part of the overlay's JSON, serialized once: the <c>nodes</c> array and the figures that follow from it.</summary>
    public static PlanJson Plan(Coordinator coordinator, (long, int) version, long builtAt)
    {
        var snapshot = coordinator.Snapshot();
        var srtts = coordinator.ControlRtts();
        var buffer = new ArrayBufferWriter<byte>(4096 + 160 * snapshot.Nodes.Count);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartArray();
            foreach (var node in snapshot.Nodes)
            {
                w.WriteStartObject();
                w.WriteNumber("id", node.Id);
                w.WriteString("address", node.Address);
                w.WriteNumber("budget", node.Budget);
                w.WriteNumber("used", node.Used);
                w.WriteStartArray("parents");
                foreach (int p in node.Parents) w.WriteNumberValue(p);
                w.WriteEndArray();
                w.WriteStartArray("depths");
                foreach (int d in node.Depths) w.WriteNumberValue(d);
                w.WriteEndArray();
                if (node.Id != 0 && coordinator.ProbeRoundTrip(node.Address) is { } rtt) w.WriteNumber("rttMs", Math.Round(rtt.TotalMilliseconds, 2));
                else w.WriteNull("rttMs");
                // Version 6: the smoothed RTT of the peer's control link, from pings.
                if (node.Id != 0 && srtts.TryGetValue(node.Id, out var srtt)) w.WriteNumber("srttMs", Math.Round(srtt.TotalMilliseconds, 2));
                else w.WriteNull("srttMs");
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        var source = snapshot.Nodes[0];
        return new PlanJson(version, builtAt, buffer.WrittenSpan.ToArray(), snapshot.ShardCount, snapshot.Topology.ToString().ToLowerInvariant(),
            snapshot.Nodes.Count - 1, snapshot.MaxDepth, source.Budget, source.Used);
    }

    public static byte[] Peer(PeerStatus s, double rate)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("role", "peer");
            w.WriteNumber("time", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            w.WriteNumber("id", s.Id);
            w.WriteNumber("shards", s.ShardCount);
            w.WriteNumber("startOffset", s.StartOffset);
            w.WriteNumber("bytesWritten", s.BytesWritten);
            w.WriteNumber("bytesReceived", s.BytesReceived);
            w.WriteNumber("rate", Math.Round(rate, 1));
            w.WriteNumber("newestOffset", s.NewestOffset);
            w.WriteNumber("behindNewestBytes", s.BehindNewest);
            w.WriteNumber("lostBytes", s.LostBytes);
            w.WriteNumber("outputBacklog", s.OutputBacklog);
            w.WriteStartArray("parents");
            foreach (int p in s.Parents) w.WriteNumberValue(p);
            w.WriteEndArray();
            w.WriteStartArray("children");
            foreach (var shard in s.Children)
            {
                w.WriteStartArray();
                foreach (int c in shard) w.WriteNumberValue(c);
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteNumber("windowBytes", s.WindowBytes);
            w.WriteNumber("windowLimit", s.WindowLimit);
            w.WriteNumber("stalledShards", s.StalledShards);
            w.WriteBoolean("complete", s.Complete);
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }
}

/// <summary>
/// The plan's part of the overlay's JSON, built for one <see cref="Coordinator.PlanVersion"/>:
/// <paramref name="Nodes"/> is the serialized <c>nodes</c> array.
/// </summary>
internal sealed record PlanJson((long, int) Version, long BuiltAt, byte[] Nodes, int Shards, string Topology, int Viewers, int MaxDepth, int SourceBudget, int SourceUsed);

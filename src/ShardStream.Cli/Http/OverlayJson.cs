using System.Buffers;
using System.Text.Json;
using ShardStream.Nodes;

namespace ShardStream.Cli.Http;

/// <summary>The JSON of <c>/api/overlay</c> and <c>/api/peer</c>, written by hand (no reflection: the AOT build keeps working).</summary>
internal static class OverlayJson
{
    public static byte[] Overlay(Coordinator coordinator, double rate)
    {
        var snapshot = coordinator.Snapshot();
        var buffer = new ArrayBufferWriter<byte>(4096 + 160 * snapshot.Nodes.Count);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("role", "coordinator");
            w.WriteNumber("time", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            w.WriteString("stream", coordinator.StreamKey.Address);
            w.WriteNumber("shards", snapshot.ShardCount);
            w.WriteString("topology", snapshot.Topology.ToString().ToLowerInvariant());
            w.WriteNumber("bytesStreamed", coordinator.BytesStreamed);
            w.WriteNumber("rate", Math.Round(rate, 1));
            w.WriteNumber("viewers", snapshot.Nodes.Count - 1);
            w.WriteNumber("maxDepth", snapshot.MaxDepth);
            var source = snapshot.Nodes[0];
            w.WriteStartObject("source");
            w.WriteNumber("budget", source.Budget);
            w.WriteNumber("used", source.Used);
            // Each shard-stream is a K-th of the stream.
            w.WriteNumber("upload", Math.Round(rate * source.Used / Math.Max(1, snapshot.ShardCount), 1));
            w.WriteNumber("children", coordinator.ChildCount);
            w.WriteEndObject();
            w.WriteStartArray("nodes");
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
                if (node.Id != 0 && coordinator.ControlRtt(node.Id) is { } srtt) w.WriteNumber("srttMs", Math.Round(srtt.TotalMilliseconds, 2));
                else w.WriteNull("srttMs");
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
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

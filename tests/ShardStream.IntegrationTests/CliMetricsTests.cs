using System.Security.Cryptography;
using System.Text.Json;

namespace ShardStream.IntegrationTests;

/// <summary>
/// <c>--http</c> on the real CLI: <c>/metrics</c> scraped while a stream runs says what happened
/// (joins, leaves, bytes in and out per shard), and <c>/api/overlay</c>, <c>/api/peer</c> agree.
/// </summary>
public sealed class CliMetricsTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task Metrics_scraped_during_a_stream_count_the_joins_leaves_and_bytes_that_happened()
    {
        const int peers = 5, shards = 2;
        var source = new byte[6 * 1024 * 1024];
        new Random(13).NextBytes(source);
        // Written after a sixth peer joined, so that it streams before it leaves.
        var tail = new byte[64 * 1024];
        new Random(14).NextBytes(tail);
        string expected = Convert.ToHexStringLower(SHA256.HashData([.. source, .. tail]));

        await using var coordinator = CliProcess.Start(["coordinator", "-l", "127.0.0.1:0", "-s", shards.ToString(), "--min-peers", peers.ToString(), "--http", "127.0.0.1:0", "--heartbeat-timeout", "10"]);
        string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(60));
        string http = await Prometheus.WaitForHttpAsync(coordinator, TimeSpan.FromSeconds(60));
        // Before anything happened, the counters are there at 0 (not absent until their first event).
        string atStart = await Prometheus.GetAsync(http + "/metrics");
        Assert.Equal(0, Prometheus.Sum(atStart, "shardstream_joins_total"));
        Assert.Equal(0, Prometheus.Sum(atStart, "shardstream_leaves_total", "how=\"failed\""));
        Assert.Equal(0, Prometheus.Sum(atStart, "shardstream_gaps_total"));
        for (int s = 0; s < shards; s++)
            Assert.Equal(0, Prometheus.Sum(atStart, "shardstream_sent_bytes_total", $"shard=\"{s}\""));
        var nodes = new List<CliProcess>();
        try
        {
            for (int i = 0; i < peers; i++) nodes.Add(CliProcess.Start(["peer", "-c", address, "--http", "127.0.0.1:0", "--heartbeat-timeout", "10"]));
            var peerHttp = new List<string>();
            foreach (var p in nodes) peerHttp.Add(await Prometheus.WaitForHttpAsync(p, TimeSpan.FromSeconds(60)));

            // Live: the whole source is written, stdin stays open, so every node is still up to be scraped.
            await coordinator.StandardInput.WriteAsync(source);
            await coordinator.StandardInput.FlushAsync();
            await Prometheus.WaitUntilAsync(async () =>
            {
                var written = new List<long>();
                foreach (var url in peerHttp)
                    written.Add(JsonDocument.Parse(await Prometheus.GetAsync(url + "/api/peer")).RootElement.GetProperty("bytesWritten").GetInt64());
                return (written.All(w => w == source.Length), string.Join(",", written));
            }, Deadline, "every peer writes the whole source");

            // Protocol version 6 and latency-aware placement, on by default: every peer measured the
            // landmarks before it was placed, and every control link has a smoothed RTT from pings.
            foreach (var p in nodes) Assert.Contains("node(s) the coordinator named", p.Stderr);
            await Prometheus.WaitUntilAsync(async () =>
            {
                var o = JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement;
                var srtts = o.GetProperty("nodes").EnumerateArray().Where(n => n.GetProperty("id").GetInt32() != 0).Select(n => n.GetProperty("srttMs")).ToList();
                return (srtts.All(v => v.ValueKind == JsonValueKind.Number && v.GetDouble() > 0), string.Join(",", srtts));
            }, Deadline, "every peer's control link has a smoothed RTT");
            Assert.True(Prometheus.Sum(await Prometheus.GetAsync(http + "/metrics"), "shardstream_link_rtt_seconds_count") > 0);

            string metrics = await Prometheus.GetAsync(http + "/metrics");
            Assert.Equal(peers, Prometheus.Sum(metrics, "shardstream_joins_total"));
            Assert.Equal(peers, Prometheus.Sum(metrics, "shardstream_peers"));
            Assert.Equal(0, Prometheus.Sum(metrics, "shardstream_leaves_total"));
            // Read from the source: every byte once, dealt to the shards.
            Assert.Equal(source.Length, Prometheus.Sum(metrics, "shardstream_received_bytes_total"));
            Assert.True(Prometheus.Sum(metrics, "shardstream_received_bytes_total", "shard=\"0\"") > 0);
            Assert.True(Prometheus.Sum(metrics, "shardstream_received_bytes_total", "shard=\"1\"") > 0);
            // Every placement of every shard is in the depth histogram: peers x shards at least.
            Assert.True(Prometheus.Sum(metrics, "shardstream_placement_depth_count") >= peers * shards, metrics);

            // The coordinator sends each shard whole to each child it feeds that shard (the overlay says which).
            var overlay = JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement;
            Assert.Equal(peers, overlay.GetProperty("viewers").GetInt32());
            Assert.Equal(source.Length, overlay.GetProperty("bytesStreamed").GetInt64());
            for (int s = 0; s < shards; s++)
            {
                int fed = overlay.GetProperty("nodes").EnumerateArray().Count(n => n.GetProperty("id").GetInt32() != 0 && n.GetProperty("parents")[s].GetInt32() == 0);
                double shardBytes = Prometheus.Sum(metrics, "shardstream_received_bytes_total", $"shard=\"{s}\"")!.Value;
                Assert.True(fed > 0, $"no peer gets shard {s} from the coordinator");
                Assert.True(Prometheus.Sum(metrics, "shardstream_sent_bytes_total", $"shard=\"{s}\"") >= shardBytes * fed,
                    $"shard {s}: {shardBytes} bytes to {fed} children, sent {Prometheus.Sum(metrics, "shardstream_sent_bytes_total", $"shard=\"{s}\"")}");
            }

            // Over the whole overlay, every peer received the whole stream from someone: bytes out >= size x peers.
            double sentEverywhere = Prometheus.Sum(metrics, "shardstream_sent_bytes_total")!.Value;
            foreach (var url in peerHttp)
            {
                string peerMetrics = await Prometheus.GetAsync(url + "/metrics");
                Assert.Equal(source.Length, Prometheus.Sum(peerMetrics, "shardstream_received_bytes_total"));
                sentEverywhere += Prometheus.Sum(peerMetrics, "shardstream_sent_bytes_total") ?? 0;
            }
            Assert.True(sentEverywhere >= (double)source.Length * peers, $"{sentEverywhere} bytes sent in the overlay for {peers} peers of {source.Length}");

            // One more viewer (a leaf) joins and, once it is streaming, leaves on purpose: the counters follow.
            await using var extra = CliProcess.Start(["peer", "-c", address, "--upload", "0", "--http", "127.0.0.1:0", "--heartbeat-timeout", "10"]);
            string extraHttp = await Prometheus.WaitForHttpAsync(extra, TimeSpan.FromSeconds(60));
            string m6 = "";
            await Prometheus.WaitUntilAsync(async () =>
            {
                m6 = await Prometheus.GetAsync(http + "/metrics");
                return (Prometheus.Sum(m6, "shardstream_joins_total") == peers + 1 && Prometheus.Sum(m6, "shardstream_peers") == peers + 1, m6);
            }, Deadline, "the sixth join is counted");
            await coordinator.StandardInput.WriteAsync(tail);
            await coordinator.StandardInput.FlushAsync();
            await Prometheus.WaitUntilAsync(async () =>
            {
                long written = JsonDocument.Parse(await Prometheus.GetAsync(extraHttp + "/api/peer")).RootElement.GetProperty("bytesWritten").GetInt64();
                return (written > 0, $"{written} bytes written");
            }, Deadline, "the sixth peer streams");
            await extra.SignalAsync("TERM");
            await extra.WaitForExitAsync(Deadline);
            await Prometheus.WaitUntilAsync(async () =>
            {
                string m = await Prometheus.GetAsync(http + "/metrics");
                return (Prometheus.Sum(m, "shardstream_leaves_total", "how=\"graceful\"") == 1 && Prometheus.Sum(m, "shardstream_peers") == peers, m);
            }, Deadline, "the leave is counted");
            Assert.Equal(0, Prometheus.Sum(await Prometheus.GetAsync(http + "/metrics"), "shardstream_leaves_total", "how=\"failed\""));

            coordinator.StandardInput.Close();
            var (coordinatorExit, _) = await coordinator.WaitForExitAsync(Deadline);
            Assert.True(coordinatorExit == 0, $"coordinator exited with {coordinatorExit}:\n{coordinator.Stderr}");
            foreach (var peer in nodes)
            {
                var (exit, sha) = await peer.WaitForExitAsync(Deadline);
                Assert.True(exit == 0 && sha == expected, $"peer exited with {exit}, sha256 {sha}:\n{peer.Stderr}");
            }
        }
        finally
        {
            foreach (var p in nodes) await p.DisposeAsync();
        }
    }
}

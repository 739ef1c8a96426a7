using System.Security.Cryptography;
using System.Text.Json;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// <c>--http</c> on the real CLI: <c>/metrics</c> scraped while a stream runs says what happened
/// (joins, leaves, moves and placements, bytes in and out per shard, probes, queues, children,
/// and, after a relay is killed and a viewer frozen, stalls, their durations and heartbeat
/// timeouts), and <c>/api/overlay</c>, <c>/api/peer</c> agree.
/// </summary>
[Collection(CliCollection.Name)]
public sealed class CliMetricsTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task An_HTTP_server_on_every_address_logs_that_address_not_loopback()
    {
        // --http [::]:PORT serves every address of the machine, IPv4 ones too: its line must not say
        // 127.0.0.1, which reads as reachable from this machine only (the server has no
        // authentication; docs/metrics.md: "the node logs http listening on http://HOST:PORT").
        // An acceptance run across network namespaces saw "http listening on http://127.0.0.1:8081"
        // for --http [::]:8081 while other hosts scraped it.
        await using var coordinator = CliProcess.Start(["coordinator", "-l", "127.0.0.1:0", "--http", "[::]:0"]);
        string http = await Prometheus.WaitForHttpAsync(coordinator, Deadline);
        output.WriteLine(http);
        Assert.StartsWith("http://[::]:", http, StringComparison.Ordinal);
        await coordinator.WaitUntilAsync(() => coordinator.StderrLines.Any(l => l.Contains("serving the live stream at http://[::]:", StringComparison.Ordinal)), "the live stream's line names [::]", Deadline);
        using var client = new HttpClient();
        string metrics = await client.GetStringAsync($"http://127.0.0.1:{new Uri(http).Port}/metrics");
        Assert.Contains("shardstream", metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Metrics_scraped_during_a_stream_count_the_joins_leaves_and_bytes_that_happened()
    {
        const int peers = 5, shards = 2;
        var source = new byte[6 * 1024 * 1024];
        new Random(13).NextBytes(source);
        // Written after a sixth peer joined, so that it streams before it leaves.
        var tail = new byte[64 * 1024];
        new Random(14).NextBytes(tail);
        // Written once the viewer to freeze has joined: it freezes only after it wrote some of it.
        var beforeFreeze = new byte[64 * 1024];
        new Random(16).NextBytes(beforeFreeze);
        // Written after a relay was killed: several chunks of each shard, which end its children's stalls.
        var afterKill = new byte[512 * 1024];
        new Random(15).NextBytes(afterKill);
        string expected = Convert.ToHexStringLower(SHA256.HashData([.. source, .. tail, .. beforeFreeze, .. afterKill]));

        await using var coordinator = CliProcess.Start(["coordinator", "-l", "127.0.0.1:0", "-s", shards.ToString(), "--min-peers", peers.ToString(), "--http", "127.0.0.1:0", "--heartbeat-timeout", "10"]);
        string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(60));
        string http = await Prometheus.WaitForHttpAsync(coordinator, TimeSpan.FromSeconds(60));
        // Before anything happened, the counters are there at 0 (not absent until their first event).
        string atStart = await Prometheus.GetAsync(http + "/metrics");
        // The exporter's target_info names the service (not "unknown_service:" and the process name).
        Assert.Equal(1, Prometheus.Sum(atStart, "target_info", "service_name=\"shardstream\""));
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
            // A first, one-off read of /api/overlay gives the source's rate (on a first read, the
            // mean since the coordinator started): it once said 0 there.
            double firstRate = JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement.GetProperty("rate").GetDouble();
            Assert.True(firstRate > 0, $"/api/overlay's rate on a first read: {firstRate}");

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
            // Under 1,000 peers the default rebuild plans nothing: the count of rebuilds by regions is exported, at 0.
            Assert.Equal(0, Prometheus.Sum(metrics, "shardstream_latency_rebuilds_total"));
            // Read from the source: every byte once, dealt to the shards.
            Assert.Equal(source.Length, Prometheus.Sum(metrics, "shardstream_received_bytes_total"));
            Assert.True(Prometheus.Sum(metrics, "shardstream_received_bytes_total", "shard=\"0\"") > 0);
            Assert.True(Prometheus.Sum(metrics, "shardstream_received_bytes_total", "shard=\"1\"") > 0);
            // Every placement of a shard is in its depth histogram: one per join, one per move.
            // (One scrape is compared with itself; a move between two instruments' reads is retried.)
            await Prometheus.WaitUntilAsync(async () =>
            {
                string m = await Prometheus.GetAsync(http + "/metrics");
                var counts = Enumerable.Range(0, shards).Select(s => (Depth: Prometheus.Sum(m, "shardstream_placement_depth_count", $"shard=\"{s}\""),
                    Placed: Prometheus.Sum(m, "shardstream_joins_total") + Prometheus.Sum(m, "shardstream_moves_total", $"shard=\"{s}\""))).ToList();
                return (counts.All(c => c.Depth == c.Placed), string.Join("; ", counts.Select(c => $"{c.Depth} placements, {c.Placed} joins + moves")));
            }, Deadline, "a depth observation per join and move of each shard");

            // The coordinator sends each shard whole to each child it feeds that shard (the overlay says which).
            var overlay = JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement;
            Assert.Equal(peers, overlay.GetProperty("viewers").GetInt32());
            Assert.Equal(0, overlay.GetProperty("latencyRebuilds").GetInt32());
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
            // No peer skipped a range.
            double sentEverywhere = Prometheus.Sum(metrics, "shardstream_sent_bytes_total")!.Value;
            foreach (var url in peerHttp)
            {
                string peerMetrics = await Prometheus.GetAsync(url + "/metrics");
                Assert.Equal(source.Length, Prometheus.Sum(peerMetrics, "shardstream_received_bytes_total"));
                sentEverywhere += Prometheus.Sum(peerMetrics, "shardstream_sent_bytes_total") ?? 0;
                Assert.Equal(0, Prometheus.Sum(peerMetrics, "shardstream_gaps_total"));
                Assert.Equal(0, Prometheus.Sum(peerMetrics, "shardstream_lost_bytes_total"));
            }
            Assert.True(sentEverywhere >= (double)source.Length * peers, $"{sentEverywhere} bytes sent in the overlay for {peers} peers of {source.Length}");

            // Upload was plenty: nobody was evicted. Each joiner with upload was probed once; a
            // probe answered late is logged (and the joiner taken as reachable), not timed.
            Assert.Equal(0, Prometheus.Sum(metrics, "shardstream_evictions_total"));
            int lateProbes = coordinator.StderrLines.Count(l => l.Contains("did not answer its hello", StringComparison.Ordinal));
            Assert.Equal(peers - lateProbes, Prometheus.Sum(metrics, "shardstream_probe_rtt_seconds_count"));

            // Child links and queues: the coordinator serves as many children as the plan gives it,
            // the peers together as many as the plan's peer-to-peer parent-child pairs, and once every
            // byte is written nothing is left queued anywhere (bytes and age of the oldest chunk).
            await Prometheus.WaitUntilAsync(async () =>
            {
                var plan = JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement.GetProperty("nodes").EnumerateArray()
                    .Where(n => n.GetProperty("id").GetInt32() != 0)
                    .SelectMany(n => n.GetProperty("parents").EnumerateArray().Select(p => (Parent: p.GetInt32(), Child: n.GetProperty("id").GetInt32())))
                    .Where(e => e.Parent >= 0).Distinct().ToList();
                var scrapes = new List<string> { await Prometheus.GetAsync(http + "/metrics") };
                foreach (var url in peerHttp) scrapes.Add(await Prometheus.GetAsync(url + "/metrics"));
                double fromSource = Prometheus.Sum(scrapes[0], "shardstream_children")!.Value;
                double fromPeers = scrapes.Skip(1).Sum(m => Prometheus.Sum(m, "shardstream_children")!.Value);
                double queued = scrapes.Sum(m => Prometheus.Sum(m, "shardstream_queue_bytes")!.Value);
                double oldest = scrapes.Max(m => Prometheus.Sum(m, "shardstream_queue_oldest_seconds")!.Value);
                int planSource = plan.Count(e => e.Parent == 0), planPeers = plan.Count(e => e.Parent != 0);
                return (fromSource == planSource && fromPeers == planPeers && queued == 0 && oldest == 0,
                    $"children {fromSource} (plan {planSource}) and {fromPeers} (plan {planPeers}), {queued} bytes queued, oldest {oldest} s");
            }, Deadline, "child links as planned and empty queues");

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

            // A relay dies (SIGKILL) and a viewer freezes (SIGSTOP), at once. The relay's children
            // see its links close: each shard it fed them stalls until a chunk comes from the new
            // parent the coordinator moves it to. The frozen viewer's links stay open and silent:
            // only heartbeat timeouts take it out.
            await using var frozen = CliProcess.Start(["peer", "-c", address, "--upload", "0", "--heartbeat-timeout", "10"]);
            await Prometheus.WaitUntilAsync(async () =>
            {
                string m = await Prometheus.GetAsync(http + "/metrics");
                return (Prometheus.Sum(m, "shardstream_joins_total") == peers + 2 && Prometheus.Sum(m, "shardstream_peers") == peers + 1, m);
            }, Deadline, "the frozen viewer's join is counted");
            // It freezes while it streams: once it wrote bytes, it has attached and told the
            // coordinator so. A joiner frozen before the coordinator heard anything from it may
            // just be slow to read its welcome: only the longest silence (4 heartbeat timeouts,
            // 41 s) ends that link, and this test used to wait that out when it froze that early.
            await coordinator.StandardInput.WriteAsync(beforeFreeze);
            await coordinator.StandardInput.FlushAsync();
            await Prometheus.WaitUntilAsync(() => Task.FromResult((frozen.StdoutBytes > 0, $"{frozen.StdoutBytes} bytes written")), Deadline, "the viewer to freeze streams");
            var ids = new List<int>();
            foreach (var url in peerHttp) ids.Add(JsonDocument.Parse(await Prometheus.GetAsync(url + "/api/peer")).RootElement.GetProperty("id").GetInt32());
            // The victim: a peer that feeds another of the first five (the frozen viewer has no upload, so
            // it is never a parent: the survivors' stalls end with chunks from running parents).
            var relays = JsonDocument.Parse(await Prometheus.GetAsync(http + "/api/overlay")).RootElement.GetProperty("nodes").EnumerateArray()
                .Where(n => ids.Contains(n.GetProperty("id").GetInt32()))
                .SelectMany(n => n.GetProperty("parents").EnumerateArray().Select(p => p.GetInt32())).Where(p => p > 0).ToHashSet();
            int victim = ids.FindIndex(relays.Contains);
            Assert.True(victim >= 0, $"no peer relays to another (relays {string.Join(",", relays)}, peers {string.Join(",", ids)})");
            var survivors = Enumerable.Range(0, peers).Where(i => i != victim).ToList();
            // Heartbeat timeouts happen where the frozen viewer's links end: at the coordinator (its
            // control link) or at a parent of it, the coordinator or a survivor.
            async Task<double> HeartbeatTimeoutsAsync()
            {
                double sum = Prometheus.Sum(await Prometheus.GetAsync(http + "/metrics"), "shardstream_heartbeat_timeouts_total")!.Value;
                foreach (int i in survivors) sum += Prometheus.Sum(await Prometheus.GetAsync(peerHttp[i] + "/metrics"), "shardstream_heartbeat_timeouts_total")!.Value;
                return sum;
            }
            double timeoutsBefore = await HeartbeatTimeoutsAsync();
            nodes[victim].Kill();
            await nodes[victim].WaitForExitAsync(Deadline);
            await frozen.SignalAsync("STOP");
            await coordinator.StandardInput.WriteAsync(afterKill);
            await coordinator.StandardInput.FlushAsync();
            await Prometheus.WaitUntilAsync(async () =>
            {
                string m = await Prometheus.GetAsync(http + "/metrics");
                double timeouts = await HeartbeatTimeoutsAsync();
                return (Prometheus.Sum(m, "shardstream_leaves_total", "how=\"failed\"") == 2 && Prometheus.Sum(m, "shardstream_peers") == peers - 1 && timeouts > timeoutsBefore,
                    $"{timeouts} heartbeat timeouts ({timeoutsBefore} before)\n{m}");
            }, Deadline, "the killed relay and the frozen viewer counted as failed leaves, and the frozen one's silence as heartbeat timeouts");
            output.WriteLine($"heartbeat timeouts: {await HeartbeatTimeoutsAsync()} ({timeoutsBefore} before)");
            // The overlay had upload to spare (the survivors' budgets and the source's, 15
            // shard-streams, for the 10 the survivors and the frozen viewer take): nobody is evicted
            // to repair it. A relay's death used to evict two healthy peers ("no upload capacity is
            // left") when one shard's tree ran out while the same nodes had room in the other;
            // they joined again as new peers, and a child of one stalled after the last byte.
            Assert.True(Prometheus.Sum(await Prometheus.GetAsync(http + "/metrics"), "shardstream_evictions_total") == 0,
                string.Join("\n", coordinator.StderrLines.Where(l => l.Contains("evicted", StringComparison.Ordinal))));
            long total = source.Length + tail.Length + beforeFreeze.Length + afterKill.Length;
            await Prometheus.WaitUntilAsync(async () =>
            {
                var written = new List<long>();
                foreach (int i in survivors)
                    written.Add(JsonDocument.Parse(await Prometheus.GetAsync(peerHttp[i] + "/api/peer")).RootElement.GetProperty("bytesWritten").GetInt64());
                return (written.All(w => w == total), string.Join(",", written));
            }, Deadline, "every other peer writes the stream on");
            // Each shard a survivor reports lost with the relay stalled once (more, if it also lost
            // it elsewhere), and every stall ended: a duration for each.
            var lostLine = new System.Text.RegularExpressions.Regex($@"lost parent {ids[victim]} for shard\(s\) ([0-9,]+)");
            foreach (int i in survivors)
            {
                var reported = nodes[i].StderrLines.Select(l => lostLine.Match(l)).Where(m => m.Success)
                    .SelectMany(m => m.Groups[1].Value.Split(',')).ToList();
                string m = await Prometheus.GetAsync(peerHttp[i] + "/metrics");
                for (int s = 0; s < shards; s++)
                {
                    double stalls = Prometheus.Sum(m, "shardstream_stalls_total", $"shard=\"{s}\"")!.Value;
                    double ended = Prometheus.Sum(m, "shardstream_stall_duration_seconds_count", $"shard=\"{s}\"") ?? 0;
                    int lost = reported.Count(x => x == s.ToString());
                    Assert.True(stalls >= lost && ended == stalls, $"peer {ids[i]} shard {s}: {stalls} stalls, {ended} ended, lost with the relay {lost} time(s)");
                    if (stalls > 0) output.WriteLine($"peer {ids[i]} shard {s}: {stalls} stall(s), lost with relay {ids[victim]} {lost} time(s), {Prometheus.Sum(m, "shardstream_stall_duration_seconds_sum", $"shard=\"{s}\"")} s stalled");
                }
                Assert.Equal(0, Prometheus.Sum(m, "shardstream_lost_bytes_total"));
            }
            await nodes[victim].DisposeAsync();
            nodes.RemoveAt(victim);

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

using System.Diagnostics;
using System.Globalization;
using System.Runtime;
using System.Runtime.InteropServices;

namespace ShardStream.Bench.Relay;

/// <summary>
/// The end-to-end harness: for each topology, ShardStream and the plain-TCP baseline of the same
/// shape, in the same run, first pushing a bulk source as fast as it goes (throughput at the
/// slowest peer), then a paced 10 Mbit/s stream of timestamped records (latency per hop).
/// Everything runs in this process on loopback.
/// </summary>
internal sealed class RelayBenchmark
{
    private const int BulkBlock = 64 * 1024;
    private readonly int _peers = 8;
    private readonly long _bulkBytes = 256L << 20;
    private readonly int _repeats = 3;
    private readonly TimeSpan _latencyDuration = TimeSpan.FromSeconds(10);
    private readonly TimeSpan _recordInterval = TimeSpan.FromMilliseconds(1);
    private readonly int[] _shardCounts = [1, 2];
    private readonly List<string> _throughputRows = [];
    private readonly List<string> _latencyRows = [];
    private readonly List<(string Topology, string Relay, LatencyResult Result, int MaxDepth)> _depthRows = [];
    private long? _windowBytes;

    private RelayBenchmark(string[] args)
    {
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--peers": _peers = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--mib": _bulkBytes = long.Parse(Next(), CultureInfo.InvariantCulture) << 20; break;
                case "--repeats": _repeats = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--seconds": _latencyDuration = TimeSpan.FromSeconds(double.Parse(Next(), CultureInfo.InvariantCulture)); break;
                case "--window-mib": _windowBytes = long.Parse(Next(), CultureInfo.InvariantCulture) << 20; break;
                case "--shards": _shardCounts = Next().Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray(); break;
                default: throw new ArgumentException($"unknown option {args[i]} (relay takes --peers N --mib N --repeats N --seconds S --shards 1,2)");
            }
        }
    }

    public static async Task<int> RunAsync(string[] args)
    {
        var bench = new RelayBenchmark(args);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(10));
        await bench.RunAsync(cts.Token);
        return 0;
    }

    private async Task RunAsync(CancellationToken ct)
    {
        var total = Stopwatch.StartNew();
        Console.WriteLine($"ShardStream relay benchmark: {_peers} peers, in one process, loopback TCP");
        Console.WriteLine($"machine: {Environment.ProcessorCount} logical cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}, " +
                          $"{(GCSettings.IsServerGC ? "server" : "workstation")} GC{(GCSettings.LatencyMode == GCLatencyMode.Interactive ? " (concurrent)" : "")}");
        Console.WriteLine($"throughput: {_bulkBytes >> 20} MiB pushed as fast as it goes, {_repeats} run(s) each; latency: {PacedRecordSource.RecordSize}-byte records every {_recordInterval.TotalMilliseconds} ms " +
                          $"({PacedRecordSource.RecordSize * 8 / _recordInterval.TotalMilliseconds / 1000:0.#} Mbit/s) for {_latencyDuration.TotalSeconds} s");
        if (_windowBytes is { } w) Console.WriteLine($"ShardStream replay window set to {w >> 20} MiB per node (diagnostic; the default is 64 MiB)");
        Console.WriteLine();

        foreach (int k in _shardCounts)
        {
            string topology = k == 1 ? "binary K=1" : "tessellated K=2";
            // Warm-up (JIT, pools, sockets); its placement is the shape the baseline copies.
            var (shape, _) = await ShardStreamBulkAsync(k, 16L << 20, ct);
            await BaselineBulkAsync(shape, 16L << 20, ct);
            Console.WriteLine($"{topology}: max depth {shape.MaxDepth}");
            Console.WriteLine(shape.Describe());

            var ours = new List<BulkResult>();
            var theirs = new List<BulkResult>();
            for (int r = 0; r < _repeats; r++)
            {
                // Alternate which goes first, so that neither always runs on a warmer (or more fragmented) process.
                if (r % 2 == 0) theirs.Add(await BaselineBulkAsync(shape, _bulkBytes, ct));
                var (s, result) = await ShardStreamBulkAsync(k, _bulkBytes, ct);
                if (!s.SameEdges(shape)) throw new InvalidOperationException("the placement changed between runs");
                ours.Add(result);
                if (r % 2 == 1) theirs.Add(await BaselineBulkAsync(shape, _bulkBytes, ct));
                Console.WriteLine($"  run {r + 1}: ShardStream {result.SlowestMBps:0.0} MB/s, baseline {theirs[^1].SlowestMBps:0.0} MB/s (slowest peer)");
            }
            double oursMedian = Stats.Median(ours.Select(x => x.SlowestMBps).ToList());
            double theirsMedian = Stats.Median(theirs.Select(x => x.SlowestMBps).ToList());
            _throughputRows.Add(ThroughputRow(topology, "baseline", theirs, theirsMedian, "1.00"));
            _throughputRows.Add(ThroughputRow(topology, "ShardStream", ours, oursMedian, (oursMedian / theirsMedian).ToString("0.00", CultureInfo.InvariantCulture)));

            int records = (int)(_latencyDuration / _recordInterval);
            await BaselineLatencyAsync(shape, records / 10, ct); // warm-up of the paced path
            await ShardStreamLatencyAsync(k, records / 10, ct);
            var baseLatency = await BaselineLatencyAsync(shape, records, ct);
            var (s2, ourLatency) = await ShardStreamLatencyAsync(k, records, ct);
            if (!s2.SameEdges(shape)) throw new InvalidOperationException("the placement changed between runs");
            Console.WriteLine($"  latency: ShardStream median {ourLatency.PerHopMedian:0.000} ms/hop, baseline {baseLatency.PerHopMedian:0.000} ms/hop");
            Console.WriteLine();
            _latencyRows.Add(LatencyRow(topology, "baseline", baseLatency));
            _latencyRows.Add(LatencyRow(topology, "ShardStream", ourLatency));
            _depthRows.Add((topology, "baseline", baseLatency, shape.MaxDepth));
            _depthRows.Add((topology, "ShardStream", ourLatency, shape.MaxDepth));
        }

        Console.WriteLine("Throughput (MB/s = 10^6 bytes/s at the slowest peer, median of the runs [min..max]; CPU and GC per run, averaged; allocation per 64 KiB chunk per peer):");
        Console.WriteLine();
        Console.WriteLine("| topology | relay | slowest peer MB/s | ratio | CPU s | GC count (gen0/1/2) | GC pause ms | allocated / chunk / peer |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|");
        foreach (var row in _throughputRows) Console.WriteLine(row);
        Console.WriteLine();
        Console.WriteLine("Latency per hop (each record's in-order delivery latency at each peer divided by that peer's depth in the record's shard; first 10% of records skipped):");
        Console.WriteLine();
        Console.WriteLine("| topology | relay | median ms/hop | p99 ms/hop | median ms, end to end | p99 ms, end to end | source rate Mbit/s | CPU s |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|");
        foreach (var row in _latencyRows) Console.WriteLine(row);
        Console.WriteLine();
        Console.WriteLine("Latency by depth (median / p99 ms from the source write to the peer's output, records of shards at that depth):");
        Console.WriteLine();
        Console.WriteLine("| topology | relay | " + string.Join(" | ", Enumerable.Range(1, MaxDepthSeen).Select(d => $"depth {d}")) + " | added per hop (median d − median d−1) |");
        Console.WriteLine("|---|---|" + string.Concat(Enumerable.Repeat("---:|", MaxDepthSeen)) + "---|");
        foreach (var row in _depthRows) Console.WriteLine(DepthRow(row.Topology, row.Relay, row.Result, row.MaxDepth));
        Console.WriteLine();
        Console.WriteLine($"total {total.Elapsed.TotalSeconds:0} s");
    }

    private int MaxDepthSeen { get; set; } = 1;

    private sealed record BulkResult(double SlowestMBps, double FastestMBps, Usage Usage, long Bytes);

    private sealed record LatencyResult(double PerHopMedian, double PerHopP99, double EndToEndMedian, double EndToEndP99, double SourceMbps, Usage Usage, SortedDictionary<int, List<double>> ByDepth);

    private async Task<(Shape, BulkResult)> ShardStreamBulkAsync(int k, long bytes, CancellationToken ct)
    {
        var source = new BulkSource(bytes);
        var probes = Enumerable.Range(0, _peers).Select(_ => new ByteCountProbe(bytes, 1, BulkBlock)).ToArray();
        var (shape, usage) = await ShardStreamOverlay.RunAsync(k, _peers, _windowBytes, source, probes, ct);
        return (shape, Summarize(source.FirstReadTicks, probes, usage, bytes));
    }

    private async Task<BulkResult> BaselineBulkAsync(Shape shape, long bytes, CancellationToken ct)
    {
        var source = new BulkSource(bytes);
        var probes = Enumerable.Range(0, _peers).Select(_ => new ByteCountProbe(bytes, shape.ShardCount, BulkBlock)).ToArray();
        var usage = await BaselineOverlay.RunAsync(shape, source, BulkBlock, probes, ct);
        return Summarize(source.FirstReadTicks, probes, usage, bytes);
    }

    private static BulkResult Summarize(long start, ByteCountProbe[] probes, Usage usage, long bytes)
    {
        foreach (var p in probes)
        {
            if (p.Error is not null) throw new InvalidOperationException(p.Error);
            if (p.Received != bytes) throw new InvalidOperationException($"a peer received {p.Received} of {bytes} bytes");
        }
        var rates = probes.Select(p => bytes / 1e6 / Stats.Seconds(start, p.CompletedTicks)).ToList();
        return new BulkResult(rates.Min(), rates.Max(), usage, bytes);
    }

    private async Task<(Shape, LatencyResult)> ShardStreamLatencyAsync(int k, int records, CancellationToken ct)
    {
        var source = new PacedRecordSource(records, _recordInterval);
        var probes = Enumerable.Range(0, _peers).Select(_ => new RecordProbe(records, 1)).ToArray();
        var (shape, usage) = await ShardStreamOverlay.RunAsync(k, _peers, _windowBytes, source, probes, ct);
        return (shape, Summarize(shape, source, probes, usage));
    }

    private async Task<LatencyResult> BaselineLatencyAsync(Shape shape, int records, CancellationToken ct)
    {
        var source = new PacedRecordSource(records, _recordInterval);
        var probes = Enumerable.Range(0, _peers).Select(_ => new RecordProbe(records, shape.ShardCount)).ToArray();
        var usage = await BaselineOverlay.RunAsync(shape, source, PacedRecordSource.RecordSize, probes, ct);
        return Summarize(shape, source, probes, usage);
    }

    private LatencyResult Summarize(Shape shape, PacedRecordSource source, RecordProbe[] probes, Usage usage)
    {
        var perHop = new List<double>();
        var endToEnd = new List<double>();
        var byDepth = new SortedDictionary<int, List<double>>();
        for (int p = 0; p < probes.Length; p++)
        {
            if (probes[p].Error is not null) throw new InvalidOperationException(probes[p].Error);
            var latencies = probes[p].InOrderLatencies();
            for (int i = latencies.Length / 10; i < latencies.Length; i++)
            {
                // Record i is chunk i (the source hands out one record per read), dealt to shard i % K.
                int depth = shape.Depths[p][i % shape.ShardCount];
                double ms = Stats.TicksToMs(latencies[i]);
                perHop.Add(ms / depth);
                endToEnd.Add(ms);
                if (!byDepth.TryGetValue(depth, out var list)) byDepth[depth] = list = [];
                list.Add(ms);
            }
        }
        MaxDepthSeen = Math.Max(MaxDepthSeen, byDepth.Keys.Max());
        double mbps = source.Length * 8 / 1e6 / Stats.Seconds(source.FirstReadTicks, source.LastReadTicks);
        return new LatencyResult(Stats.Median(perHop), Stats.Percentile(perHop, 99), Stats.Median(endToEnd), Stats.Percentile(endToEnd, 99), mbps, usage, byDepth);
    }

    private string ThroughputRow(string topology, string relay, List<BulkResult> runs, double median, string ratio)
    {
        double cpu = runs.Average(r => r.Usage.Cpu.TotalSeconds);
        string gc = $"{runs.Average(r => r.Usage.Gen0):0}/{runs.Average(r => r.Usage.Gen1):0}/{runs.Average(r => r.Usage.Gen2):0}";
        double chunks = runs[0].Bytes / (double)BulkBlock * _peers;
        double perChunk = runs.Average(r => r.Usage.AllocatedBytes) / chunks;
        return string.Create(CultureInfo.InvariantCulture,
            $"| {topology} | {relay} | {median:0.0} [{runs.Min(r => r.SlowestMBps):0.0}..{runs.Max(r => r.SlowestMBps):0.0}] | {ratio} | {cpu:0.00} | {gc} | {runs.Average(r => r.Usage.GcPause.TotalMilliseconds):0} | {perChunk:0} B |");
    }

    private static string LatencyRow(string topology, string relay, LatencyResult r) => string.Create(CultureInfo.InvariantCulture,
        $"| {topology} | {relay} | {r.PerHopMedian:0.000} | {r.PerHopP99:0.000} | {r.EndToEndMedian:0.000} | {r.EndToEndP99:0.000} | {r.SourceMbps:0.00} | {r.Usage.Cpu.TotalSeconds:0.0} |");

    private string DepthRow(string topology, string relay, LatencyResult r, int maxDepth)
    {
        var cells = Enumerable.Range(1, MaxDepthSeen).Select(d => r.ByDepth.TryGetValue(d, out var list)
            ? string.Create(CultureInfo.InvariantCulture, $"{Stats.Median(list):0.000} / {Stats.Percentile(list, 99):0.000}") : "–");
        var medians = r.ByDepth.ToDictionary(kv => kv.Key, kv => Stats.Median(kv.Value));
        var added = Enumerable.Range(2, Math.Max(0, maxDepth - 1)).Where(d => medians.ContainsKey(d) && medians.ContainsKey(d - 1))
            .Select(d => string.Create(CultureInfo.InvariantCulture, $"{d - 1}→{d}: {medians[d] - medians[d - 1]:+0.000;-0.000}"));
        return $"| {topology} | {relay} | {string.Join(" | ", cells)} | {string.Join(", ", added)} |";
    }
}

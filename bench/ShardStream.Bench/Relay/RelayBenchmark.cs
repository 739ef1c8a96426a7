using System.Diagnostics;
using System.Globalization;
using System.Runtime;
using System.Runtime.InteropServices;

namespace ShardStream.Bench.Relay;

/// <summary>
/// The end-to-end harness: for each topology, ShardStream and the plain-TCP baseline of the same
/// shape, in the same run, first pushing a bulk source as fast as it goes (throughput at the
/// slowest peer; the source is held back when it runs too far ahead of that peer), then a paced
/// 10 Mbit/s stream of timestamped records (latency per hop). Everything runs in this process on
/// loopback; docs/performance.md explains the method and reads the results.
/// </summary>
internal sealed class RelayBenchmark
{
    private const int BulkBlock = 64 * 1024;

    /// <summary>How far the bulk source may run ahead of the slowest peer (see <see cref="BulkSource"/>).</summary>
    private const long MaxLead = 16L << 20;
    private readonly int _peers = 8;
    private readonly long _bulkBytes = 256L << 20;
    private readonly int _repeats = 5;
    private readonly TimeSpan _latencyDuration = TimeSpan.FromSeconds(10);
    private readonly TimeSpan _recordInterval = TimeSpan.FromMilliseconds(1);
    private readonly int[] _shardCounts = [1, 2];
    private readonly List<string> _throughputRows = [];
    private readonly List<string> _latencyRows = [];
    private readonly List<(string Topology, string Relay, LatencyResult Result, int MaxDepth)> _depthRows = [];
    private readonly List<string> _costRows = [];
    private readonly List<string> _holdRows = [];
    private long? _windowBytes;
    private string? _only;
    private TimeSpan? _windowAge;
    private TimeSpan? _signingInterval;
    private bool _mergeReads;

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
                case "--only": _only = Next(); break;
                case "--window-age-s": _windowAge = TimeSpan.FromSeconds(double.Parse(Next(), CultureInfo.InvariantCulture)); break;
                case "--signing-interval-ms": _signingInterval = TimeSpan.FromMilliseconds(double.Parse(Next(), CultureInfo.InvariantCulture)); break;
                case "--merge-reads": _mergeReads = true; break;
                case "--window-mib": _windowBytes = long.Parse(Next(), CultureInfo.InvariantCulture) << 20; break;
                case "--shards": _shardCounts = Next().Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray(); break;
                default: throw new ArgumentException($"unknown option {args[i]} (relay takes --peers N --mib N --repeats N --seconds S --shards 1,2 --only shardstream|baseline --window-mib N --window-age-s S --signing-interval-ms M --merge-reads)");
            }
        }
    }

    public static async Task<int> RunAsync(string[] args)
    {
        var bench = new RelayBenchmark(args);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(10));
        if (bench._only is not null) await bench.ProfileAsync(cts.Token);
        else await bench.RunAsync(cts.Token);
        return 0;
    }

    private async Task RunAsync(CancellationToken ct)
    {
        var total = Stopwatch.StartNew();
        Console.WriteLine($"ShardStream relay benchmark: {_peers} peers, in one process, loopback TCP");
        Console.WriteLine($"machine: {Environment.ProcessorCount} logical cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}, " +
                          $"{(GCSettings.IsServerGC ? "server" : "workstation")} GC{(GCSettings.LatencyMode == GCLatencyMode.Interactive ? " (concurrent)" : "")}");
        Console.WriteLine($"throughput: {(_repeats > 0 ? $"{_bulkBytes >> 20} MiB pushed as fast as it goes, {_repeats} run(s) each" : "not measured (--repeats 0)")}; latency: {PacedRecordSource.RecordSize}-byte records every {_recordInterval.TotalMilliseconds} ms " +
                          $"({PacedRecordSource.RecordSize * 8 / _recordInterval.TotalMilliseconds / 1000:0.#} Mbit/s) for {_latencyDuration.TotalSeconds} s");
        Console.WriteLine($"load average at the start: {LoadAverage()}");
        if (_signingInterval is { } si) Console.WriteLine($"ShardStream coordinator's minimum signing interval set to {si.TotalMilliseconds} ms (the default is {new ShardStream.Nodes.CoordinatorOptions().MinSigningInterval.TotalMilliseconds} ms)");
        if (_mergeReads) Console.WriteLine("ShardStream coordinator merges a short read into the chunk before it while that one waits for its signature (MergeShortReads); per hop and by depth assume record i is chunk i, which then holds only for K = 1");
        if (_windowAge is { } a) Console.WriteLine($"ShardStream replay window age set to {a.TotalSeconds} s (diagnostic; the default is 30 s)");
        if (_windowBytes is { } w) Console.WriteLine($"ShardStream replay window set to {w >> 20} MiB per node (diagnostic; the default is 64 MiB)");
        Console.WriteLine();

        foreach (int k in _shardCounts)
        {
            string topology = k == 1 ? "binary K=1" : "tessellated K=2";
            // Warm-up (JIT, pools, sockets); its placement is the shape the baseline copies.
            var (shape, _) = await ShardStreamBulkAsync(k, 16L << 20, _windowBytes, ct);
            await BaselineBulkAsync(shape, 16L << 20, ct);
            Console.WriteLine($"{topology}: max depth {shape.MaxDepth}");
            Console.WriteLine(shape.Describe());

            // Each repeat runs every relay once, rotating the order, so that none always runs first
            // (on a cooler machine) or last (on a more fragmented heap).
            var relays = new List<(string Name, Func<Task<BulkResult>> Run)>
            {
                ("baseline", () => BaselineBulkAsync(shape, _bulkBytes, ct)),
                (_windowBytes is null ? "ShardStream" : $"ShardStream, {_windowBytes >> 20} MiB replay window", () => ShardStreamBulkAsync(k, _bulkBytes, _windowBytes, shape, ct)),
            };
            if (_windowBytes is null && SmallWindow is { } small)
                relays.Add(($"ShardStream, {small >> 20} MiB replay window (diagnostic)", () => ShardStreamBulkAsync(k, _bulkBytes, small, shape, ct)));
            var results = relays.Select(_ => new List<BulkResult>()).ToArray();
            for (int r = 0; r < _repeats; r++)
            {
                for (int j = 0; j < relays.Count; j++)
                {
                    int x = (j + r) % relays.Count;
                    results[x].Add(await relays[x].Run());
                }
                Console.WriteLine($"  run {r + 1}: " + string.Join(", ", relays.Select((x, i) => $"{x.Name} {results[i][^1].SlowestMBps:0.0} MB/s")) + $" (slowest peer; load average {LoadAverage()})");
            }
            if (_repeats > 0) // --repeats 0: latency only
            {
                double baseMedian = Stats.Median(results[0].Select(x => x.SlowestMBps).ToList());
                double baseCpu = Stats.Median(results[0].Select(CpuPerChunk).ToList());
                for (int i = 0; i < relays.Count; i++)
                {
                    double median = Stats.Median(results[i].Select(x => x.SlowestMBps).ToList());
                    _throughputRows.Add(ThroughputRow(topology, relays[i].Name, results[i], median, (median / baseMedian).ToString("0.00", CultureInfo.InvariantCulture)));
                    _costRows.Add(CostRow(topology, relays[i].Name, results[i], baseCpu));
                }
            }

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
            if (ourLatency.Hold is { } hold)
                _holdRows.Add(string.Create(CultureInfo.InvariantCulture,
                    $"| {topology} | {hold.Percentile(50):0.00} | {hold.Percentile(99):0.00} | {hold.ListsSigned} ({hold.ListsSigned / _latencyDuration.TotalSeconds:0}/s) | {records / (double)Math.Max(1, hold.ListsSigned):0.0} | {hold.Chunks} | {hold.WireOverhead(records * (long)PacedRecordSource.RecordSize):P2} | {Stats.Median(ourLatency.ByDepth.Values.First()) - hold.Percentile(50):0.000} |"));
        }

        if (_repeats > 0) // --repeats 0 ran no throughput run: no empty tables
        {
            Console.WriteLine($"Throughput (MB/s = 10^6 bytes/s at the slowest peer, median of the runs [min..max]; the source stays at most {MaxLead >> 20} MiB ahead of the slowest peer):");
            Console.WriteLine();
            Console.WriteLine("| topology | relay | slowest peer MB/s | ratio |");
            Console.WriteLine("|---|---|---:|---:|");
            foreach (var row in _throughputRows) Console.WriteLine(row);
            Console.WriteLine();
            Console.WriteLine("Where the time goes in the throughput runs (per run, averaged; per chunk = per 64 KiB chunk received by a peer; the median run's CPU per chunk, and the baseline's over it, the ratio a CPU-bound run tends to, are less stretched by a busy machine and, from 3 runs, leave out the first run's JIT; on a busy machine the runtime's background JIT goes on for many runs, and its own column says how much of the median run it was):");
            Console.WriteLine();
            Console.WriteLine(CostHeader);
            foreach (var row in _costRows) Console.WriteLine(row);
            Console.WriteLine();
        }
        Console.WriteLine("Latency per hop (each record's in-order delivery latency at each peer divided by that peer's depth in the record's shard; first 10% of records skipped):");
        Console.WriteLine();
        Console.WriteLine("| topology | relay | median ms/hop | p99 ms/hop | median ms, end to end | p99 ms, end to end | source rate Mbit/s | CPU s | allocated MB | GC count (gen0/1/2) | GC pause ms | working set after, MB |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var row in _latencyRows) Console.WriteLine(row);
        Console.WriteLine();
        Console.WriteLine("Latency by depth (median / p99 ms from the source write to the peer's output, records of shards at that depth):");
        Console.WriteLine();
        Console.WriteLine("| topology | relay | " + string.Join(" | ", Enumerable.Range(1, MaxDepthSeen).Select(d => $"depth {d}")) + " | added per hop (median d − median d−1) |");
        Console.WriteLine("|---|---|" + string.Concat(Enumerable.Repeat("---:|", MaxDepthSeen)) + "---|");
        foreach (var row in _depthRows) Console.WriteLine(DepthRow(row.Topology, row.Relay, row.Result, row.MaxDepth));
        Console.WriteLine();
        Console.WriteLine("Source hold (ShardStream: how long the coordinator held a record until its hash list was signed, to 0.05 ms; the first hop is the depth-1 median less the median hold):");
        Console.WriteLine();
        Console.WriteLine("| topology | median hold ms | p99 hold ms | hash lists signed | records per list | chunks | hash lists on the wire / payload | first hop ms (depth-1 median − median hold) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var row in _holdRows) Console.WriteLine(row);
        Console.WriteLine();
        Console.WriteLine($"total {total.Elapsed.TotalSeconds:0} s; load average at the end {LoadAverage()} (other processes on this machine compete for the same cores)");
    }

    private int MaxDepthSeen { get; set; } = 1;

    private sealed record BulkResult(double SlowestMBps, double FastestMBps, Usage Usage, long Bytes)
    {
        /// <summary>ShardStream only: hash lists the coordinator signed (each one verification at every peer that gets its shard).</summary>
        public long? ListsSigned { get; init; }
    }

    private sealed record LatencyResult(double PerHopMedian, double PerHopP99, double EndToEndMedian, double EndToEndP99, double SourceMbps, Usage Usage, SortedDictionary<int, List<double>> ByDepth, double WorkingSetMB)
    {
        /// <summary>ShardStream only: how long the coordinator held each record for its hash list's signature.</summary>
        public SourceHold? Hold { get; init; }
    }

    private async Task<(Shape, BulkResult)> ShardStreamBulkAsync(int k, long bytes, long? windowBytes, CancellationToken ct)
    {
        var probes = Enumerable.Range(0, _peers).Select(_ => new ByteCountProbe(bytes, 1, BulkBlock)).ToArray();
        var source = new BulkSource(bytes, () => probes.Min(p => p.Received), MaxLead);
        var (shape, usage, hold) = await ShardStreamOverlay.RunAsync(k, _peers, windowBytes, _windowAge, _signingInterval, _mergeReads, source, probes, ct);
        return (shape, Summarize(source.FirstReadTicks, probes, usage, bytes) with { ListsSigned = hold.ListsSigned });
    }

    private async Task<BulkResult> ShardStreamBulkAsync(int k, long bytes, long? windowBytes, Shape expected, CancellationToken ct)
    {
        var (shape, result) = await ShardStreamBulkAsync(k, bytes, windowBytes, ct);
        if (!shape.SameEdges(expected)) throw new InvalidOperationException("the placement changed between runs");
        return result;
    }

    /// <summary>The replay window of the diagnostic ShardStream row: small enough that filling it costs little.</summary>
    private static long? SmallWindow => 4L << 20;

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";

    private async Task<BulkResult> BaselineBulkAsync(Shape shape, long bytes, CancellationToken ct)
    {
        var probes = Enumerable.Range(0, _peers).Select(_ => new ByteCountProbe(bytes, shape.ShardCount, BulkBlock)).ToArray();
        var source = new BulkSource(bytes, () => probes.Min(p => p.Received), MaxLead);
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
        var (shape, usage, hold) = await ShardStreamOverlay.RunAsync(k, _peers, _windowBytes, _windowAge, _signingInterval, _mergeReads, source, probes, ct);
        return (shape, Summarize(shape, source, probes, usage) with { Hold = hold });
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
        return new LatencyResult(Stats.Median(perHop), Stats.Percentile(perHop, 99), Stats.Median(endToEnd), Stats.Percentile(endToEnd, 99), mbps, usage, byDepth, usage.WorkingSetBytes / 1e6);
    }

    private static string ThroughputRow(string topology, string relay, List<BulkResult> runs, double median, string ratio) => string.Create(CultureInfo.InvariantCulture,
        $"| {topology} | {relay} | {median:0.0} [{runs.Min(r => r.SlowestMBps):0.0}..{runs.Max(r => r.SlowestMBps):0.0}] | {ratio} |");

    private const string CostHeader = "| topology | relay | wall s | CPU s | CPU µs / chunk | CPU µs / chunk, median run | CPU ratio (baseline ÷ this, median runs) | of which the background JIT, µs / chunk, median run (methods compiled) | GC count (gen0/1/2) | GC pause ms | allocated / chunk | thread-pool items / chunk | context switches / chunk | page faults / chunk | source chunks per hash list |\n"
        + "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

    /// <summary>Process CPU time per 64 KiB chunk received by a peer, in µs.</summary>
    private double CpuPerChunk(BulkResult run) => run.Usage.Cpu.TotalMicroseconds / (run.Bytes / (double)BulkBlock * _peers);

    /// <summary>
    /// The tiered-compilation thread's CPU per chunk, and the methods the JIT compiled, in the run
    /// whose CPU per chunk is the median (the lower middle one of an even count): what of that
    /// figure is the runtime optimising code, not relaying.
    /// </summary>
    private string JitOfMedianRun(List<BulkResult> runs)
    {
        var median = runs.OrderBy(CpuPerChunk).ElementAt((runs.Count - 1) / 2);
        return string.Create(CultureInfo.InvariantCulture,
            $"{median.Usage.TieredJitCpu.TotalMicroseconds / (median.Bytes / (double)BulkBlock * _peers):0.0} ({median.Usage.JitMethods})");
    }

    private string CostRow(string topology, string relay, List<BulkResult> runs, double baseCpu)
    {
        double medianCpu = Stats.Median(runs.Select(CpuPerChunk).ToList());
        double chunks = runs[0].Bytes / (double)BulkBlock * _peers;
        double Avg(Func<Usage, double> f) => runs.Average(r => f(r.Usage));
        string perList = runs[0].ListsSigned is null ? "–" : (runs[0].Bytes / (double)BulkBlock / runs.Average(r => (double)r.ListsSigned!.Value)).ToString("0.0", CultureInfo.InvariantCulture);
        return string.Create(CultureInfo.InvariantCulture,
            $"| {topology} | {relay} | {Avg(u => u.Wall.TotalSeconds):0.00} | {Avg(u => u.Cpu.TotalSeconds):0.00} | {Avg(u => u.Cpu.TotalMicroseconds) / chunks:0.0} | {medianCpu:0.0} | {(double.IsNaN(baseCpu) ? "–" : (baseCpu / medianCpu).ToString("0.00", CultureInfo.InvariantCulture))} | {JitOfMedianRun(runs)} | " +
            $"{Avg(u => u.Gen0):0}/{Avg(u => u.Gen1):0}/{Avg(u => u.Gen2):0} | {Avg(u => u.GcPause.TotalMilliseconds):0} | {Avg(u => u.AllocatedBytes) / chunks:0} B | " +
            $"{Avg(u => u.WorkItems) / chunks:0.0} | {Avg(u => u.ContextSwitches) / chunks:0.0} | {Avg(u => u.PageFaults) / chunks:0.0} | {perList} |");
    }

    /// <summary>
    /// <c>--only shardstream|baseline</c>: bulk runs of one relay alone (after a warm-up that fixes
    /// the shape), for running under a profiler (perf, strace -c) without the other in the samples.
    /// </summary>
    private async Task ProfileAsync(CancellationToken ct)
    {
        bool ours = _only switch
        {
            "shardstream" => true,
            "baseline" => false,
            _ => throw new ArgumentException("--only takes shardstream or baseline"),
        };
        Console.WriteLine(CostHeader);
        foreach (int k in _shardCounts)
        {
            string topology = k == 1 ? "binary K=1" : "tessellated K=2";
            var (shape, _) = await ShardStreamBulkAsync(k, 16L << 20, _windowBytes, ct);
            if (!ours) await BaselineBulkAsync(shape, 16L << 20, ct);
            for (int r = 0; r < _repeats; r++)
            {
                var result = ours ? (await ShardStreamBulkAsync(k, _bulkBytes, _windowBytes, ct)).Item2 : await BaselineBulkAsync(shape, _bulkBytes, ct);
                Console.WriteLine(CostRow(topology, $"{_only} {result.SlowestMBps:0.0} MB/s", [result], double.NaN));
            }
        }
    }

    private static string LatencyRow(string topology, string relay, LatencyResult r) => string.Create(CultureInfo.InvariantCulture,
        $"| {topology} | {relay} | {r.PerHopMedian:0.000} | {r.PerHopP99:0.000} | {r.EndToEndMedian:0.000} | {r.EndToEndP99:0.000} | {r.SourceMbps:0.00} | {r.Usage.Cpu.TotalSeconds:0.0} | {r.Usage.AllocatedBytes / 1e6:0} | {r.Usage.Gen0}/{r.Usage.Gen1}/{r.Usage.Gen2} | {r.Usage.GcPause.TotalMilliseconds:0.0} | {r.WorkingSetMB:0} |");

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

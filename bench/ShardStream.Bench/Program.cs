using BenchmarkDotNet.Running;
using ShardStream.Bench.Relay;

namespace ShardStream.Bench;

/// <summary>
/// <c>relay</c>: the end-to-end harness (throughput and latency per hop, ShardStream against plain
/// TCP relays of the same shape). <c>memory</c>: what a random read of memory costs the machine now
/// (beside the planner's joins per CPU second). <c>micro</c>: BenchmarkDotNet micro-benchmarks of the codec and
/// relay hot path; any further arguments go to BenchmarkDotNet (e.g. <c>--job short</c>).
/// </summary>
internal static class Program
{
    private static async Task<int> Main(string[] args)
    {
        switch (args.FirstOrDefault())
        {
            case "relay":
                return await RelayBenchmark.RunAsync(args[1..]);
            case "integrity":
                return Integrity.IntegrityBenchmark.Run(args[1..]);
            case "memory":
                return MemoryLatency.Run(args[1..]);
            case "micro":
                var rest = args[1..];
                if (!rest.Contains("--filter")) rest = [.. rest, "--filter", "*"];
                // Keep BenchmarkDotNet's reports beside the project (git-ignored), not in the working directory.
                if (!rest.Contains("--artifacts")) rest = [.. rest, "--artifacts", Path.Combine(AppContext.BaseDirectory, "../../../BenchmarkDotNet.Artifacts")];
                BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(rest);
                return 0;
            default:
                await Console.Error.WriteLineAsync("usage: ShardStream.Bench relay [--peers 8] [--mib 256] [--repeats 5 (0: latency only)] [--seconds 10] [--shards 1,2]\n" +
                    "         diagnostics: [--only shardstream|baseline] [--window-mib N] [--window-age-s S] [--signing-interval-ms M] [--merge-reads]\n" +
                    "       ShardStream.Bench integrity [--placement (only the hash-by-placement table)] [--sizes (only BLAKE3 by input size) [--sweep (chunk bodies of 1..64 KiB + 17)]]\n" +
                    "       ShardStream.Bench memory [--mib 512] [--reads 5000000] (ns per random dependent read, thread CPU and wall)\n" +
                    "       ShardStream.Bench micro [BenchmarkDotNet options, e.g. --job short]");
                return 2;
        }
    }
}

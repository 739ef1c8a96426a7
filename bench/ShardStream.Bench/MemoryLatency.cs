using System.Diagnostics;
using System.Globalization;
using ShardStream.Simulation;
using ShardStream.Topology;

namespace ShardStream.Bench;

/// <summary>
/// <c>memory</c>: what a dependent read of memory at random costs this machine now, in CPU time
/// of the reading thread (as <c>simulate</c>'s joins per CPU second count the planner) and in wall
/// time: a chain of reads, one per 64-byte line in a random cycle, over 8 MiB and over a larger
/// working set (512 MiB by default, in the planner's line-aligned array with huge pages asked for).
/// The latency-aware planner at 1M peers is such reads for the most part (docs/performance.md,
/// "What the joins per CPU second depend on"): its figure is to be read beside this one.
/// </summary>
internal static class MemoryLatency
{
    private const int Line = 64;

    public static int Run(string[] args)
    {
        var mib = 512;
        var reads = 5_000_000;
        if (args.Length % 2 != 0)
        {
            Console.Error.WriteLine($"memory: {args[^1]} needs a value (--mib N, --reads N)");
            return 2;
        }

        for (var i = 0; i < args.Length; i += 2)
        {
            switch (args[i])
            {
                case "--mib":
                    mib = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
                    break;
                case "--reads":
                    reads = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
                    break;
                default:
                    Console.Error.WriteLine($"memory: unknown option {args[i]} (--mib N, --reads N)");
                    return 2;
            }
        }

        if (mib < 1 || mib > 8192 || reads < 1)
        {
            Console.Error.WriteLine("memory: --mib must be 1-8192 and --reads at least 1");
            return 2;
        }

        var load = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "-";
        var small = Chase(8, reads);
        var large = Chase(mib, reads);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"load {load}: random dependent reads, ns each of thread CPU (wall): 8 MiB {small.Cpu:F1} ({small.Wall:F1}), {mib} MiB {large.Cpu:F1} ({large.Wall:F1})"));
        return 0;
    }

    /// <summary>ns of thread CPU and of wall time per read of a random cycle through every line of <paramref name="mib"/> MiB.</summary>
    private static (double Cpu, double Wall) Chase(int mib, int reads)
    {
        var lines = (int)((long)mib * 1024 * 1024 / Line);
        var perLine = Line / sizeof(long);
        var memory = new LineAlignedArray<long>();
        memory.Grow(lines * perLine);
        var order = new int[lines];
        for (var i = 0; i < lines; i++)
        {
            order[i] = i;
        }

        new Random(1).Shuffle(order);
        for (var i = 0; i < lines; i++)
        {
            memory[order[i] * perLine] = order[(i + 1) % lines] * perLine;
        }

        long at = 0;
        for (var i = 0; i < Math.Min(reads, lines); i++)
        {
            at = memory[(int)at];
        }

        var cpu = ThreadCpuClock.Nanoseconds();
        var wall = Stopwatch.GetTimestamp();
        for (var i = 0; i < reads; i++)
        {
            at = memory[(int)at];
        }

        var wallNs = Stopwatch.GetElapsedTime(wall).TotalNanoseconds;
        var cpuNs = ThreadCpuClock.Nanoseconds() - cpu;
        GC.KeepAlive(at);
        return (ThreadCpuClock.Available ? (double)cpuNs / reads : double.NaN, wallNs / reads);
    }
}

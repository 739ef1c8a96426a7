using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace ShardStream.Bench.Relay;

/// <summary>
/// What the process spent during a measured phase: wall time, CPU time, collections, allocations,
/// GC pauses, thread-pool work items, context switches and minor page faults (Linux getrusage),
/// the methods the JIT compiled (<see cref="System.Runtime.JitInfo"/>, all threads) and the CPU
/// time of the runtime's tiered-compilation thread (part of <see cref="Cpu"/>).
/// </summary>
internal readonly record struct Usage(TimeSpan Wall, TimeSpan Cpu, int Gen0, int Gen1, int Gen2, long AllocatedBytes, TimeSpan GcPause,
    long WorkItems, long ContextSwitches, long PageFaults, long WorkingSetBytes, long JitMethods, TimeSpan TieredJitCpu)
{
    public static Meter Start() => new();

    public sealed class Meter
    {
        private readonly long _wall = Stopwatch.GetTimestamp();
        private readonly TimeSpan _cpu = Process.GetCurrentProcess().TotalProcessorTime;
        private readonly int _gen0 = GC.CollectionCount(0);
        private readonly int _gen1 = GC.CollectionCount(1);
        private readonly int _gen2 = GC.CollectionCount(2);
        private readonly long _allocated = GC.GetTotalAllocatedBytes(precise: false);
        private readonly TimeSpan _pause = GC.GetTotalPauseDuration();
        private readonly long _workItems = ThreadPool.CompletedWorkItemCount;
        private readonly (long Switches, long Faults) _rusage = ResourceUsage.Read();
        private readonly long _jitMethods = System.Runtime.JitInfo.GetCompiledMethodCount();
        private readonly Dictionary<string, long> _tieredJit = ResourceUsage.TieredCompilationTicks();

        public Usage Stop()
        {
            var rusage = ResourceUsage.Read();
            return new(
                Stopwatch.GetElapsedTime(_wall),
                Process.GetCurrentProcess().TotalProcessorTime - _cpu,
                GC.CollectionCount(0) - _gen0,
                GC.CollectionCount(1) - _gen1,
                GC.CollectionCount(2) - _gen2,
                GC.GetTotalAllocatedBytes(precise: false) - _allocated,
                GC.GetTotalPauseDuration() - _pause,
                ThreadPool.CompletedWorkItemCount - _workItems,
                rusage.Switches - _rusage.Switches,
                rusage.Faults - _rusage.Faults,
                Process.GetCurrentProcess().WorkingSet64,
                System.Runtime.JitInfo.GetCompiledMethodCount() - _jitMethods,
                ResourceUsage.TieredCompilationCpuSince(_tieredJit));
        }
    }
}

/// <summary>getrusage(RUSAGE_SELF): the process's context switches and minor page faults, all threads included.</summary>
internal static partial class ResourceUsage
{
    public static (long Switches, long Faults) Read()
    {
        if (!OperatingSystem.IsLinux()) return (0, 0);
        // struct rusage on 64-bit Linux: two timevals (4 longs), then 14 longs; minflt is [8], nvcsw [16], nivcsw [17].
        var fields = new long[18];
        return GetResourceUsage(0, fields) == 0 ? (fields[16] + fields[17], fields[8]) : (0, 0);
    }

    /// <summary>
    /// CPU time (user + system) of the runtime's tiered-compilation thread since
    /// <paramref name="start"/>: the thread that compiles methods again, optimised, once they are
    /// called often (".NET Tiered Compilation Worker", shown as ".NET Tiered Com"). A thread
    /// started since counts from zero; one that exited since (it does after a few idle seconds) is
    /// lost, so this is a lower bound. A method's first compilation happens on the thread that
    /// calls it and is not in this figure.
    /// </summary>
    public static TimeSpan TieredCompilationCpuSince(Dictionary<string, long> start)
    {
        long ticks = 0;
        foreach (var (task, now) in TieredCompilationTicks())
            ticks += now - start.GetValueOrDefault(task);
        return TimeSpan.FromSeconds(ticks / (double)ClockTicksPerSecond);
    }

    /// <summary>Clock ticks per second of /proc's CPU times (USER_HZ): 100 on Linux.</summary>
    private const int ClockTicksPerSecond = 100;

    /// <summary>utime + stime of each tiered-compilation thread, by task id, from /proc/self/task/*/stat (clock ticks); empty where there is no /proc.</summary>
    public static Dictionary<string, long> TieredCompilationTicks()
    {
        var ticks = new Dictionary<string, long>();
        if (!OperatingSystem.IsLinux()) return ticks;
        foreach (string task in Directory.EnumerateDirectories("/proc/self/task"))
        {
            try
            {
                if (!File.ReadAllText(Path.Combine(task, "comm")).StartsWith(".NET Tiered Com", StringComparison.Ordinal)) continue;
                string stat = File.ReadAllText(Path.Combine(task, "stat"));
                // After the ")" that closes the name: state is field 3, utime field 14, stime 15.
                string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                ticks[Path.GetFileName(task)] = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The thread exited between the listing and the read.
            }
        }
        return ticks;
    }

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int GetResourceUsage(int who, [Out] long[] usage);
}

using System.Diagnostics;
using System.Runtime.InteropServices;

namespace ShardStream.Bench.Relay;

/// <summary>
/// What the process spent during a measured phase: wall time, CPU time, collections, allocations,
/// GC pauses, thread-pool work items, context switches and minor page faults (Linux getrusage).
/// </summary>
internal readonly record struct Usage(TimeSpan Wall, TimeSpan Cpu, int Gen0, int Gen1, int Gen2, long AllocatedBytes, TimeSpan GcPause,
    long WorkItems, long ContextSwitches, long PageFaults, long WorkingSetBytes)
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
                Process.GetCurrentProcess().WorkingSet64);
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

    [LibraryImport("libc", EntryPoint = "getrusage")]
    private static partial int GetResourceUsage(int who, [Out] long[] usage);
}

using System.Diagnostics;

namespace ShardStream.Bench.Relay;

/// <summary>What the process spent during a measured phase: wall time, CPU time, collections, allocations.</summary>
internal readonly record struct Usage(TimeSpan Wall, TimeSpan Cpu, int Gen0, int Gen1, int Gen2, long AllocatedBytes, TimeSpan GcPause)
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

        public Usage Stop() => new(
            Stopwatch.GetElapsedTime(_wall),
            Process.GetCurrentProcess().TotalProcessorTime - _cpu,
            GC.CollectionCount(0) - _gen0,
            GC.CollectionCount(1) - _gen1,
            GC.CollectionCount(2) - _gen2,
            GC.GetTotalAllocatedBytes(precise: false) - _allocated,
            GC.GetTotalPauseDuration() - _pause);
    }
}

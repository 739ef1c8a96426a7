using System.Runtime.InteropServices;

namespace ShardStream.Simulation;

/// <summary>
/// CPU time of the calling thread (Linux: <c>clock_gettime(CLOCK_THREAD_CPUTIME_ID)</c>), so that
/// the simulator can give the planner's throughput per CPU second as well as per wall second: on a
/// shared machine the wall time includes the time the thread waited for a core. Elsewhere, or if
/// the call fails, <see cref="Available"/> is false and <see cref="Nanoseconds"/> returns 0.
/// </summary>
internal static partial class ThreadCpuClock
{
    private const int ClockThreadCpuTimeId = 3;

    public static bool Available { get; } = OperatingSystem.IsLinux() && Probe();

    /// <summary>CPU nanoseconds the calling thread has used (0 when not <see cref="Available"/>).</summary>
    public static long Nanoseconds()
    {
        if (!Available)
        {
            return 0;
        }

        return clock_gettime(ClockThreadCpuTimeId, out var t) == 0 ? (t.Seconds * 1_000_000_000) + t.Nanoseconds : 0;
    }

    private static bool Probe()
    {
        try
        {
            return clock_gettime(ClockThreadCpuTimeId, out _) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc", SetLastError = false)]
    private static partial int clock_gettime(int clockId, out TimeSpec time);
}

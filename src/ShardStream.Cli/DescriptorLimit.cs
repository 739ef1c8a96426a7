using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Cli;

/// <summary>
/// Keeps connections that have not said hello from taking a node's last file descriptors. A .NET
/// process that runs out of them does not survive it for long: a new thread-pool thread needs a
/// pipe and a lazily loaded assembly a descriptor, and the runtime aborts ("Out of memory.") when
/// either fails (docs/security.md). The runtime raises the soft limit to the hard one at start;
/// with a hard limit of 1,024, the 1,024 connections a node lets wait for a hello would fill it
/// alone. So at most a quarter of the limit may wait (1,024 from a limit of 4,096 up).
/// </summary>
internal static partial class DescriptorLimit
{
    private const int RlimitNofile = 7;   // Linux, every architecture .NET runs on

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Max;
    }

    [DllImport("libc.so.6", EntryPoint = "getrlimit", SetLastError = true)]
    private static extern int GetRLimit(int resource, out RLimit limit);

    /// <summary>This process's limit on open files (the soft one), or null where it cannot be read (not Linux, no glibc).</summary>
    public static ulong? OpenFiles()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            return GetRLimit(RlimitNofile, out var limit) == 0 ? limit.Current : null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary>
    /// Gives the node the open-file limit (it keeps clear of it: <see cref="NodeOptions.OpenFileLimit"/>),
    /// and lowers the caps on connections waiting for a hello to a quarter of it, and says so.
    /// </summary>
    public static T Apply<T>(T options, ILogger log)
        where T : NodeOptions
    {
        if (OpenFiles() is not { } limit) return options;
        options = options with { OpenFileLimit = (int)Math.Min(limit, int.MaxValue) };
        if (limit / 4 >= (ulong)options.MaxPendingHellos) return options;
        int cap = (int)Math.Max(1, limit / 4);
        Capped(log, cap, limit);
        return options with { MaxPendingHellos = cap, MaxPendingHellosPerAddress = Math.Min(cap, options.MaxPendingHellosPerAddress) };
    }

    [LoggerMessage(EventId = 9110, EventName = "PendingHellosCapped", Level = LogLevel.Information,
        Message = "at most {Cap} connections may wait for a hello: a quarter of this process's open-file limit ({Limit}; ulimit -n raises it)")]
    private static partial void Capped(ILogger log, int cap, ulong limit);
}

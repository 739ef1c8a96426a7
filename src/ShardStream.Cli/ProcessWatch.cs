using System.Globalization;

namespace ShardStream.Cli;

/// <summary>
/// CPU and memory of another process, from Linux's /proc: what <c>shardstream swarm
/// --coordinator-pid</c> reports for the coordinator it loads, so that the figures are the
/// coordinator's own and not the load generator's.
/// </summary>
internal sealed class ProcessWatch(int pid)
{
    /// <summary>Clock ticks per second of /proc/PID/stat's times (USER_HZ, 100 on Linux for every architecture we run on).</summary>
    private const double TicksPerSecond = 100;

    private long _lastTicks = -1;
    private DateTime _lastAt;

    /// <summary>The process's resident memory in bytes (VmRSS), or -1 when it cannot be read.</summary>
    public long ResidentBytes()
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException)
        {
        }
        return -1;
    }

    /// <summary>CPU used since the last call, in percent of one core (-1 the first time or when it cannot be read).</summary>
    public double CpuPercentSinceLast()
    {
        long ticks = CpuTicks();
        var now = DateTime.UtcNow;
        double percent = _lastTicks < 0 || ticks < 0 ? -1 : (ticks - _lastTicks) / TicksPerSecond / (now - _lastAt).TotalSeconds * 100;
        _lastTicks = ticks;
        _lastAt = now;
        return percent;
    }

    /// <summary>Open file descriptors of the process, or -1.</summary>
    public int OpenFiles()
    {
        try
        {
            return Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd").Count();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return -1;
        }
    }

    /// <summary>The machine's 1-minute load average, from /proc/loadavg.</summary>
    public static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "?";
        }
    }

    private long CpuTicks()
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // The command name (field 2) is in parentheses and may hold spaces: count from after it.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
            return long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException)
        {
            return -1;
        }
    }
}

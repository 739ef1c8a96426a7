namespace ShardStream.Transport;

/// <summary>
/// The file descriptors this process holds: its TCP connections (counted as they open and close)
/// and the rest, measured. The rest is not small: a .NET process keeps every assembly it loaded
/// open (the CLI: about 110 of them, and 130 descriptors in all, before its first connection), and
/// holds a socket it closed while an operation on it was pending until that operation has been
/// completed on the thread pool, late on a loaded host. A coordinator limited to 400 descriptors
/// that counted only its connections against a reserve of 64 for all that ran out of descriptors
/// and aborted ("Out of memory.") once 600 joiners were all answered instead of reset.
/// </summary>
internal static class ProcessDescriptors
{
    private static readonly TimeSpan MeasureEvery = TimeSpan.FromMilliseconds(100);
    private static long s_measuredAt;
    private static int s_others;

    /// <summary>
    /// Descriptors in use now: TCP connections open, plus the others as last measured (Linux:
    /// /proc/self/fd, at most every 100 ms; elsewhere none are counted).
    /// </summary>
    public static int InUse => TcpTransport.OpenConnections + Others;

    /// <summary>Descriptors held besides counted TCP connections, as last measured.</summary>
    public static int Others
    {
        get
        {
            if (!OperatingSystem.IsLinux()) return 0;
            long now = Environment.TickCount64;
            long last = Interlocked.Read(ref s_measuredAt);
            if (last != 0 && now - last < MeasureEvery.TotalMilliseconds) return Volatile.Read(ref s_others);
            if (Interlocked.CompareExchange(ref s_measuredAt, now, last) != last) return Volatile.Read(ref s_others);
            try
            {
                int connections = TcpTransport.OpenConnections;
                // Less the one this enumeration itself opens.
                int all = Directory.EnumerateFileSystemEntries("/proc/self/fd").Count() - 1;
                Volatile.Write(ref s_others, Math.Max(0, all - connections));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Out of descriptors this very moment, or no /proc: the last measure stands.
            }
            return Volatile.Read(ref s_others);
        }
    }
}

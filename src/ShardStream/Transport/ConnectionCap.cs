using System.Net;

namespace ShardStream.Transport;

/// <summary>
/// The connections one listener outside the node's hello gate (the HTTP host, each RTMP server)
/// holds at once: an eighth of the process's open-file limit, and never more than the listener's
/// own most. A flood of connections at such a port must not take the last descriptors: a .NET
/// process out of them aborts ("Out of memory.", docs/security.md). An eighth each leaves room for
/// the hello gate's quarter and the overlay's links with the HTTP host and both RTMP ports full.
/// </summary>
/// <param name="Max">The most connections held at once (at least 1).</param>
/// <param name="Why">Where <paramref name="Max"/> comes from, for the refusal's log line.</param>
internal readonly record struct ConnectionCap(int Max, string Why)
{
    /// <summary>The cap for a listener that takes at most <paramref name="most"/>, in a process whose open-file limit is <paramref name="openFileLimit"/> (null: unknown).</summary>
    public static ConnectionCap EighthOf(ulong? openFileLimit, int most) =>
        openFileLimit is { } limit && limit / 8 < (ulong)most
            ? new((int)Math.Max(1, limit / 8), $"an eighth of its open-file limit, {limit}; ulimit -n raises it")
            : new(most, $"{most} at most");

    /// <summary>
    /// Whether connections from <paramref name="address"/> (IPv4-mapped IPv6 already as IPv4) are
    /// held to a per-address share: all but the node's own host (127.0.0.1, ::1), where local
    /// players and a local reverse proxy all come from one address. The listener's cap still holds.
    /// </summary>
    public static bool HeldToShare(IPAddress address) => !address.Equals(IPAddress.Loopback) && !address.Equals(IPAddress.IPv6Loopback);
}

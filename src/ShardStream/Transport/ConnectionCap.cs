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
    /// The share a connection from <paramref name="address"/> is counted in
    /// (<see cref="AddressShares.GroupOf(IPAddress)"/>: an IPv4 address, an IPv6 /64), or null where it
    /// is held to none, only to the listener's cap: the node's own host (127.0.0.1, ::1, also as
    /// IPv4-mapped IPv6), where local players and a local reverse proxy all come from one address,
    /// and a connection with no IP address (null: not over IP, so not from a stranger's host).
    /// </summary>
    public static string? ShareOf(IPAddress? address)
    {
        if (address is null) return null;
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        return address.Equals(IPAddress.Loopback) || address.Equals(IPAddress.IPv6Loopback) ? null : AddressShares.GroupOf(address);
    }
}

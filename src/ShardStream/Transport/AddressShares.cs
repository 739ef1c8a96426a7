using System.Net;
using System.Net.Sockets;

namespace ShardStream.Transport;

/// <summary>
/// Places (connections, viewers, waiting hellos, dial-backs) held per address group, each group
/// held to at most <see cref="Max"/>: one stranger's share of something bounded. A group is what one
/// host can be (<see cref="GroupOf(IPAddress)"/>): an IPv4 address, or an IPv6 /64, since one IPv6
/// host is routinely given a whole /64 (RFC 6177; SLAAC, RFC 4862, and temporary addresses,
/// RFC 8981, pick any address in it) and keyed on its exact address would take every share with
/// 2^64 of them. A null group is held to no share (the caller's total still holds). Not
/// thread-safe: its owner's lock guards it, with the owner's total.
/// </summary>
internal sealed class AddressShares(int max)
{
    private readonly Dictionary<string, int> _held = [];

    /// <summary>The most places one group holds.</summary>
    public int Max { get; } = Math.Max(1, max);

    /// <summary>Places <paramref name="group"/> holds now (0 for null).</summary>
    public int HeldBy(string? group) => group is null ? 0 : _held.GetValueOrDefault(group);

    /// <summary>Whether <paramref name="group"/> holds its share already (never for null).</summary>
    public bool IsFull(string? group) => HeldBy(group) >= Max;

    /// <summary>Counts one more place for <paramref name="group"/> (the caller checked <see cref="IsFull"/>).</summary>
    public void Take(string? group)
    {
        if (group is not null) _held[group] = HeldBy(group) + 1;
    }

    /// <summary>Gives back one place of <paramref name="group"/>.</summary>
    public void Release(string? group)
    {
        if (group is null || !_held.TryGetValue(group, out int held)) return;
        if (held <= 1) _held.Remove(group);
        else _held[group] = held - 1;
    }

    /// <summary>
    /// The group <paramref name="address"/> is counted in: an IPv4 address (also one seen as
    /// IPv4-mapped IPv6 by a dual-stack socket) as itself, an IPv6 address by its /64
    /// (<c>2001:db8:1:2::/64</c>; a link-local one with its zone, <c>fe80::%2/64</c>), but for the
    /// loopback ::1, which is one host.
    /// </summary>
    public static string GroupOf(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (address.AddressFamily != AddressFamily.InterNetworkV6 || address.Equals(IPAddress.IPv6Loopback)) return address.ToString();
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out _);
        bytes[8..].Clear();
        // The zone kept: fe80::/64 is on every link, and hosts on two links are two hosts.
        return $"{new IPAddress(bytes, address.ScopeId)}/64";
    }

    /// <summary>
    /// The group of a remote address as a transport reports it (<c>HOST:PORT</c>, <c>[V6]:PORT</c>):
    /// <see cref="GroupOf(IPAddress)"/> of its host, or when that is no IP address (an address a
    /// joiner advertises, a simulated host's name) the name as DNS compares it: without case and
    /// without the root's dot, so that "LocalHost." and "localhost" are one host (a stranger spelled
    /// one name 32 ways for 32 times the early dial-backs' share); null when the transport knew no
    /// address ("?", empty). Names of one address that differ in more than that are not one group.
    /// </summary>
    public static string? GroupOf(string remoteAddress)
    {
        string host = Endpoint.HostOf(remoteAddress);
        if (host is "" or "?") return null;
        return IPAddress.TryParse(host, out var ip) ? GroupOf(ip) : host.TrimEnd('.').ToLowerInvariant();
    }
}

using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace ShardStream.Transport;

/// <summary>Parses <c>host:port</c> and <c>[v6]:port</c> addresses.</summary>
public static class Endpoint
{
    /// <summary>Splits an address; throws <see cref="FormatException"/> with a readable message.</summary>
    public static (string Host, int Port) Parse(string address)
    {
        int colon = address.LastIndexOf(':');
        if (colon <= 0 || colon == address.Length - 1)
            throw new FormatException($"'{address}' is not an address of the form HOST:PORT");
        string host = address[..colon];
        if (host.StartsWith('[') && host.EndsWith(']')) host = host[1..^1];
        else if (host.Contains(':'))
            throw new FormatException($"'{address}' is ambiguous: write an IPv6 address in brackets, as in [::1]:1235");
        if (!int.TryParse(address.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
            throw new FormatException($"'{address}' has no valid port (0..65535)");
        return (host, port);
    }

    /// <summary>Formats a host and port back into an address.</summary>
    public static string Format(string host, int port) =>
        host.Contains(':') ? $"[{host}]:{port}" : $"{host}:{port}";

    /// <summary>True for a host that means "every address of this machine": 0.0.0.0, :: (or [::]), or empty.</summary>
    public static bool IsUnspecified(string host)
    {
        if (host.Length == 0) return true;
        if (host.StartsWith('[') && host.EndsWith(']')) host = host[1..^1];
        return IPAddress.TryParse(host, out var ip) && (ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any));
    }

    /// <summary>
    /// The host of a remote address as a transport reports it: <c>10.0.0.2:5000</c> gives
    /// <c>10.0.0.2</c>, <c>[::1]:5000</c> gives <c>::1</c>, <c>[::ffff:10.0.0.2]:5000</c> (an IPv4
    /// peer seen by a dual-stack socket) gives <c>10.0.0.2</c>; a bare host name stays as it is.
    /// </summary>
    public static string HostOf(string remoteAddress)
    {
        string host;
        try
        {
            host = Parse(remoteAddress).Host;
        }
        catch (FormatException)
        {
            host = remoteAddress;
        }
        return IPAddress.TryParse(host, out var ip) && ip.IsIPv4MappedToIPv6 ? ip.MapToIPv4().ToString() : host;
    }

    /// <summary>
    /// Where other nodes can reach a node that says it listens on <paramref name="listenAddress"/>
    /// and whose connection came from <paramref name="remoteAddress"/>: a listener on an
    /// unspecified address (0.0.0.0, [::]) accepts on every address of its machine, so it is
    /// reached at the address its connection came from, on the port it listens on (what
    /// BitTorrent trackers do). Any other address is taken as given; so is one that does not parse
    /// (the node's own problem: nobody will reach it).
    /// </summary>
    public static string Advertised(string listenAddress, string remoteAddress)
    {
        string host;
        int port;
        try
        {
            (host, port) = Parse(listenAddress);
        }
        catch (FormatException)
        {
            return listenAddress;
        }
        return IsUnspecified(host) ? Format(HostOf(remoteAddress), port) : listenAddress;
    }

    /// <summary>
    /// <paramref name="address"/> (a node on this machine, as this node reached it) as another
    /// machine reaches it: a loopback or unspecified host (127.0.0.1, localhost, ::1, 0.0.0.0)
    /// means this machine only, so it becomes, on the same port, the host other machines are told
    /// to reach this node at (<paramref name="advertised"/>, its --advertise, whose host is where
    /// the overlay sends every other peer: behind a NAT, the public one), else the host the other
    /// machine reached this node at (<paramref name="localAddress"/>, this side of its connection,
    /// which behind a NAT is the private address the port forward delivered to). Any other address,
    /// one whose other machine came over loopback too, or one with no such host to put in, is
    /// returned as given.
    /// </summary>
    public static string AsReachedFrom(string address, string localAddress, string? advertised = null)
    {
        try
        {
            var (host, port) = Parse(address);
            if (!IsThisMachineOnly(host) || localAddress.Length == 0) return address;
            string local = HostOf(localAddress);
            if (IsThisMachineOnly(local)) return address;
            string? told = advertised is null ? null : HostOf(advertised);
            return Format(told is { Length: > 0 } && !IsThisMachineOnly(told) ? told : local, port);
        }
        catch (FormatException)
        {
            return address;
        }
    }

    /// <summary>
    /// True for a host that names this machine only, not a way in from another: loopback
    /// (127.0.0.0/8, ::1), localhost, or unspecified (0.0.0.0, ::). <paramref name="host"/> as
    /// <see cref="Parse"/> gives it (no brackets).
    /// </summary>
    public static bool IsThisMachineOnly(string host) =>
        IsUnspecified(host) || string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase)
        || (IPAddress.TryParse(host, out var ip) && IPAddress.IsLoopback(ip));

    /// <summary>
    /// The address to tell a viewer to connect to, for a node listening on
    /// <paramref name="listenAddress"/>: the address itself, or for a listener on an unspecified
    /// address (which is no address a viewer can dial) <c>HOST:PORT</c> and a hint that names this
    /// machine's addresses, since which of them a viewer reaches only the viewer's network knows.
    /// </summary>
    public static (string Address, string Hint) ForViewers(string listenAddress)
    {
        string host;
        int port;
        try
        {
            (host, port) = Parse(listenAddress);
        }
        catch (FormatException)
        {
            return (listenAddress, "");
        }
        if (!IsUnspecified(host)) return (listenAddress, "");
        var mine = MachineAddresses(4);
        return (Format("HOST", port), mine.Count == 0
            ? " (HOST: an address of this machine that the viewer can reach)"
            : $" (HOST: an address of this machine that the viewer can reach, one of {string.Join(", ", mine)})");
    }

    /// <summary>Up to <paramref name="max"/> unicast addresses of the interfaces that are up, loopback and link-local left out, IPv4 first.</summary>
    internal static List<string> MachineAddresses(int max)
    {
        try
        {
            return System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
                .Where(n => n.OperationalStatus == System.Net.NetworkInformation.OperationalStatus.Up
                            && n.NetworkInterfaceType != System.Net.NetworkInformation.NetworkInterfaceType.Loopback)
                .SelectMany(n => n.GetIPProperties().UnicastAddresses, (_, u) => u.Address)
                .Where(a => !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal && (a.AddressFamily == AddressFamily.InterNetwork || a.AddressFamily == AddressFamily.InterNetworkV6))
                .OrderBy(a => a.AddressFamily == AddressFamily.InterNetwork ? 0 : 1)
                .Select(a => a.ToString())
                .Distinct()
                .Take(max)
                .ToList();
        }
        catch (System.Net.NetworkInformation.NetworkInformationException)
        {
            return [];
        }
    }

    internal static async ValueTask<IPEndPoint> ResolveAsync(string address, CancellationToken cancellationToken)
    {
        var (host, port) = Parse(address);
        if (IPAddress.TryParse(host, out var ip)) return new IPEndPoint(ip, port);
        IPAddress[] addresses;
        try
        {
            addresses = await Dns.GetHostAddressesAsync(host, cancellationToken).ConfigureAwait(false);
        }
        catch (SocketException e)
        {
            throw new ConnectionFailedException($"cannot resolve host '{host}': {e.Message}", e);
        }
        var chosen = addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? addresses.FirstOrDefault()
            ?? throw new ConnectionFailedException($"host '{host}' has no address");
        return new IPEndPoint(chosen, port);
    }
}

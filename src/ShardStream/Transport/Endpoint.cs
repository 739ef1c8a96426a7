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
        if (!int.TryParse(address.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
            throw new FormatException($"'{address}' has no valid port (0..65535)");
        return (host, port);
    }

    /// <summary>Formats a host and port back into an address.</summary>
    public static string Format(string host, int port) =>
        host.Contains(':') ? $"[{host}]:{port}" : $"{host}:{port}";

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

using System.Net;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using AddressShares = ShardStream.Transport.AddressShares;
using ConnectionCap = ShardStream.Transport.ConnectionCap;

namespace ShardStream.Cli.Http;

/// <summary>
/// Bounds the connections the node's HTTP host holds open. Kestrel accepts every connection by
/// itself, outside the node's hello gate, and keeps an idle one 30 s for its request headers (130 s
/// between requests): a flood of idle connections took a coordinator's last file descriptors and the
/// runtime aborted ("Out of memory.", docs/security.md), and every viewer lost the stream. At most an
/// eighth of the open-file limit (1,024 at most, and where the limit is unknown) is served, and a
/// quarter of that to one IP address (an IPv6 /64; but the node's own host), so that one stranger cannot take every viewer's place; one
/// more is answered "503 busy" and closed as it is accepted, and the refusals are said at most once
/// per 10 s.
/// </summary>
internal sealed partial class HttpConnectionCap
{
    /// <summary>The cap where the open-file limit is unknown, and the most it is anywhere.</summary>
    public const int Most = 1024;

    private static readonly TimeSpan LogInterval = TimeSpan.FromSeconds(10);

    private readonly string _why;
    private readonly byte[] _busy;
    private readonly byte[] _busyHere;
    private readonly AddressShares _shares;
    private readonly ThrottledCount _refused;
    private int _open;  // under _shares's lock

    public HttpConnectionCap(ulong? openFileLimit, ILogger log)
    {
        var cap = ConnectionCap.EighthOf(openFileLimit, Most);
        Max = cap.Max;
        _shares = new AddressShares(Max / 4);
        _why = cap.Why;
        _refused = new ThrottledCount(LogInterval, TimeProvider.System, (count, last) => Refusing(log, count, last), log, "saying the http connections refused");
        _busy = Busy($"busy: {Max} HTTP connections are open, the most this node takes; try again in a moment\n");
        _busyHere = Busy($"busy: {MaxPerAddress} HTTP connections are open from your address, the most this node takes from one; close one or try again in a moment\n");
    }

    /// <summary>The most connections served at once.</summary>
    public int Max { get; }

    /// <summary>The most connections served at once to one IP address (an IPv6 /64): a quarter of <see cref="Max"/>, so that one address cannot take every place (not held to it: the node's own host, <see cref="ConnectionCap.ShareOf"/>).</summary>
    public int MaxPerAddress => _shares.Max;

    /// <summary>Connections refused so far.</summary>
    public long Refused => _refused.Count;

    /// <summary>
    /// Kestrel's transport with the cap: a connection accepted past it is answered and closed in the
    /// accept loop itself, before the next accept. Refused in Kestrel's connection middleware, or by
    /// its own <c>MaxConcurrentConnections</c>, it would be closed only once the thread pool ran it,
    /// and on a loaded host the accept loop ran far ahead of that (600 connections took a coordinator
    /// limited to 512 descriptors to its limit with a cap of 64 checked there).
    /// </summary>
    public IConnectionListenerFactory Wrap(IConnectionListenerFactory transport) => new CappedTransport(transport, this);

    /// <summary>Kestrel's connection middleware: frees the connection's place once it is done.</summary>
    public ConnectionDelegate Middleware(ConnectionDelegate next) => async context =>
    {
        try
        {
            await next(context).ConfigureAwait(false);
        }
        finally
        {
            Release(ConnectionCap.ShareOf(AddressOf(context)));
        }
    };

    /// <summary>Takes a place for a connection just accepted, or refuses it: answers 503 and closes it.</summary>
    private async ValueTask<bool> AdmitAsync(ConnectionContext connection)
    {
        string? share = ConnectionCap.ShareOf(AddressOf(connection));
        string? refusal = null;
        byte[] answer = _busy;
        lock (_shares)
        {
            if (_open >= Max) refusal = $"{_open} open, the most this node takes ({_why})";
            else if (_shares.IsFull(share))
            {
                refusal = $"{_shares.HeldBy(share)} open from {share}, a quarter of the most this node takes, {Max} ({_why})";
                answer = _busyHere;
            }
            else
            {
                _shares.Take(share);
                _open++;
            }
        }
        if (refusal is null) return true;
        _refused.Note($"from {connection.RemoteEndPoint?.ToString() ?? "?"}: {refusal}");
        try
        {
            // 200 bytes: the socket's send buffer takes them whether or not the other side reads.
            await connection.Transport.Output.WriteAsync(answer).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ConnectionResetException)
        {
            // It is gone: nothing to tell it.
        }
        await connection.DisposeAsync().ConfigureAwait(false);
        return false;
    }

    private void Release(string? share)
    {
        lock (_shares)
        {
            _open--;
            _shares.Release(share);
        }
    }

    /// <summary>
    /// The connection's remote IP address, or null where it has none (a transport not over IP):
    /// such a connection is held only to the cap.
    /// </summary>
    private static IPAddress? AddressOf(ConnectionContext connection) => (connection.RemoteEndPoint as IPEndPoint)?.Address;

    private static byte[] Busy(string text) => Encoding.UTF8.GetBytes(
        $"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {Encoding.UTF8.GetByteCount(text)}\r\nConnection: close\r\n\r\n{text}");

    private sealed class CappedTransport(IConnectionListenerFactory transport, HttpConnectionCap cap) : IConnectionListenerFactory
    {
        public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default) =>
            new Listener(await transport.BindAsync(endpoint, cancellationToken).ConfigureAwait(false), cap);
    }

    private sealed class Listener(IConnectionListener listener, HttpConnectionCap cap) : IConnectionListener
    {
        public EndPoint EndPoint => listener.EndPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            while (true)
            {
                var connection = await listener.AcceptAsync(cancellationToken).ConfigureAwait(false);
                if (connection is null || await cap.AdmitAsync(connection).ConfigureAwait(false)) return connection;
            }
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default) => listener.UnbindAsync(cancellationToken);

        public ValueTask DisposeAsync() => listener.DisposeAsync();
    }

    [LoggerMessage(1301, LogLevel.Warning, "{Count} http connection(s) refused so far, answered 503 busy; the last {Last}", EventName = "HttpConnectionsRefused")]
    private static partial void Refusing(ILogger logger, long count, string last);
}

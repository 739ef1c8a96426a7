using System.Net;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ConnectionCap = ShardStream.Transport.ConnectionCap;

namespace ShardStream.Cli.Http;

/// <summary>
/// Bounds the connections the node's HTTP host holds open. Kestrel accepts every connection by
/// itself, outside the node's hello gate, and keeps an idle one 30 s for its request headers (130 s
/// between requests): a flood of idle connections took a coordinator's last file descriptors and the
/// runtime aborted ("Out of memory.", docs/security.md), and every viewer lost the stream. At most an
/// eighth of the open-file limit (1,024 at most, and where the limit is unknown) is served; one more
/// is answered "503 busy" and closed as it is accepted, and the refusals are said at most once per 10 s.
/// </summary>
internal sealed partial class HttpConnectionCap
{
    /// <summary>The cap where the open-file limit is unknown, and the most it is anywhere.</summary>
    public const int Most = 1024;

    private static readonly TimeSpan LogInterval = TimeSpan.FromSeconds(10);

    private readonly byte[] _busy;
    private readonly ThrottledCount _refused;
    private int _open;

    public HttpConnectionCap(ulong? openFileLimit, ILogger log)
    {
        var cap = ConnectionCap.EighthOf(openFileLimit, Most);
        Max = cap.Max;
        _refused = new ThrottledCount(LogInterval, TimeProvider.System, (count, from) => Refusing(log, count, Max, cap.Why, from), log, "saying the http connections refused");
        string text = $"busy: {Max} HTTP connections are open, the most this node takes; try again in a moment\n";
        _busy = Encoding.UTF8.GetBytes(
            $"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {Encoding.UTF8.GetByteCount(text)}\r\nConnection: close\r\n\r\n{text}");
    }

    /// <summary>The most connections served at once.</summary>
    public int Max { get; }

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
            Interlocked.Decrement(ref _open);
        }
    };

    /// <summary>Takes a place for a connection just accepted, or refuses it: answers 503 and closes it.</summary>
    private async ValueTask<bool> AdmitAsync(ConnectionContext connection)
    {
        if (Interlocked.Increment(ref _open) <= Max) return true;
        Interlocked.Decrement(ref _open);
        _refused.Note(connection.RemoteEndPoint?.ToString() ?? "?");
        try
        {
            // 200 bytes: the socket's send buffer takes them whether or not the other side reads.
            await connection.Transport.Output.WriteAsync(_busy).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ConnectionResetException)
        {
            // It is gone: nothing to tell it.
        }
        await connection.DisposeAsync().ConfigureAwait(false);
        return false;
    }

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

    [LoggerMessage(1301, LogLevel.Warning, "{Count} http connection(s) refused: {Max} open, the most this node takes ({Why}); the last from {From}, answered 503 busy", EventName = "HttpConnectionsRefused")]
    private static partial void Refusing(ILogger logger, long count, int max, string why, string from);
}

using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Cli.Http;

/// <summary>
/// Requests the HTTP host cannot read: garbage, a request line or headers over Kestrel's limits,
/// headers not finished within its 30 s. Kestrel answers such a connection itself (400, 408, 431,
/// …) and closes it, and said so only in a debug line of its own, which the node's log leaves out:
/// a flood of garbage left no line at all. It is counted here from Kestrel's diagnostic event for
/// it (<see cref="EventName"/>, on the host's <see cref="DiagnosticListener"/>) and said in one
/// line per 10 s with the count and the last one's address and reason (event 1302), as the
/// overlay port's bad first frames are (9106): any stranger can send garbage again and again, and
/// a line each would flood the log.
/// </summary>
internal sealed partial class HttpBadRequests : IObserver<KeyValuePair<string, object?>>, IDisposable
{
    /// <summary>Kestrel's diagnostic event for a request it refused as bad; its payload is the connection's features.</summary>
    public const string EventName = "Microsoft.AspNetCore.Server.Kestrel.BadRequest";

    private static readonly TimeSpan LogInterval = TimeSpan.FromSeconds(10);

    private readonly ThrottledCount _count;
    private readonly IDisposable _subscription;

    public HttpBadRequests(DiagnosticListener kestrel, ILogger log)
    {
        _count = new ThrottledCount(LogInterval, TimeProvider.System, (count, last) => BadRequests(log, count, last), log, "saying the http requests refused as bad");
        _subscription = kestrel.Subscribe(this, name => name == EventName);
    }

    /// <summary>Bad requests so far.</summary>
    public long Count => _count.Count;

    public void OnNext(KeyValuePair<string, object?> value)
    {
        if (value.Key != EventName || value.Value is not IFeatureCollection features) return;
        string from = features.Get<IHttpConnectionFeature>() is { RemoteIpAddress: { } ip } connection
            ? new IPEndPoint(ip, connection.RemotePort).ToString() : "?";
        string why = features.Get<IBadRequestExceptionFeature>()?.Error is { } error
            ? error is Microsoft.AspNetCore.Http.BadHttpRequestException bad ? $"{bad.StatusCode} {bad.Message}" : error.Message
            : "a bad request";
        _count.Note($"{from}: {why}");
    }

    public void OnError(Exception error)
    {
    }

    public void OnCompleted()
    {
    }

    public void Dispose() => _subscription.Dispose();

    [LoggerMessage(1302, LogLevel.Warning, "{Count} http connection(s) closed so far for a request this node cannot read (answered with an error status by the HTTP server), the last from {Last}", EventName = "HttpBadRequests")]
    private static partial void BadRequests(ILogger logger, long count, string last);
}

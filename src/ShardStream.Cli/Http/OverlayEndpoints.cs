using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using ShardStream.Nodes;

namespace ShardStream.Cli.Http;

/// <summary>
/// The coordinator's view: <c>/api/overlay</c> (JSON), <c>/events</c> (the same JSON as server-sent
/// events, once a second) and <c>/</c>, the page that draws the shard trees from them.
/// A peer's: <c>/api/peer</c>, <c>/events</c> and a small page.
/// </summary>
internal sealed class OverlayEndpoints : IHttpEndpoints
{
    private readonly Func<double, byte[]> _json;
    private readonly RateMeter _rate;
    private readonly string _api;
    private readonly string _page;
    private readonly object _cacheLock = new();
    private byte[] _cached = [];
    private long _cachedAt;

    private OverlayEndpoints(Func<double, byte[]> json, Func<long> bytes, string api, string page)
    {
        _json = json;
        _rate = new RateMeter(bytes);
        _api = api;
        _page = page;
    }

    public static OverlayEndpoints ForCoordinator(Coordinator coordinator) =>
        new(rate => OverlayJson.Overlay(coordinator, rate), () => coordinator.BytesStreamed, "/api/overlay", "index.html");

    public static OverlayEndpoints ForPeer(Peer peer) =>
        new(rate => OverlayJson.Peer(peer.Status(), rate), () => peer.Status().BytesReceived, "/api/peer", "peer.html");

    /// <summary>The JSON now, built at most every 250 ms however many pages watch.</summary>
    private byte[] Json()
    {
        lock (_cacheLock)
        {
            long now = Stopwatch.GetTimestamp();
            if (_cached.Length == 0 || Stopwatch.GetElapsedTime(_cachedAt, now) >= TimeSpan.FromMilliseconds(250))
            {
                _cached = _json(_rate.Rate);
                _cachedAt = now;
            }
            return _cached;
        }
    }

    public void Map(WebApplication app)
    {
        app.MapGet(_api, (HttpContext context) =>
        {
            context.Response.ContentType = "application/json";
            context.Response.Headers.CacheControl = "no-store";
            return context.Response.Body.WriteAsync(Json(), context.RequestAborted).AsTask();
        });
        app.MapGet("/events", ServeEventsAsync);
        app.MapGet("/", (HttpContext context) => Assets.ServeAsync(context, _page));
        app.MapGet("/assets/{name}", (HttpContext context, string name) => Assets.ServeAsync(context, name));
    }

    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();

    /// <summary>Server-sent events: the JSON once a second until the page goes away.</summary>
    private async Task ServeEventsAsync(HttpContext context)
    {
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-store";
        var ct = context.RequestAborted;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        try
        {
            do
            {
                await context.Response.Body.WriteAsync(DataPrefix, ct).ConfigureAwait(false);
                await context.Response.Body.WriteAsync(Json(), ct).ConfigureAwait(false);
                await context.Response.Body.WriteAsync(EventEnd, ct).ConfigureAwait(false);
                await context.Response.Body.FlushAsync(ct).ConfigureAwait(false);
            }
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false));
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // The page went away.
        }
    }
}

/// <summary>The page's files, embedded in the binary (no CDN, nothing fetched at run time).</summary>
internal static class Assets
{
    public static async Task ServeAsync(HttpContext context, string name)
    {
        await using var stream = typeof(Assets).Assembly.GetManifestResourceStream("assets/" + name);
        if (stream is null)
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            return;
        }
        context.Response.ContentType = Path.GetExtension(name) switch
        {
            ".html" => "text/html; charset=utf-8",
            ".js" => "text/javascript; charset=utf-8",
            ".css" => "text/css; charset=utf-8",
            ".png" => "image/png",
            _ => "application/octet-stream",
        };
        await stream.CopyToAsync(context.Response.Body, context.RequestAborted).ConfigureAwait(false);
    }
}

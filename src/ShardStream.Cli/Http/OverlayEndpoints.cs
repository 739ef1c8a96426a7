using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using ShardStream.Nodes;

namespace ShardStream.Cli.Http;

/// <summary>
/// The coordinator's view: <c>/api/overlay</c> (JSON), <c>/events</c> (the same JSON as server-sent
/// events, once a second) and <c>/</c>, the page that draws the shard trees from them. The trees'
/// part (<c>nodes</c>, one entry per peer) is serialized once per plan and sent to a page only when
/// it changed: a join, a leave, a move, or the RTTs in it older than <see cref="RttRefresh"/>.
/// A peer's: <c>/api/peer</c>, <c>/events</c> and a small page.
/// </summary>
internal sealed class OverlayEndpoints : IHttpEndpoints
{
    /// <summary>The RTTs in <c>nodes</c> change without the plan: it is built again after this long even when the plan did not change.</summary>
    public static readonly TimeSpan RttRefresh = TimeSpan.FromSeconds(30);

    /// <summary>However fast the plan changes, <c>nodes</c> is built at most this often.</summary>
    private static readonly TimeSpan MinRebuild = TimeSpan.FromMilliseconds(250);

    // (rate, the plan part the client has, or null) -> (the JSON, the plan part it has after it).
    private readonly Func<double, object?, (byte[] Json, object? Sent)> _json;
    private readonly RateMeter _rate;
    private readonly string _api;
    private readonly string _page;

    private OverlayEndpoints(Func<double, object?, (byte[] Json, object? Sent)> json, Func<long> bytes, string api, string page)
    {
        _json = json;
        _rate = new RateMeter(bytes);
        _api = api;
        _page = page;
    }

    public static OverlayEndpoints ForCoordinator(Coordinator coordinator)
    {
        var plans = new PlanCache(coordinator);
        return new((rate, sent) =>
        {
            var plan = plans.Current();
            return (OverlayJson.Overlay(coordinator, plan, rate, withNodes: !ReferenceEquals(plan, sent)), plan);
        }, () => coordinator.BytesStreamed, "/api/overlay", "index.html");
    }

    public static OverlayEndpoints ForPeer(Peer peer) =>
        new((rate, _) => (OverlayJson.Peer(peer.Status(), rate), null), () => peer.Status().BytesReceived, "/api/peer", "peer.html");

    /// <summary>The plan's part of the JSON, shared by every request and page.</summary>
    private sealed class PlanCache(Coordinator coordinator)
    {
        private readonly object _lock = new();
        private PlanJson? _plan;

        public PlanJson Current()
        {
            lock (_lock)
            {
                long now = Stopwatch.GetTimestamp();
                var version = coordinator.PlanVersion;
                if (_plan is null) return _plan = OverlayJson.Plan(coordinator, version, now);
                var age = Stopwatch.GetElapsedTime(_plan.BuiltAt, now);
                if ((_plan.Version != version && age >= MinRebuild) || age >= RttRefresh) _plan = OverlayJson.Plan(coordinator, version, now);
                return _plan;
            }
        }
    }

    public void Map(WebApplication app)
    {
        app.MapGet(_api, (HttpContext context) =>
        {
            context.Response.ContentType = "application/json";
            context.Response.Headers.CacheControl = "no-store";
            return context.Response.Body.WriteAsync(_json(_rate.Rate, null).Json, context.RequestAborted).AsTask();
        });
        app.MapGet("/events", ServeEventsAsync);
        app.MapGet("/", (HttpContext context) => Assets.ServeAsync(context, _page));
        app.MapGet("/assets/{name}", (HttpContext context, string name) => Assets.ServeAsync(context, name));
    }

    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();

    /// <summary>Server-sent events: the JSON once a second until the page goes away (the coordinator's without <c>nodes</c> while the page has them).</summary>
    private async Task ServeEventsAsync(HttpContext context)
    {
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-store";
        var ct = context.RequestAborted;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        object? sent = null;
        try
        {
            do
            {
                (var json, sent) = _json(_rate.Rate, sent);
                await context.Response.Body.WriteAsync(DataPrefix, ct).ConfigureAwait(false);
                await context.Response.Body.WriteAsync(json, ct).ConfigureAwait(false);
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

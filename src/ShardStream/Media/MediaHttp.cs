using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ShardStream.Transport;

namespace ShardStream.Media;

/// <summary>
/// The live stream over HTTP: <c>GET /live.flv</c> (HTTP-FLV, <c>video/x-flv</c>) and
/// <c>GET /live.ts</c> (<c>video/mp2t</c>), chunked, to any number of local viewers (up to the
/// hub's limit), each from the header and a keyframe on (docs/media.md).
/// </summary>
public static partial class MediaHttp
{
    /// <summary>Serves <paramref name="hub"/> on the node's HTTP host (GET and HEAD, and the CORS preflight).</summary>
    public static void Map(IEndpointRouteBuilder app, MediaHub hub, ILogger log)
    {
        foreach (var (path, format) in new[] { ("/live.flv", MediaFormat.Flv), ("/live.ts", MediaFormat.MpegTs) })
        {
            app.MapMethods(path, ["GET", "HEAD"], context => ServeAsync(context, hub, format, log));
            app.MapMethods(path, ["OPTIONS"], Preflight);
        }
    }

    private static Task Preflight(HttpContext context)
    {
        var response = context.Response;
        response.Headers.AccessControlAllowOrigin = "*";
        response.Headers.AccessControlAllowMethods = "GET, HEAD, OPTIONS";
        response.Headers.AccessControlAllowHeaders = "*";
        response.StatusCode = StatusCodes.Status204NoContent;
        return Task.CompletedTask;
    }

    private static Task PlainAsync(HttpResponse response, int status, string text)
    {
        response.StatusCode = status;
        response.ContentType = "text/plain; charset=utf-8";
        return response.WriteAsync(text + "\n");
    }

    internal static async Task ServeAsync(HttpContext context, MediaHub hub, MediaFormat wanted, ILogger log)
    {
        var response = context.Response;
        response.Headers.AccessControlAllowOrigin = "*";
        var aborted = context.RequestAborted;
        MediaFormat format;
        try
        {
            format = await hub.Format.WaitAsync(aborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        if (format != wanted)
        {
            string what = format switch
            {
                MediaFormat.Flv => "this stream is FLV: GET /live.flv",
                MediaFormat.MpegTs => "this stream is MPEG-TS: GET /live.ts",
                _ => hub.IsCompleted ? "the stream has ended" : "this stream is neither FLV nor MPEG-TS: watch it from stdout",
            };
            await PlainAsync(response, StatusCodes.Status404NotFound, what).ConfigureAwait(false);
            return;
        }
        // Counted per address (an IPv6 /64), but for the node's own host (local players, a local reverse proxy).
        string? from = ConnectionCap.ShareOf(context.Connection.RemoteIpAddress);
        using var viewer = hub.Subscribe(from, out string? refusal);
        if (viewer is null)
        {
            await PlainAsync(response, StatusCodes.Status503ServiceUnavailable, refusal!).ConfigureAwait(false);
            return;
        }
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = MediaFormats.ContentType(format);
        response.Headers.CacheControl = "no-cache, no-store";
        // A HEAD (a player probing the URL) gets a viewer's headers, 503 included, but is no viewer.
        if (HttpMethods.IsHead(context.Request.Method)) return;
        string who = $"{context.Connection.RemoteIpAddress}:{context.Connection.RemotePort}";
        ViewerStarted(log, who, context.Request.Path.Value ?? "", hub.ViewerCount);
        int skips = 0;
        bool wentAway = false;
        try
        {
            while (true)
            {
                var segments = await viewer.TakeAsync(aborted).ConfigureAwait(false);
                if (segments.Count == 0) break;
                foreach (var s in segments) await response.Body.WriteAsync(s, aborted).ConfigureAwait(false);
                await response.Body.FlushAsync(aborted).ConfigureAwait(false);
                if (viewer.Skips != skips)
                {
                    skips = viewer.Skips;
                    ViewerSkipped(log, who, skips, viewer.SkippedBytes);
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            wentAway = true;
        }
        // An aborted request: the node's stop closes a viewer still taking the rest of the stream
        // after its grace (NodeHttpHost.StopGrace), which is no viewer that went away; and Kestrel
        // drops writes to a connection it closed without throwing, so such a loop can end as if the
        // viewer had taken everything.
        string end = !aborted.IsCancellationRequested
            ? wentAway ? "the viewer went away"
                : hub.StoppedEarly is { } why ? $"the node stopped before the end of the stream: {why}"
                : "the stream ended"
            : context.RequestServices.GetService(typeof(IHostApplicationLifetime)) is IHostApplicationLifetime { ApplicationStopping.IsCancellationRequested: true }
                ? "closed as the node stopped, before it took the rest of the stream"
            : wentAway ? "the viewer went away"
            : "the viewer went away before it took the rest of the stream";
        ViewerEnded(log, who, end, viewer.Skips);
    }

    [LoggerMessage(1210, LogLevel.Information, "http viewer {Viewer} watches {Path} ({Count} viewer(s) now)", EventName = "HttpViewerStarted")]
    private static partial void ViewerStarted(ILogger logger, string viewer, string path, int count);

    [LoggerMessage(1211, LogLevel.Warning, "http viewer {Viewer} falls behind the stream: skipped ahead to the next keyframe ({Skips} time(s), {Bytes} bytes dropped in all)", EventName = "HttpViewerSkipped")]
    private static partial void ViewerSkipped(ILogger logger, string viewer, int skips, long bytes);

    [LoggerMessage(1212, LogLevel.Information, "http viewer {Viewer} done: {Why} ({Skips} skip(s))", EventName = "HttpViewerEnded")]
    private static partial void ViewerEnded(ILogger logger, string viewer, string why, int skips);

    /// <summary>Logs where the stream is served.</summary>
    [LoggerMessage(1213, LogLevel.Information, "http: serving the live stream at http://{Address}/live.flv (FLV) and http://{Address}/live.ts (MPEG-TS)", EventName = "HttpServing")]
    public static partial void Serving(ILogger logger, string address);
}

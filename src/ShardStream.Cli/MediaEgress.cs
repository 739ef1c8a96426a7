using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging;
using ShardStream.Cli.Http;
using ShardStream.Media;

namespace ShardStream.Cli;

/// <summary>
/// A node's live stream for local players on its <c>--http</c> host: <c>GET /live.flv</c> and
/// <c>/live.ts</c> from a <see cref="MediaHub"/> fed with the bytes the node writes (a peer) or reads
/// (the coordinator). Without <c>--http</c> it does nothing and the node's streams are used as they are.
/// </summary>
internal sealed class MediaEgress(bool active) : IDisposable
{
    /// <summary>The live stream as local viewers get it.</summary>
    public MediaHub Hub { get; } = new();

    /// <summary>The endpoints to add to the node's HTTP host.</summary>
    public IHttpEndpoints Endpoints(ILoggerFactory loggers) => new LiveEndpoints(Hub, loggers.CreateLogger("http"));

    /// <summary>Logs where the stream is served, once the host runs.</summary>
    public void Started(NodeHttpHost? host, ILoggerFactory loggers)
    {
        if (host is not null) MediaHttp.Serving(loggers.CreateLogger("http"), host.Address.Replace("http://", "", StringComparison.Ordinal));
    }

    /// <summary>The node's output, feeding the hub too when it is served.</summary>
    public Stream Tee(Stream output) => active ? Hub.Tee(output) : output;

    /// <summary>The node's source, feeding the hub every byte read when it is served.</summary>
    public Stream Tap(Stream source) => active ? Hub.Tap(source) : source;

    /// <summary>The stream is over (or the node stops): viewers get the end.</summary>
    public void Dispose() => Hub.Complete();

    private sealed class LiveEndpoints(MediaHub hub, ILogger log) : IHttpEndpoints
    {
        public void Map(WebApplication app) => MediaHttp.Map(app, hub, log);
    }
}

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ShardStream.Transport;

namespace ShardStream.Cli.Http;

/// <summary>
/// The one HTTP host of a node (<c>--http HOST:PORT</c>): Kestrel serving every
/// <see cref="IHttpEndpoints"/> the command hands it. Logs the bound address (port 0 picks one).
/// </summary>
internal sealed class NodeHttpHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly HttpBadRequests _badRequests;

    private NodeHttpHost(WebApplication app, HttpBadRequests badRequests, string address)
    {
        _app = app;
        _badRequests = badRequests;
        Address = address;
    }

    /// <summary>The bound address, <c>http://HOST:PORT</c>.</summary>
    public string Address { get; }

    /// <summary>Binds the host, or returns null when <paramref name="address"/> is null (no <c>--http</c>).</summary>
    public static async Task<NodeHttpHost?> StartAsync(string? address, IEnumerable<IHttpEndpoints> features, ILoggerFactory loggers, CancellationToken cancellationToken)
    {
        if (address is null) return null;
        var endpoint = Endpoint.Parse(address);
        if (!IPAddress.TryParse(endpoint.Host, out var ip))
        {
            if (endpoint.Host != "localhost") throw new ArgumentException($"--http needs an IP address to listen on (or localhost), not '{endpoint.Host}'");
            ip = IPAddress.Loopback;
        }
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(new ForwardingLoggerProvider(loggers));
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        // Kestrel accepts outside the node's hello gate: its connections are bounded here, or a flood takes the last descriptors.
        var cap = new HttpConnectionCap(DescriptorLimit.OpenFiles(), loggers.CreateLogger("http"));
        builder.WebHost.UseKestrel(o => o.Listen(ip, endpoint.Port, listen => listen.Use(cap.Middleware)));
        // Registered last, so Kestrel binds with it (it takes the last transport that can bind).
        builder.Services.AddSingleton<IConnectionListenerFactory>(services => cap.Wrap(new SocketTransportFactory(
            services.GetRequiredService<IOptions<SocketTransportOptions>>(), services.GetRequiredService<ILoggerFactory>())));
        var list = features.ToList();
        foreach (var feature in list) feature.AddServices(builder.Services);
        var app = builder.Build();
        foreach (var feature in list) feature.Map(app);
        // Kestrel answers a request it cannot read by itself: counted, or a flood of garbage leaves no line.
        var badRequests = new HttpBadRequests(app.Services.GetRequiredService<DiagnosticListener>(), loggers.CreateLogger("http"));
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (IsBindFailure(e))
        {
            badRequests.Dispose();
            await app.DisposeAsync().ConfigureAwait(false);
            throw new IOException($"cannot listen for HTTP on {address}: {(e.InnerException is AddressInUseException ? "address already in use" : e.Message)}", e);
        }
        // As bound: [::] (every address, IPv4 ones too) stays [::], as 0.0.0.0 stays 0.0.0.0, not
        // 127.0.0.1, which would read as reachable from this machine only.
        string bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault() ?? $"http://{address}";
        HttpLog.Listening(loggers.CreateLogger("http"), bound);
        return new NodeHttpHost(app, badRequests, bound);
    }

    /// <summary>
    /// A start that failed to bind the address: Kestrel says "address already in use" as an
    /// IOException; an address that is not this machine's ("Cannot assign requested address") comes
    /// as the socket's own exception. The node says it on one line (above).
    /// </summary>
    private static bool IsBindFailure(Exception e) => e is IOException or SocketException;

    /// <summary>
    /// How long the node's HTTP connections are given to finish when it stops (an HTTP viewer
    /// taking the rest of the stream after the end); any still open then are closed. Without it a
    /// viewer that stopped reading held the stop for the host's own 30 s, past the coordinator's
    /// 20 s bound after Ctrl-C or SIGTERM (CoordinatorStop).
    /// </summary>
    public static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(3);

    public async ValueTask DisposeAsync()
    {
        using var grace = new CancellationTokenSource(StopGrace);
        await _app.StopAsync(grace.Token).ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
        _badRequests.Dispose();
    }

    /// <summary>
    /// ASP.NET Core's own log lines go to the node's loggers (stderr), Microsoft.* from warnings up,
    /// all but the .NET host's line for a start that failed to bind (<see cref="WithoutBindFault"/>).
    /// </summary>
    private sealed class ForwardingLoggerProvider(ILoggerFactory loggers) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) =>
            categoryName == HostCategory ? new WithoutBindFault(loggers.CreateLogger(categoryName)) : loggers.CreateLogger(categoryName);

        public void Dispose()
        {
        }
    }

    /// <summary>The .NET host's log category, which says that its start failed, and that a background service failed.</summary>
    private const string HostCategory = "Microsoft.Extensions.Hosting.Internal.Host";

    /// <summary>
    /// The host's lines but its "Hosting failed to start" for a failed bind (event
    /// HostedServiceStartupFaulted): that line is the whole stack trace, and the node says the
    /// failure on its one line "cannot listen for HTTP on ADDRESS: …". Every other line of the
    /// category (another start failure, a background service that failed) goes through.
    /// </summary>
    private sealed class WithoutBindFault(ILogger inner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (eventId.Name == "HostedServiceStartupFaulted" && exception is not null && IsBindFailure(exception)) return;
            inner.Log(logLevel, eventId, state, exception, formatter);
        }
    }
}

/// <summary>Log lines of the HTTP host: event ids 1300..1399.</summary>
internal static partial class HttpLog
{
    [LoggerMessage(1300, LogLevel.Information, "http listening on {Address}", EventName = "HttpListening")]
    public static partial void Listening(ILogger logger, string address);
}

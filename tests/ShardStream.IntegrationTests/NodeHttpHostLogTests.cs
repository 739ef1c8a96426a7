using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ShardStream.Cli.Http;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The node's HTTP host hides the .NET host's own line for a start that failed to bind (its whole
/// stack trace: the node says it on one line, CliErrorTests.An_http_address_that_cannot_be_bound_is_refused_on_one_line),
/// and nothing else of that log category: here a background service of the host that fails, whose
/// error the host logs there.
/// </summary>
public sealed class NodeHttpHostLogTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Another_error_of_the_hosts_log_category_still_shows()
    {
        var lines = new ConcurrentQueue<(string Category, LogLevel Level, string Text)>();
        using var loggers = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Trace).AddProvider(new Capture(lines)));
        await using var host = await NodeHttpHost.StartAsync("127.0.0.1:0", [new FailingService()], loggers, CancellationToken.None);

        var deadline = DateTime.UtcNow + Deadline;
        while (!lines.Any(l => l.Category == "Microsoft.Extensions.Hosting.Internal.Host" && l.Level == LogLevel.Error && l.Text.Contains("BackgroundService failed", StringComparison.Ordinal)))
        {
            Assert.True(DateTime.UtcNow < deadline, $"no 'BackgroundService failed' line within {Deadline}; lines: {string.Join(" | ", lines.Select(l => $"{l.Category} {l.Level}: {l.Text}"))}");
            await Task.Delay(20);
        }
    }

    /// <summary>A feature whose background service fails once the host has started; the host carries on (Ignore).</summary>
    private sealed class FailingService : IHttpEndpoints
    {
        public void AddServices(IServiceCollection services)
        {
            services.Configure<HostOptions>(o => o.BackgroundServiceExceptionBehavior = BackgroundServiceExceptionBehavior.Ignore);
            services.AddHostedService<Failing>();
        }

        public void Map(WebApplication app)
        {
        }
    }

    private sealed class Failing : BackgroundService
    {
        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            await Task.Yield();
            throw new InvalidOperationException("a background service of the HTTP host failed");
        }
    }

    private sealed class Capture(ConcurrentQueue<(string Category, LogLevel Level, string Text)> lines) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new Logger(categoryName, lines);

        public void Dispose()
        {
        }

        private sealed class Logger(string category, ConcurrentQueue<(string Category, LogLevel Level, string Text)> lines) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                lines.Enqueue((category, logLevel, formatter(state, exception)));
        }
    }
}

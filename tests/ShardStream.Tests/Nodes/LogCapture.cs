using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace ShardStream.Tests.Nodes;

/// <summary>A logger factory that keeps every line (and forwards to <see cref="Overlay.Loggers"/>), for tests that assert what a user is told.</summary>
internal sealed class LogCapture : ILoggerProvider
{
    private readonly ConcurrentQueue<(string Category, LogLevel Level, string Message, long Timestamp)> _lines = new();

    public LogCapture() => Factory = LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Debug).AddProvider(this));

    public ILoggerFactory Factory { get; }

    /// <summary>
    /// Every line so far, each with the <see cref="System.Diagnostics.Stopwatch.GetTimestamp"/>
    /// of the moment the node logged it (on the node's own thread, as the CLI's console logger
    /// stamps its lines), not of the moment a test reads it.
    /// </summary>
    public IReadOnlyList<(string Category, LogLevel Level, string Message, long Timestamp)> Lines => [.. _lines];

    public bool Has(LogLevel level, string text) => _lines.Any(l => l.Level == level && l.Message.Contains(text, StringComparison.Ordinal));

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName, Overlay.Loggers.CreateLogger(categoryName));

    public void Dispose()
    {
    }

    private sealed class Logger(LogCapture capture, string category, ILogger forward) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            capture._lines.Enqueue((category, logLevel, formatter(state, exception), System.Diagnostics.Stopwatch.GetTimestamp()));
            forward.Log(logLevel, eventId, state, exception, formatter);
        }
    }
}

using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;

namespace ShardStream.Tests.Nodes;

/// <summary>Keeps every log line (level, event id, message, exception, and when: since the logger was made) for a test to look at.</summary>
internal sealed class RecordingLogger : ILogger, ILoggerFactory, ILoggerProvider
{
    private readonly long _start = Stopwatch.GetTimestamp();

    public ConcurrentQueue<(LogLevel Level, EventId Id, string Message, Exception? Exception, TimeSpan At)> Lines { get; } = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Lines.Enqueue((logLevel, eventId, formatter(state, exception), exception, Stopwatch.GetElapsedTime(_start)));

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    /// <summary>Every line, each with its time in seconds (a failure's timeline).</summary>
    public string Dump() => string.Join("\n", Lines.Select(l => $"{l.At.TotalSeconds.ToString("0.000", CultureInfo.InvariantCulture)} {l.Level} {l.Id.Id} {l.Message} {l.Exception?.GetType().Name}"));
}

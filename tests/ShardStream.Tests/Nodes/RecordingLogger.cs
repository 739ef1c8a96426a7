using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace ShardStream.Tests.Nodes;

/// <summary>Keeps every log line (level, event id, message, exception) for a test to look at.</summary>
internal sealed class RecordingLogger : ILogger, ILoggerFactory, ILoggerProvider
{
    public ConcurrentQueue<(LogLevel Level, EventId Id, string Message, Exception? Exception)> Lines { get; } = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Lines.Enqueue((logLevel, eventId, formatter(state, exception), exception));

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    public string Dump() => string.Join("\n", Lines.Select(l => $"{l.Level} {l.Id.Id} {l.Message} {l.Exception?.GetType().Name}"));
}

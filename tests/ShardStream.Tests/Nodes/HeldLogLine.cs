using Microsoft.Extensions.Logging;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Loggers whose line of event <paramref name="held"/> waits, after it is logged, until
/// <paramref name="until"/> is set (at most 10 s), as when the thread that logs it is held up there.
/// A line of event <paramref name="releasedBy"/>, when given, sets it.
/// </summary>
internal sealed class HeldLogLine(ILoggerFactory inner, int held, ManualResetEventSlim until, int? releasedBy = null) : ILoggerFactory
{
    public void AddProvider(ILoggerProvider provider) => inner.AddProvider(provider);

    public ILogger CreateLogger(string categoryName) => new Logger(inner.CreateLogger(categoryName), held, until, releasedBy);

    public void Dispose()
    {
    }

    private sealed class Logger(ILogger inner, int held, ManualResetEventSlim until, int? releasedBy) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            inner.Log(logLevel, eventId, state, exception, formatter);
            if (eventId.Id == releasedBy) until.Set();
            if (eventId.Id == held) until.Wait(TimeSpan.FromSeconds(10));
        }
    }
}

using Microsoft.Extensions.Logging;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// One joiner's loggers (forwarded to <see cref="Overlay.Loggers"/>) that count the nodes it was
/// asked to measure as it joined: the sum of the nodes named in each of its Landmarks rounds, as
/// its event 1713 gives them ("measured {Count} of {Total} node(s) the coordinator named"), the
/// coordinator among them (its Hello's answer is that sample). Issue 12's "pings per joining
/// peer", which a joiner keeps at <see cref="ShardStream.Nodes.Coordinator.MaxPingsPerJoin"/>.
/// </summary>
internal sealed class JoinPings : ILoggerFactory
{
    private const int LandmarksMeasuredEvent = 1713;

    private int _named;

    /// <summary>Nodes named in this joiner's Landmarks rounds so far.</summary>
    public int Named => Volatile.Read(ref _named);

    /// <summary>The fewest and the most nodes any of <paramref name="joiners"/> was asked to measure (lock the list while joins may add to it).</summary>
    public static (int Least, int Most) Range(List<JoinPings> joiners)
    {
        lock (joiners) return (joiners.Min(p => p.Named), joiners.Max(p => p.Named));
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this, Overlay.Loggers.CreateLogger(categoryName));

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(JoinPings pings, ILogger forward) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => forward.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information || forward.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (eventId.Id == LandmarksMeasuredEvent && state is IReadOnlyList<KeyValuePair<string, object?>> fields
                && fields.FirstOrDefault(f => f.Key == "Total").Value is int total)
            {
                Interlocked.Add(ref pings._named, total);
            }

            if (forward.IsEnabled(logLevel)) forward.Log(logLevel, eventId, state, exception, formatter);
        }
    }
}

using Microsoft.Extensions.Logging;

namespace ShardStream.Cli;

/// <summary>
/// One live line on stderr, redrawn in place every half second, for a terminal: a viewer sees its
/// state instead of scrolling logs. Warnings and errors still appear, each on its own line above
/// the status line (through <see cref="LoggerProvider"/>). Used only when stderr is a terminal and
/// <c>-v</c> is not given (<see cref="Wanted"/>).
/// </summary>
internal sealed class StatusLine : IAsyncDisposable
{
    private readonly object _lock = new();
    private readonly CancellationTokenSource _stop = new();
    private Func<string> _render = () => "";
    private Task _loop = Task.CompletedTask;
    private bool _drawn;

    /// <summary>Whether a status line replaces the logs: stderr is a terminal and no <c>-v</c>.</summary>
    public static bool Wanted(bool verbose) => !verbose && !Console.IsErrorRedirected && Environment.GetEnvironmentVariable("TERM") != "dumb";

    /// <summary>Log lines of warnings and up, written above the status line.</summary>
    public ILoggerProvider LoggerProvider => new Provider(this);

    /// <summary>Starts redrawing <paramref name="render"/>'s text.</summary>
    public void Start(Func<string> render)
    {
        _render = render;
        _loop = Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(500));
            do Draw();
            while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false));
        });
    }

    private void Draw()
    {
        string text;
        try
        {
            text = _render();
        }
        catch (Exception e) when (e is InvalidOperationException or ObjectDisposedException)
        {
            return;
        }
        int width = 0;
        try
        {
            width = Console.WindowWidth;
        }
        catch (IOException)
        {
            // No size known: draw the whole line.
        }
        if (width > 1 && text.Length >= width) text = text[..(width - 1)];
        lock (_lock)
        {
            Console.Error.Write("\r\x1b[2K" + text);
            Console.Error.Flush();
            _drawn = true;
        }
    }

    private void WriteLogLine(string line)
    {
        lock (_lock)
        {
            Console.Error.Write((_drawn ? "\r\x1b[2K" : "") + line + "\n");
            Console.Error.Flush();
            _drawn = false;
        }
    }

    /// <summary>Draws the last state once more and ends the line.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _loop.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }
        if (_loop != Task.CompletedTask) Draw();
        lock (_lock)
        {
            if (_drawn) Console.Error.Write("\n");
            _drawn = false;
        }
        _stop.Dispose();
    }

    private sealed class Provider(StatusLine status) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new Logger(status, categoryName);

        public void Dispose()
        {
        }
    }

    private sealed class Logger(StatusLine status, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            string level = logLevel switch { LogLevel.Warning => "warn", LogLevel.Error => "fail", _ => "crit" };
            status.WriteLogLine($"{DateTime.Now:HH:mm:ss.fff} {level}: {category}[{eventId.Id}] {formatter(state, exception)}");
        }
    }
}

using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The overlay at the end of the stream (the CLI's events 1751/1752) must hold every peer attached
/// when the source ended, even one that finished and left at once: taken after the gate that
/// published the End was released, a fast peer's leave could be handled first and the peer was missing.
/// </summary>
public class OverlayAtSourceEndTests
{
    [Fact]
    public async Task The_overlay_at_the_source_end_holds_a_peer_that_left_right_after_the_end()
    {
        var net = new VirtualNetwork();
        var log = new LogCapture();
        using var left = new ManualResetEventSlim();
        var factory = new SourceEndedLineAfter(log.Factory, left);
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", ShardCount = 1 }, net.Host("coord"), factory);
        await coordinator.StartAsync(CancellationToken.None);
        var source = new System.IO.Pipelines.Pipe();
        var run = Task.Run(() => coordinator.RunAsync(source.Reader.AsStream(), CancellationToken.None));
        await using var peer = new Peer(new PeerOptions { JoinAddress = "coord:1", ListenAddress = "p1:1" }, net.Host("p1"), log.Factory);
        await peer.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline);
        var watching = Task.Run(() => peer.RunAsync(Stream.Null, CancellationToken.None));
        await source.Writer.WriteAsync(Overlay.RandomBytes(Protocol.MaxChunkLength, seed: 1));
        await Overlay.WaitUntilAsync(() => peer.BytesWritten == Protocol.MaxChunkLength, "the peer wrote the chunk");
        await source.Writer.CompleteAsync();

        // The coordinator's thread is held up after the source ended until the peer has left.
        await watching.WaitAsync(Overlay.Deadline);
        await Overlay.WaitUntilAsync(() => coordinator.Snapshot().Nodes.Count == 1, "the coordinator took the peer's leave");
        left.Set();
        await run.WaitAsync(Overlay.Deadline);

        var atEnd = coordinator.OverlayAtSourceEnd;
        Assert.NotNull(atEnd);
        Assert.Contains(atEnd.Nodes, n => n.Address == "p1:1");
    }

    /// <summary>Loggers whose "source ended" line (event 1654) waits until <c>left</c> is set (at most 10 s).</summary>
    private sealed class SourceEndedLineAfter(ILoggerFactory inner, ManualResetEventSlim left) : ILoggerFactory
    {
        public void AddProvider(ILoggerProvider provider) => inner.AddProvider(provider);

        public ILogger CreateLogger(string categoryName) => new Logger(inner.CreateLogger(categoryName), left);

        public void Dispose()
        {
        }

        private sealed class Logger(ILogger inner, ManualResetEventSlim left) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => inner.BeginScope(state);

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                inner.Log(logLevel, eventId, state, exception, formatter);
                if (eventId.Id == 1654) left.Wait(TimeSpan.FromSeconds(10));
            }
        }
    }
}

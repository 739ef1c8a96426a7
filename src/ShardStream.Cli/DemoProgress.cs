using System.Diagnostics;
using System.Globalization;
using ShardStream.Nodes;

namespace ShardStream.Cli;

/// <summary>
/// The demo's progress on stderr: how much of the source the coordinator has read, how much the
/// slowest and the fastest peer have written, the rate. A live line on a terminal, else a line every 5 s.
/// </summary>
internal sealed class DemoProgress : IAsyncDisposable
{
    private readonly Coordinator _coordinator;
    private readonly List<Peer> _peers;
    private readonly long _size;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly StatusLine? _line;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _plain = Task.CompletedTask;

    public DemoProgress(Coordinator coordinator, List<Peer> peers, long size)
    {
        (_coordinator, _peers, _size) = (coordinator, peers, size);
        if (!Console.IsErrorRedirected)
        {
            _line = new StatusLine();
            _line.Start(Text);
        }
        else
        {
            _plain = Task.Run(async () =>
            {
                using var timer = new PeriodicTimer(TimeSpan.FromSeconds(5));
                while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false)) Console.Error.WriteLine(Text());
            });
        }
    }

    public string Text()
    {
        long slowest = _peers.Min(p => p.BytesWritten), fastest = _peers.Max(p => p.BytesWritten);
        double seconds = Math.Max(0.001, _clock.Elapsed.TotalSeconds);
        return string.Create(CultureInfo.InvariantCulture,
            $"demo: source read {PeerStatusText.Size(_coordinator.BytesStreamed)} of {PeerStatusText.Size(_size)} │ peers wrote {PeerStatusText.Size(slowest)}..{PeerStatusText.Size(fastest)} │ {100.0 * slowest / _size:0}% everywhere │ {slowest / 1048576.0 / seconds:0.0} MiB/s");
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _plain.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }
        if (_line is not null) await _line.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
    }
}

using System.Diagnostics;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>A live source: a fixed rate by the wall clock, whatever the overlay does, until stopped (at most maxSeconds).</summary>
internal sealed class LiveSource : IAsyncDisposable
{
    private const int Piece = 16 * 1024;
    private readonly CancellationTokenSource _stop = new();
    private readonly long _start = Stopwatch.GetTimestamp();
    private readonly int _rate;
    private long _written;
    private Task _writing = Task.CompletedTask;

    private LiveSource(int rate) => _rate = rate;

    /// <param name="stall">
    /// When set, the source stops writing once its clock reaches <c>At</c>, for <c>For</c>, and then
    /// writes what it owes at once, as a source held up on a loaded host catches up.
    /// </param>
    public static LiveSource Start(Overlay overlay, int rate, int maxSeconds, int seed, (TimeSpan At, TimeSpan For)? stall = null)
    {
        // The bytes first, then the clock: made after it (7.5 MiB at 2 Mbit/s for 30 s, slow on a
        // loaded machine), they went out as a burst of the seconds that took, and the coordinator,
        // whose rate starts at its first chunk, read the stream's rate well above the source's.
        var data = Overlay.RandomBytes(rate * maxSeconds, seed);
        var source = new LiveSource(rate);
        source._writing = source.WriteAsync(overlay, data, stall);
        return source;
    }

    /// <summary>True once every byte was written (the test waited too long).</summary>
    public bool Ended => _writing.IsCompleted;

    public TimeSpan Elapsed => Stopwatch.GetElapsedTime(_start);

    /// <summary>When <paramref name="timestamp"/> was, from the first byte.</summary>
    public TimeSpan At(long timestamp) => Stopwatch.GetElapsedTime(_start, timestamp);

    /// <summary>How far <paramref name="peer"/>'s output is behind what was written, in seconds of stream.</summary>
    public TimeSpan Lag(Peer peer) => TimeSpan.FromSeconds((double)(Interlocked.Read(ref _written) - peer.StartOffset - peer.BytesWritten) / _rate);

    private async Task WriteAsync(Overlay overlay, byte[] data, (TimeSpan At, TimeSpan For)? stall)
    {
        for (int i = 0; i < data.Length / Piece && !_stop.IsCancellationRequested; i++)
        {
            var due = TimeSpan.FromSeconds((double)i * Piece / _rate);
            if (stall is { } s && due >= s.At)
            {
                await Task.Delay(s.For);
                stall = null;
            }
            var now = Elapsed;
            if (due > now) await Task.Delay(due - now);
            await overlay.WriteAsync(data[(i * Piece)..((i + 1) * Piece)]);
            Interlocked.Add(ref _written, Piece);
        }
    }

    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await _writing;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }
}

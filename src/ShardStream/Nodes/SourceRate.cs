namespace ShardStream.Nodes;

/// <summary>
/// The stream's rate as the source produces it, over the last <see cref="Window"/>: (timestamp,
/// head offset) samples at least <see cref="Spacing"/> apart. Used to tell a viewer whose download
/// is below the stream's rate from one whose parent held it back, and in the reason it is told.
/// </summary>
/// <remarks>
/// The window is long (30 s) so that the figure is the stream's rate, not a burst's: a live source
/// that is held up (its writer, or the coordinator reading its stdin on a busy machine) catches up
/// afterwards, and over 5 s that read as 20.2 Mbit/s for a 16.8 Mbit/s stream (a CI run at load
/// 26, the slow viewer told "1.0 vs 20.2 Mbit/s"). Not thread-safe: the caller holds its gate.
/// </remarks>
internal sealed class SourceRate(long timestampFrequency)
{
    public static readonly TimeSpan Spacing = TimeSpan.FromMilliseconds(250);
    public static readonly TimeSpan Window = TimeSpan.FromSeconds(30);

    private readonly Queue<(long At, long Offset)> _samples = new();
    private readonly long _spacing = Ticks(Spacing, timestampFrequency);
    private readonly long _window = Ticks(Window, timestampFrequency);
    private long _head;
    private long _lastSample;

    /// <summary>The head moved to <paramref name="offset"/> at <paramref name="now"/>.</summary>
    public void Note(long now, long offset)
    {
        _head = offset;
        if (_samples.Count == 0 || now - _lastSample >= _spacing)
        {
            _samples.Enqueue((now, offset));
            _lastSample = now;
        }
        while (_samples.Count > 2 && now - _samples.Peek().At > _window) _samples.Dequeue();
    }

    /// <summary>Mbit/s from the oldest sample kept to <paramref name="now"/>; null before a second's worth of samples.</summary>
    public double? Mbps(long now)
    {
        if (_samples.Count < 2) return null;
        var (at, offset) = _samples.Peek();
        double seconds = (double)(now - at) / timestampFrequency;
        return seconds < 1 ? null : (_head - offset) * 8 / seconds / 1e6;
    }

    private static long Ticks(TimeSpan span, long frequency) => (long)(span.TotalSeconds * frequency);
}

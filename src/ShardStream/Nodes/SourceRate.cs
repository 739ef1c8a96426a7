namespace ShardStream.Nodes;

/// <summary>
/// The stream's rate as the source produces it, over the last <see cref="Window"/>: (timestamp,
/// head offset) samples at least <see cref="Spacing"/> apart. Used to tell a viewer whose download
/// is below the stream's rate from one whose parent held it back, and in the reason it is told.
/// </summary>
/// <remarks>
/// The figure is the median of the rates from each sample to now (those at least
/// <see cref="MinSpan"/> back), not the rate over the whole window, so that a burst reads as
/// the stream's rate as soon as most samples are past it. A live source that is held up (its
/// writer, or the coordinator reading its stdin on a busy machine) catches up afterwards, and
/// over 5 s that read as 20.2 Mbit/s for a 16.8 Mbit/s stream (a CI run at load 26, the slow
/// viewer told "1.0 vs 20.2 Mbit/s"). A source that starts with a burst (stdin written before
/// the coordinator read it, an RTMP publisher's first GOP, a file piped in) read high over the
/// whole window until the burst left it, 30 s later: 1 s of burst read 10% high at 10 s (a viewer
/// stopped with "3.1 vs 3.3 Mbit/s" for a 2.1 Mbit/s stream). Only the rates from samples taken
/// before a burst count it, and from a few seconds on they are the fewer. Not thread-safe: the
/// caller holds its gate.
/// </remarks>
internal sealed class SourceRate(long timestampFrequency)
{
    public static readonly TimeSpan Spacing = TimeSpan.FromMilliseconds(250);
    public static readonly TimeSpan Window = TimeSpan.FromSeconds(30);

    /// <summary>A sample counts only this far back or further: a rate over less is that of the last reads.</summary>
    public static readonly TimeSpan MinSpan = TimeSpan.FromSeconds(1);

    /// <summary>No figure from fewer rates than this: of two, one may still be a burst's.</summary>
    private const int MinRates = 3;

    private readonly Queue<(long At, long Offset)> _samples = new();
    private readonly long _spacing = Ticks(Spacing, timestampFrequency);
    private readonly long _window = Ticks(Window, timestampFrequency);
    private readonly long _minSpan = Ticks(MinSpan, timestampFrequency);
    private readonly List<double> _rates = [];
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

    /// <summary>
    /// Mbit/s: the median of the rates from each sample at least <see cref="MinSpan"/> old to
    /// <paramref name="now"/>; null before there are <see cref="MinRates"/> of them (about 1.5 s of samples).
    /// </summary>
    public double? Mbps(long now)
    {
        _rates.Clear();
        foreach (var (at, offset) in _samples)
        {
            long span = now - at;
            if (span < _minSpan) break;
            _rates.Add((_head - offset) * 8.0 * timestampFrequency / span / 1e6);
        }
        if (_rates.Count < MinRates) return null;
        _rates.Sort();
        int mid = _rates.Count / 2;
        return _rates.Count % 2 == 1 ? _rates[mid] : (_rates[mid - 1] + _rates[mid]) / 2;
    }

    private static long Ticks(TimeSpan span, long frequency) => (long)(span.TotalSeconds * frequency);
}

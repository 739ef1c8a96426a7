using System.Diagnostics;

namespace ShardStream.Cli.Http;

/// <summary>
/// A byte rate from a growing counter that starts at 0 when the meter is made (with its node):
/// sampled at most every half second, the first sample is the mean since then, later ones an
/// exponentially weighted mean with a 2 s time constant. (It once took its first sample at the
/// first read and answered 0 there: a one-off <c>curl /api/overlay</c> during a stream said
/// <c>"rate": 0</c>.)
/// </summary>
internal sealed class RateMeter(Func<long> counter)
{
    private readonly object _lock = new();
    private long _lastBytes;
    private long _lastAt = Stopwatch.GetTimestamp();
    private bool _sampled;
    private double _rate;

    /// <summary>Bytes per second now.</summary>
    public double Rate
    {
        get
        {
            lock (_lock)
            {
                long now = Stopwatch.GetTimestamp();
                double seconds = Stopwatch.GetElapsedTime(_lastAt, now).TotalSeconds;
                if (seconds < 0.5) return _rate;
                long bytes = counter();
                double instant = (bytes - _lastBytes) / seconds;
                double weight = _sampled ? 1 - Math.Exp(-seconds / 2) : 1;
                _rate += weight * (instant - _rate);
                (_lastBytes, _lastAt, _sampled) = (bytes, now, true);
                return _rate;
            }
        }
    }
}

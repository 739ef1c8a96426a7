using System.Diagnostics;

namespace ShardStream.Cli.Http;

/// <summary>
/// A byte rate from a growing counter: sampled at most every half second, averaged over the last
/// few seconds (an exponentially weighted mean with a 2 s time constant).
/// </summary>
internal sealed class RateMeter(Func<long> counter)
{
    private readonly object _lock = new();
    private long _lastBytes = -1;
    private long _lastAt;
    private double _rate;

    /// <summary>Bytes per second now.</summary>
    public double Rate
    {
        get
        {
            lock (_lock)
            {
                long now = Stopwatch.GetTimestamp();
                long bytes = counter();
                if (_lastBytes < 0)
                {
                    (_lastBytes, _lastAt) = (bytes, now);
                    return 0;
                }
                double seconds = Stopwatch.GetElapsedTime(_lastAt, now).TotalSeconds;
                if (seconds < 0.5) return _rate;
                double instant = (bytes - _lastBytes) / seconds;
                double weight = 1 - Math.Exp(-seconds / 2);
                _rate += weight * (instant - _rate);
                (_lastBytes, _lastAt) = (bytes, now);
                return _rate;
            }
        }
    }
}

using System.Diagnostics;

namespace ShardStream.Bench.Relay;

internal static class Stats
{
    /// <summary>Nearest-rank percentile (0..100) of unsorted values.</summary>
    public static double Percentile(IReadOnlyCollection<double> values, double p)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) return double.NaN;
        int rank = (int)Math.Ceiling(p / 100 * sorted.Length);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }

    public static double Median(IReadOnlyCollection<double> values) => Percentile(values, 50);

    public static double TicksToMs(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    public static double Seconds(long fromTicks, long toTicks) => (toTicks - fromTicks) / (double)Stopwatch.Frequency;
}

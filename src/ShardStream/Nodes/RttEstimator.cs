namespace ShardStream.Nodes;

/// <summary>
/// A smoothed round-trip time as TCP keeps it (RFC 6298, section 2): the first sample R sets
/// SRTT = R and RTTVAR = R/2; each later sample R' gives RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R'|,
/// then SRTT = 7/8 SRTT + 1/8 R'. Also the least sample seen, and the least of the last
/// <see cref="RecentSamples"/> (<see cref="RecentMin"/>). Not thread-safe: one link's read loop feeds it.
/// </summary>
public sealed class RttEstimator
{
    /// <summary>The samples <see cref="RecentMin"/> is the least of.</summary>
    public const int RecentSamples = 4;

    private readonly TimeSpan[] _recent = new TimeSpan[RecentSamples];

    /// <summary>Smoothed RTT; zero before the first sample.</summary>
    public TimeSpan Smoothed { get; private set; }

    /// <summary>RTT variation; zero before the first sample.</summary>
    public TimeSpan Variation { get; private set; }

    /// <summary>The least sample so far (zero before the first).</summary>
    public TimeSpan Min { get; private set; }

    /// <summary>
    /// The least of the last <see cref="RecentSamples"/> samples (of all of them while fewer were
    /// taken; zero before the first): what a node moves its network coordinate by. One round trip
    /// that a stalled process or a queue on the way made far longer than the path does not count
    /// until every sample in the window is as long, that is until the path itself is slower. A
    /// filter of each link's samples before Vivaldi is Ledlie, Pietzuch and Seltzer's ("Stable and
    /// Accurate Network Coordinates", ICDCS 2006: a low percentile of a short history); with four
    /// samples their 25th percentile is the least.
    /// </summary>
    public TimeSpan RecentMin
    {
        get
        {
            var least = TimeSpan.MaxValue;
            for (int i = 0; i < Math.Min(Samples, RecentSamples); i++)
                if (_recent[i] < least) least = _recent[i];
            return Samples == 0 ? TimeSpan.Zero : least;
        }
    }

    /// <summary>Samples taken.</summary>
    public int Samples { get; private set; }

    /// <summary>Takes one sample (a non-positive one is ignored).</summary>
    public void Add(TimeSpan sample)
    {
        if (sample <= TimeSpan.Zero) return;
        if (Samples == 0)
        {
            Smoothed = sample;
            Variation = sample / 2;
            Min = sample;
        }
        else
        {
            Variation = (Variation * 0.75) + ((Smoothed - sample).Duration() * 0.25);
            Smoothed = (Smoothed * 0.875) + (sample * 0.125);
            if (sample < Min) Min = sample;
        }
        _recent[Samples % RecentSamples] = sample;
        Samples++;
    }
}

namespace ShardStream.Nodes;

/// <summary>
/// A smoothed round-trip time as TCP keeps it (RFC 6298, section 2): the first sample R sets
/// SRTT = R and RTTVAR = R/2; each later sample R' gives RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R'|,
/// then SRTT = 7/8 SRTT + 1/8 R'. Also the least sample seen, and the least of the last few
/// (<see cref="RecentMin"/>). Not thread-safe: one link's read loop feeds it.
/// </summary>
public sealed class RttEstimator
{
    /// <summary>How many of the latest samples <see cref="RecentMin"/> is the least of.</summary>
    public const int RecentSamples = 4;

    private readonly TimeSpan[] _recent = new TimeSpan[RecentSamples];

    /// <summary>Smoothed RTT; zero before the first sample.</summary>
    public TimeSpan Smoothed { get; private set; }

    /// <summary>RTT variation; zero before the first sample.</summary>
    public TimeSpan Variation { get; private set; }

    /// <summary>The least sample so far (zero before the first).</summary>
    public TimeSpan Min { get; private set; }

    /// <summary>
    /// The least of the last <see cref="RecentSamples"/> samples (zero before the first): a round
    /// trip with the path's delay and little queueing on it when one of the last few had none,
    /// which still follows a path that became longer once <see cref="RecentSamples"/> samples have
    /// crossed it. What moves a node's network coordinate (<see cref="Link"/>): a ping behind a
    /// link's stream data waits in queues that are no distance (docs/topology.md, "In the nodes").
    /// </summary>
    public TimeSpan RecentMin { get; private set; }

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
        var least = sample;
        for (int i = Math.Min(Samples, RecentSamples) - 1; i >= 0; i--)
            if (_recent[i] < least) least = _recent[i];
        RecentMin = least;
    }
}

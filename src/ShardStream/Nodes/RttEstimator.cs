namespace ShardStream.Nodes;

/// <summary>
/// A smoothed round-trip time as TCP keeps it (RFC 6298, section 2): the first sample R sets
/// SRTT = R and RTTVAR = R/2; each later sample R' gives RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R'|,
/// then SRTT = 7/8 SRTT + 1/8 R'. Also the least sample seen. Not thread-safe: one link's read loop feeds it.
/// </summary>
public sealed class RttEstimator
{
    /// <summary>Smoothed RTT; zero before the first sample.</summary>
    public TimeSpan Smoothed { get; private set; }

    /// <summary>RTT variation; zero before the first sample.</summary>
    public TimeSpan Variation { get; private set; }

    /// <summary>The least sample so far (zero before the first).</summary>
    public TimeSpan Min { get; private set; }

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
        Samples++;
    }
}

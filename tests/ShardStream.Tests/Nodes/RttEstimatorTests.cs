using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

public sealed class RttEstimatorTests
{
    private static TimeSpan Ms(double ms) => TimeSpan.FromMilliseconds(ms);

    [Fact]
    public void Smoothed_and_variation_follow_RFC_6298()
    {
        var rtt = new RttEstimator();
        rtt.Add(Ms(100));
        Assert.Equal(Ms(100), rtt.Smoothed);
        Assert.Equal(Ms(50), rtt.Variation);
        rtt.Add(Ms(200));
        // RTTVAR = 3/4 * 50 + 1/4 * |100 - 200| = 62.5; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5.
        Assert.Equal(62.5, rtt.Variation.TotalMilliseconds, 6);
        Assert.Equal(112.5, rtt.Smoothed.TotalMilliseconds, 6);
        Assert.Equal(Ms(100), rtt.Min);
        Assert.Equal(2, rtt.Samples);
    }

    [Fact]
    public void The_recent_least_ignores_one_slow_sample_and_follows_a_path_that_got_slower()
    {
        var rtt = new RttEstimator();
        Assert.Equal(TimeSpan.Zero, rtt.RecentMin);
        rtt.Add(Ms(100));
        Assert.Equal(Ms(100), rtt.RecentMin);
        rtt.Add(Ms(1100));
        Assert.Equal(Ms(100), rtt.RecentMin);

        // The path is 300 ms from now on: the 100 ms sample counts until it leaves the window of 4.
        for (int i = 0; i < RttEstimator.RecentSamples - 2; i++)
        {
            rtt.Add(Ms(300));
            Assert.Equal(Ms(100), rtt.RecentMin);
        }
        rtt.Add(Ms(300));
        Assert.Equal(Ms(300), rtt.RecentMin);
        Assert.Equal(Ms(100), rtt.Min);

        // A sample not positive is not taken.
        rtt.Add(TimeSpan.Zero);
        Assert.Equal(RttEstimator.RecentSamples + 1, rtt.Samples);
    }
}

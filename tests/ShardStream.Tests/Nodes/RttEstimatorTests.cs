using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

public sealed class RttEstimatorTests
{
    private static TimeSpan Ms(double ms) => TimeSpan.FromMilliseconds(ms);

    [Fact]
    public void The_recent_least_leaves_out_queueing_and_follows_a_longer_path_after_four_samples()
    {
        var rtt = new RttEstimator();
        Assert.Equal(TimeSpan.Zero, rtt.RecentMin);
        rtt.Add(Ms(100));
        Assert.Equal(Ms(100), rtt.RecentMin);
        // Pings that waited behind stream data: the path is still 100 ms.
        rtt.Add(Ms(180));
        rtt.Add(Ms(150));
        rtt.Add(Ms(190));
        Assert.Equal(Ms(100), rtt.RecentMin);
        Assert.True(rtt.Smoothed > Ms(120), $"SRTT {rtt.Smoothed.TotalMilliseconds} ms");
        // The path became 300 ms long: four samples later the recent least says so, the least of all does not.
        double[] recentLeast = [150, 150, 190];
        for (int i = 0; i < 3; i++)
        {
            rtt.Add(Ms(300 + i));
            Assert.Equal(Ms(recentLeast[i]), rtt.RecentMin);
        }
        rtt.Add(Ms(310));
        Assert.Equal(Ms(300), rtt.RecentMin);
        Assert.Equal(Ms(100), rtt.Min);
        // A sample that is not positive is not taken.
        rtt.Add(TimeSpan.Zero);
        Assert.Equal(Ms(300), rtt.RecentMin);
        Assert.Equal(8, rtt.Samples);
    }
}

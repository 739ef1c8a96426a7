using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The coordinator's choice of the control-link heartbeat interval from the number of peers it
/// holds (<see cref="ControlHeartbeats"/>): peers / 1,000 seconds by default, in whole seconds,
/// between the heartbeat interval and 60 s, with a quarter of hysteresis either way; pinned by
/// <c>--control-heartbeat</c>.
/// </summary>
public sealed class ControlHeartbeatChoiceTests
{
    private static readonly TimeSpan Second = TimeSpan.FromSeconds(1);

    private static TimeSpan S(double seconds) => TimeSpan.FromSeconds(seconds);

    private static TimeSpan Choose(int peers, TimeSpan current) => ControlHeartbeats.Choose(peers, current, Second, 1000, Peer.MaxControlHeartbeat);

    [Theory]
    [InlineData(0, 1)]
    [InlineData(200, 1)]
    [InlineData(1_999, 1)]
    [InlineData(2_000, 2)]
    [InlineData(5_000, 5)]
    [InlineData(5_999, 5)]
    [InlineData(50_000, 50)]
    [InlineData(60_000, 60)]
    [InlineData(1_000_000, 60)]
    public void From_the_heartbeat_interval_the_interval_is_the_peers_over_a_thousand_in_whole_seconds_up_to_a_minute(int peers, double seconds)
    {
        // A coordinator that jumps from the start to that many peers (what it does one peer at a
        // time is below): 1 s up to 1,999 peers, so small overlays keep today's heartbeats.
        Assert.Equal(S(seconds), Choose(peers, Second));
    }

    [Fact]
    public void Peers_joining_one_at_a_time_lengthen_it_in_steps_of_at_least_a_quarter_and_leaving_shortens_it_a_quarter_later()
    {
        var current = Second;
        var raisedAt = new List<(int Peers, double Seconds)>();
        for (int peers = 1; peers <= 70_000; peers++)
        {
            var next = Choose(peers, current);
            if (next != current) raisedAt.Add((peers, next.TotalSeconds));
            Assert.True(next >= current, $"{peers} peers joining shortened it");
            current = next;
        }
        // 2 s at 2,000, 3 at 3,000, ..., then a quarter apart: 5 at 5,000, 6 at 6,250 (6.25 s), ...
        Assert.Equal((2_000, 2.0), raisedAt[0]);
        Assert.Equal((3_000, 3.0), raisedAt[1]);
        Assert.Equal((5_000, 5.0), raisedAt[3]);
        Assert.Equal((6_250, 6.0), raisedAt[4]);
        Assert.Equal(60.0, raisedAt[^1].Seconds);
        // 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 18, 22, 27, 33, 41, 51, 60 s.
        Assert.Equal(17, raisedAt.Count);
        for (int i = 1; i < raisedAt.Count; i++)
            Assert.True(raisedAt[i].Peers >= raisedAt[i - 1].Seconds * 1000 * 1.25, $"raised at {raisedAt[i - 1]} and again at {raisedAt[i]}");

        // All the way down again: shorter only once the peers stand for a quarter less.
        var loweredAt = new List<(int Peers, double Seconds)>();
        for (int peers = 70_000; peers >= 0; peers--)
        {
            var next = Choose(peers, current);
            if (next != current) loweredAt.Add((peers, next.TotalSeconds));
            Assert.True(next <= current, $"{peers} peers leaving lengthened it");
            current = next;
        }
        Assert.Equal((45_000, 45.0), loweredAt[0]);
        Assert.Equal(1.0, loweredAt[^1].Seconds);
        Assert.True(loweredAt[^1].Peers <= 1_500, $"back to 1 s only at {loweredAt[^1].Peers} peers");
    }

    [Theory]
    [InlineData(10_000)]
    [InlineData(12_500)]
    [InlineData(20_000)]
    [InlineData(44_999)]
    public void A_peer_that_comes_and_goes_at_the_count_where_it_changed_does_not_make_it_flap(int peers)
    {
        // Reach that count one join at a time, then one leaves, joins, leaves...
        var current = Second;
        for (int n = 1; n <= peers; n++) current = Choose(n, current);
        var reached = current;
        for (int i = 0; i < 10; i++)
        {
            current = Choose(peers - 1, current);
            Assert.Equal(reached, current);
            current = Choose(peers, current);
            Assert.Equal(reached, current);
        }
    }

    [Fact]
    public void A_longer_heartbeat_interval_is_the_floor_and_a_shorter_one_is_kept_up_to_a_thousand_peers_a_second()
    {
        // --heartbeat-timeout 60: heartbeats every 12 s already; more only from 15,000 peers.
        Assert.Equal(S(12), ControlHeartbeats.Choose(14_999, S(12), S(12), 1000, Peer.MaxControlHeartbeat));
        Assert.Equal(S(15), ControlHeartbeats.Choose(15_000, S(12), S(12), 1000, Peer.MaxControlHeartbeat));
        // --heartbeat-timeout 2: 0.4 s until the peers stand for a whole second.
        Assert.Equal(S(0.4), ControlHeartbeats.Choose(999, S(0.4), S(0.4), 1000, Peer.MaxControlHeartbeat));
        Assert.Equal(S(1), ControlHeartbeats.Choose(1_000, S(0.4), S(0.4), 1000, Peer.MaxControlHeartbeat));
        Assert.Equal(S(0.4), ControlHeartbeats.Choose(0, S(1), S(0.4), 1000, Peer.MaxControlHeartbeat));
    }

    [Fact]
    public void A_pinned_interval_stays_whatever_the_number_of_peers_and_the_default_changes_with_it()
    {
        var pinned = new ControlHeartbeats(new CoordinatorOptions { ControlHeartbeatInterval = S(10) });
        Assert.False(pinned.Automatic);
        Assert.False(pinned.Update(50_000));
        Assert.False(pinned.Update(0));
        Assert.Equal(S(10), pinned.Interval);

        var pinnedToOne = new ControlHeartbeats(new CoordinatorOptions { ControlHeartbeatInterval = Second });
        Assert.False(pinnedToOne.Update(50_000));
        Assert.Equal(Second, pinnedToOne.Interval);

        var automatic = new ControlHeartbeats(new CoordinatorOptions());
        Assert.True(automatic.Automatic);
        Assert.Equal(Second, automatic.Interval);
        Assert.False(automatic.Update(1_999));
        Assert.True(automatic.Update(2_000));
        Assert.Equal(S(2), automatic.Interval);
        Assert.False(automatic.Update(2_001));
        Assert.True(automatic.Update(0));
        Assert.Equal(Second, automatic.Interval);
    }

    [Fact]
    public void The_rate_is_an_option_and_must_be_positive()
    {
        var fast = new ControlHeartbeats(new CoordinatorOptions { ControlHeartbeatsPerSecond = 100 });
        Assert.True(fast.Update(300));
        Assert.Equal(S(3), fast.Interval);
        Assert.Throws<ArgumentException>(() => new CoordinatorOptions { ControlHeartbeatsPerSecond = 0 }.Validate());
        Assert.Throws<ArgumentException>(() => new CoordinatorOptions { ControlHeartbeatsPerSecond = double.NaN }.Validate());
    }

    [Fact]
    public void A_heartbeat_interval_over_a_minute_is_kept_and_a_tiny_rate_reaches_the_minute_without_overflowing()
    {
        // --heartbeat-timeout over 300 s: the heartbeat interval itself is over the 60 s cap, and
        // the control links keep it (nothing shorter is ever asked for).
        var eighty = S(80);
        Assert.Equal(eighty, ControlHeartbeats.Choose(1, eighty, eighty, 1000, Peer.MaxControlHeartbeat));
        Assert.Equal(eighty, ControlHeartbeats.Choose(1_000_000, eighty, eighty, 1000, Peer.MaxControlHeartbeat));
        // peers / rate beyond what a TimeSpan holds: the cap, not an exception in the join path.
        Assert.Equal(Peer.MaxControlHeartbeat, ControlHeartbeats.Choose(1_000_000, Second, Second, 1e-12, Peer.MaxControlHeartbeat));
    }
}

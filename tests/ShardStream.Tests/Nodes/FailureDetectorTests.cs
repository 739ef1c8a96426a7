using Microsoft.Extensions.Time.Testing;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

public sealed class FailureDetectorTests
{
    // The defaults a node gives its links: heartbeats every second, taken for dead after at least
    // 5 s of silence and at most 20 s, phi threshold 8.
    private static readonly FailureDetectorOptions Options = new NodeOptionsForTest().LinkOptions.FailureDetector;

    private readonly FakeTimeProvider _time = new(DateTimeOffset.UnixEpoch);

    [Fact]
    public void The_defaults_are_the_documented_ones()
    {
        Assert.Equal(8, Options.Threshold);
        Assert.Equal(TimeSpan.FromSeconds(5), Options.MinSilence);
        Assert.Equal(TimeSpan.FromSeconds(20), Options.MaxSilence);
    }

    [Fact]
    public void A_punctual_side_is_taken_for_dead_at_the_heartbeat_timeout_and_not_before()
    {
        var detector = new FailureDetector(Options, _time);
        Heartbeats(detector, every: TimeSpan.FromSeconds(1), count: 30);

        _time.Advance(TimeSpan.FromSeconds(4.9));
        Assert.False(detector.IsDead(out _));
        _time.Advance(TimeSpan.FromSeconds(0.1));
        Assert.True(detector.IsDead(out var reason));
        Assert.StartsWith("nothing heard for 5 s (phi", reason);
    }

    [Fact]
    public void A_side_that_answered_late_before_is_given_longer_but_not_forever()
    {
        var detector = new FailureDetector(Options, _time);
        // A loaded machine: gaps of 1 to 4 s.
        for (var i = 0; i < 40; i++)
        {
            _time.Advance(TimeSpan.FromSeconds(1 + (i % 4)));
            detector.Heard();
        }

        _time.Advance(TimeSpan.FromSeconds(6));
        Assert.False(detector.IsDead(out _), $"phi {detector.Phi():0.00} after 6 s");
        var deadAt = SilenceUntilDead(detector);
        Assert.InRange(deadAt.TotalSeconds, 7, 19.9);
    }

    [Fact]
    public void No_side_is_given_more_than_the_ceiling()
    {
        var detector = new FailureDetector(Options, _time);
        for (var i = 0; i < 20; i++)
        {
            _time.Advance(TimeSpan.FromSeconds(15));
            detector.Heard();
        }

        _time.Advance(TimeSpan.FromSeconds(19.5));
        Assert.False(detector.IsDead(out _));
        _time.Advance(TimeSpan.FromSeconds(0.5));
        Assert.True(detector.IsDead(out var reason));
        Assert.Equal("nothing heard for 20 s (the most any link may be silent)", reason);
    }

    [Fact]
    public void Data_counts_as_liveness_and_a_busy_link_is_judged_like_a_punctual_one()
    {
        var detector = new FailureDetector(Options, _time);
        // A chunk every 10 ms for a minute: no heartbeat at all, and never silent.
        for (var i = 0; i < 6000; i++)
        {
            _time.Advance(TimeSpan.FromMilliseconds(10));
            detector.Heard();
            Assert.False(detector.IsDead(out _));
        }

        Assert.Equal(TimeSpan.Zero, detector.Silence);
        Assert.Equal(5, SilenceUntilDead(detector).TotalSeconds, 1);
    }

    [Fact]
    public void Time_this_node_did_not_run_is_not_silence_of_the_other_side()
    {
        var detector = new FailureDetector(Options, _time);
        Heartbeats(detector, every: TimeSpan.FromSeconds(1), count: 10);

        // The process stalls for 12 s; its timer then reports 11.5 s it did not run.
        _time.Advance(TimeSpan.FromSeconds(12));
        detector.Excuse(TimeSpan.FromSeconds(11.5));
        Assert.Equal(0.5, detector.Silence.TotalSeconds, 3);
        Assert.False(detector.IsDead(out _));

        // A real silence after the stall still counts.
        _time.Advance(TimeSpan.FromSeconds(4.5));
        Assert.True(detector.IsDead(out _));
    }

    [Fact]
    public void An_excuse_never_puts_the_last_arrival_in_the_future()
    {
        var detector = new FailureDetector(Options, _time);
        _time.Advance(TimeSpan.FromSeconds(1));
        detector.Excuse(TimeSpan.FromSeconds(30));
        _time.Advance(TimeSpan.FromSeconds(5));

        Assert.Equal(5, detector.Silence.TotalSeconds, 3);
        Assert.True(detector.IsDead(out _));
    }

    [Fact]
    public void Phi_grows_with_the_silence()
    {
        var detector = new FailureDetector(Options, _time);
        Heartbeats(detector, every: TimeSpan.FromSeconds(1), count: 30);

        var phis = new[] { 0.5, 1, 1.5, 2, 3 }.Select(s => detector.Phi(TimeSpan.FromSeconds(s))).ToList();
        Assert.Equal(phis.Order(), phis);
        Assert.InRange(phis[1], 0.2, 0.4); // at the mean gap: about half a chance (-log10 0.5 = 0.3)
        Assert.True(phis[^1] > 8);
    }

    private void Heartbeats(FailureDetector detector, TimeSpan every, int count)
    {
        for (var i = 0; i < count; i++)
        {
            _time.Advance(every);
            detector.Heard();
        }
    }

    /// <summary>Advances the clock in 100 ms steps until the detector gives up; the silence then.</summary>
    private TimeSpan SilenceUntilDead(FailureDetector detector)
    {
        while (!detector.IsDead(out _))
        {
            _time.Advance(TimeSpan.FromMilliseconds(100));
        }

        return detector.Silence;
    }

    private sealed record NodeOptionsForTest : NodeOptions;
}

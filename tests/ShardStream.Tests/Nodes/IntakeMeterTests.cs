using Microsoft.Extensions.Time.Testing;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>What a viewer stopped as too slow says it received: its best window of the last 30 s, none spanning a pause of its process.</summary>
public sealed class IntakeMeterTests
{
    /// <summary>Samples every 250 ms for <paramref name="seconds"/>, <paramref name="bytesPerSecond"/> arriving; returns the running total.</summary>
    private static long Take(IntakeMeter meter, FakeTimeProvider time, long total, double seconds, long bytesPerSecond)
    {
        for (int i = 0; i < seconds * 4; i++)
        {
            time.Advance(TimeSpan.FromMilliseconds(250));
            total += bytesPerSecond / 4;
            meter.Sample(total);
        }
        return total;
    }

    [Fact]
    public void The_best_window_is_the_most_taken_over_at_least_half_the_window()
    {
        var time = new FakeTimeProvider();
        var meter = new IntakeMeter(time);
        meter.Sample(0);
        Assert.Equal("", meter.Said());
        long total = Take(meter, time, 0, 2, 125_000);   // 1 Mbit/s, 2 s: no window of 2.5 s yet
        Assert.Null(meter.Best());
        total = Take(meter, time, total, 6, 125_000);
        total = Take(meter, time, total, 6, 62_500);      // then 0.5 Mbit/s
        var best = meter.Best();
        Assert.NotNull(best);
        Assert.Equal(1.0, best.Value.Mbps, 3);
        Assert.Equal("; this peer received 1.0 Mbit/s at best (2.5 s of the last 30)", meter.Said());
        // 30 s later only the slower stretch is left... and then nothing but itself.
        Take(meter, time, total, 25, 12_500);              // 0.1 Mbit/s
        Assert.Equal(0.5, meter.Best()!.Value.Mbps, 1);
    }

    /// <summary>
    /// A pause of the process (a loaded machine; the failure detector's tick reports it) makes the
    /// bytes read at once afterwards look as if they crossed the link in no time, so no window may
    /// span it; the windows before it still measured the link. The meter dropped them: a viewer
    /// stopped soon after such a pause said no download, and read as "0.00 Mbit/s" in a whole-suite
    /// run (SlowViewerTests.A_slow_viewer_stopped_as_a_leaf_is_told_a_download_near_its_link_rate).
    /// </summary>
    [Fact]
    public void A_pause_of_the_process_ends_the_windows_before_it_without_forgetting_them()
    {
        var time = new FakeTimeProvider();
        var meter = new IntakeMeter(time);
        meter.Sample(0);
        long total = Take(meter, time, 0, 8, 87_500);     // 0.7 Mbit/s
        // Held up for 3 s; on waking it reads what its socket held: 3 s of bytes at once.
        time.Advance(TimeSpan.FromSeconds(3));
        meter.NotePause();
        total += 3 * 87_500;
        meter.Sample(total);
        Take(meter, time, total, 1, 87_500);
        var best = meter.Best();
        Assert.True(best is { } b && Math.Abs(b.Mbps - 0.7) < 0.01, $"best after the pause: {best}");
        // No window spans the pause: 2 s after it, the burst it read on waking is in no figure.
        Take(meter, time, total + 87_500, 20, 87_500);
        Assert.Equal(0.7, meter.Best()!.Value.Mbps, 2);
    }
}

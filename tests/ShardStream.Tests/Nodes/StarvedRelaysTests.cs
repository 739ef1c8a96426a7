using Microsoft.Extensions.Time.Testing;
using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>What the coordinator remembers of a relay evicted for starving its children.</summary>
public sealed class StarvedRelaysTests
{
    /// <summary>
    /// The cap an eviction sets holds for <see cref="StarvedRelays.CapLifetime"/>, by address and by
    /// token, then no longer: children reading slowly on purpose must not cap a relay for good.
    /// </summary>
    [Fact]
    public void An_evictions_cap_holds_for_its_lifetime_and_then_lapses()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var starved = new StarvedRelays(TimeSpan.FromSeconds(10), time);
        starved.Evicted("p4:1", 44, 1, "its uplink did not carry", time.GetTimestamp());
        time.Advance(StarvedRelays.CapLifetime - TimeSpan.FromSeconds(1));
        Assert.Equal(1, starved.Proven("p4:1", 0, time.GetTimestamp())?.Carried);
        Assert.Equal(1, starved.Proven("elsewhere:1", 44, time.GetTimestamp())?.Carried);
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.Null(starved.Proven("p4:1", 44, time.GetTimestamp()));
    }
}

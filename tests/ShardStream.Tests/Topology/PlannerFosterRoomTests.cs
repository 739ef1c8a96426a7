using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>
/// Striped fostering when every free home slot is held by peers below the orphans: the orphans
/// are still fostered (a leaf moves to free a slot above them) instead of evicted.
/// </summary>
public class PlannerFosterRoomTests
{
    [Fact]
    public void A_striped_leave_evicts_nobody_when_the_free_slots_are_below_the_orphans()
    {
        // K = 2, the source sends 3 shard-streams; relays 1, 4, 5, 6 (budget 3), viewers 2 and 3.
        // Peer 1 leaves: the 5 survivors need 10 shard-streams and have 12 (the source's 3
        // included), but its tree's orphans hang below the only peers with a free slot at home.
        // Before the fix this evicted one peer as "no capacity left".
        var planner = new Planner(new PlannerOptions(2, TopologyKind.Striped, 3));
        foreach (var budget in new[] { 3, 0, 0, 3, 3, 3 })
        {
            planner.Join(budget);
        }

        var moves = planner.Leave([1]);

        Assert.DoesNotContain(moves, m => m.NewParent == Planner.None);
        Assert.Equal(5, planner.PeerCount);
        PlanAssert.MovesMatchPlan(planner, moves);
        PlanAssert.Consistent(planner);
    }
}

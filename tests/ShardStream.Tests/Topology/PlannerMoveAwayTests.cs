using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary><see cref="Planner.MoveAwayFrom"/>: a leaf found slow at its parent goes to a free slot elsewhere, and nothing else changes.</summary>
public sealed class PlannerMoveAwayTests
{
    [Theory]
    [InlineData(1, TopologyKind.Binary)]
    [InlineData(2, TopologyKind.Tessellated)]
    [InlineData(4, TopologyKind.Striped)]
    [InlineData(8, TopologyKind.Striped)]
    public void A_leaf_moves_away_from_its_parent_into_free_slots_only_or_not_at_all(int shards, TopologyKind topology)
    {
        var planner = new Planner(PlannerOptions.Default(shards, topology));
        var random = new Random(shards * 7);
        for (var i = 0; i < 60; i++)
        {
            try
            {
                planner.Join(i >= 10 && random.Next(3) == 0 ? 0 : shards + 1);
            }
            catch (PlacementException)
            {
                // No tree had room for it: a legitimate refusal.
            }
        }

        int moved = 0, refused = 0;
        foreach (var leaf in planner.Peers.Where(p => planner.Budget(p) == 0).ToList())
        {
            var parent = planner.ParentOf(leaf, random.Next(shards));
            var before = PlanAssert.Parents(planner);
            var budgets = planner.Peers.ToDictionary(p => p, planner.Budget);

            var moves = planner.MoveAwayFrom(leaf, parent);

            Assert.Equal(budgets, planner.Peers.ToDictionary(p => p, planner.Budget));
            if (moves.Count == 0)
            {
                // The source, or a shard with no free slot elsewhere: nothing changes.
                Assert.Equal(before, PlanAssert.Parents(planner));
                refused++;
                continue;
            }

            Assert.NotEqual(Planner.Source, parent);
            Assert.All(moves, m => Assert.Equal(leaf, m.Peer));
            for (var s = 0; s < shards; s++)
            {
                Assert.NotEqual(parent, planner.ParentOf(leaf, s));
                // Only the shards it had from that parent move; every other peer keeps its parents.
                Assert.Equal(before[(leaf, s)] == parent, moves.Any(m => m.Shard == s));
            }

            Assert.Equal(before.Where(e => e.Key.Peer != leaf), PlanAssert.Parents(planner).Where(e => e.Key.Peer != leaf));
            Assert.False(planner.IsAvoided(leaf, parent));
            PlanAssert.MovesMatchPlan(planner, moves);
            PlanAssert.Consistent(planner);
            moved++;
        }

        Assert.True(moved > 0, $"no leaf moved ({refused} refused)");
    }

    [Fact]
    public void A_leaf_with_no_free_slot_elsewhere_stays()
    {
        // The source's two slots: a relay (two slots) and a viewer; the relay's two: two viewers.
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        var relay = planner.Join(2);
        planner.Join(0);
        var leaf = planner.Join(0);
        planner.Join(0);
        Assert.Equal(relay, planner.ParentOf(leaf, 0));

        Assert.Empty(planner.MoveAwayFrom(leaf, relay));
        Assert.Equal(relay, planner.ParentOf(leaf, 0));
        Assert.Empty(planner.MoveAwayFrom(relay, Planner.Source));
        PlanAssert.Consistent(planner);
    }
}

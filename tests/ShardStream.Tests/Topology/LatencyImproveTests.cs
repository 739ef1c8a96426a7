using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>
/// <see cref="Planner.ImproveLatency"/>: a leaf whose path is much worse than a free slot elsewhere
/// moves there, at most as many per call as asked, and then stays (no oscillation).
/// </summary>
public sealed class LatencyImproveTests
{
    private static NetworkCoordinate At(double x, double y = 0, double height = 1) => new(x, y, height, 0.1);

    [Fact]
    public void A_leaf_placed_by_a_wrong_coordinate_moves_once_the_coordinate_is_corrected_and_then_stays()
    {
        // Binary: the source (origin) feeds A (x = -100) and B (x = +100); C joins believing it is
        // at x = -110, so it goes under A. Its coordinate is then corrected to x = +110.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var a = planner.Join(2, At(-100));
        var b = planner.Join(2, At(100));
        var c = planner.Join(2, At(-110));
        Assert.Equal(a, planner.ParentOf(c, 0));
        Assert.Empty(planner.ImproveLatency(4));

        planner.SetCoordinate(c, At(110));
        var moves = planner.ImproveLatency(4);
        Assert.Equal([new Reattachment(c, 0, b)], moves);
        Assert.Equal(b, planner.ParentOf(c, 0));
        PlanAssert.Consistent(planner);
        PlanAssert.MovesMatchPlan(planner, moves);

        // Estimates that wobble a little do not move it back, however often it is asked.
        for (var i = 0; i < 200; i++)
        {
            planner.SetCoordinate(c, At(110 + (i % 2 == 0 ? 5 : -5)));
            Assert.Empty(planner.ImproveLatency(4));
        }
    }

    [Fact]
    public void A_small_gain_moves_nobody()
    {
        // C sits under A; B would be 10 ms closer in all, less than the 20 ms (and 20%) needed.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var a = planner.Join(2, At(-10));
        planner.Join(2, At(10));
        var c = planner.Join(2, At(-12));
        Assert.Equal(a, planner.ParentOf(c, 0));
        planner.SetCoordinate(c, At(8));
        Assert.Empty(planner.ImproveLatency(4));
    }

    [Fact]
    public void Moves_per_call_are_capped_misplaced_leaves_move_and_then_it_stops()
    {
        // Striped K = 2: peers in two clusters 300 ms apart; every third joins with the other
        // cluster's coordinate, then gets its true one: those are far from their parents.
        var planner = new Planner(new PlannerOptions(2, TopologyKind.Striped, 3, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var peers = new List<(int Id, NetworkCoordinate Truth)>();
        for (var i = 0; i < 60; i++)
        {
            var x = i % 4 < 2 ? -150 - i : 150 + i;
            peers.Add((planner.Join(3, At(i % 3 == 0 ? -x : x)), At(x)));
        }

        foreach (var (id, truth) in peers)
        {
            planner.SetCoordinate(id, truth);
        }

        var total = 0;
        var calls = 0;
        for (; calls < 400; calls++)
        {
            var moves = planner.ImproveLatency(2);
            Assert.True(moves.Count <= 2, $"{moves.Count} moves in one call");
            PlanAssert.MovesMatchPlan(planner, moves);
            PlanAssert.Consistent(planner);
            PlanAssert.NearBestDepth(planner, $"call {calls}");
            total += moves.Count;
        }

        Assert.True(total > 0, "no leaf moved");
        // Bounded: every move gains 20 ms or more on a finite set of leaf edges with rests between.
        Assert.True(total <= 2 * 60, $"{total} moves for 60 peers in 2 shards");
        // And it settles: nothing more to do.
        Assert.Empty(planner.ImproveLatency(2));
    }
}

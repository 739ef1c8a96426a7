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

    /// <summary>C under A by a coordinate that said x = -110, corrected to x = +110 (as above): the estimates say "move to B".</summary>
    private static (Planner Planner, int A, int B, int C) MisplacedLeaf()
    {
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var a = planner.Join(2, At(-100));
        var b = planner.Join(2, At(100));
        var c = planner.Join(2, At(-110));
        Assert.Equal(a, planner.ParentOf(c, 0));
        planner.SetCoordinate(c, At(110));
        return (planner, a, b, c);
    }

    [Fact]
    public void With_measured_rtts_a_leaf_moves_only_when_its_measured_rtt_to_its_parent_says_the_edge_is_long()
    {
        // The estimates say C is 212 ms from A and 12 ms from B. C measured 3 ms to A (its least
        // sample; the smoothed RTT of a loaded start-up may be far higher): no move, however often.
        var (planner, a, b, c) = MisplacedLeaf();
        var rtt = new MeasuredEdgeRtt(SmoothedMs: 400, MinMs: 3, Samples: 50);
        for (var i = 0; i < 50; i++)
        {
            Assert.Empty(planner.ImproveLatency(4, (peer, parent) => peer == c && parent == a ? rtt : null));
        }

        // Not measured (yet): no move either.
        Assert.Empty(planner.ImproveLatency(4, (_, _) => null));
        // Measured long, but with too few samples (a start-up's): no move.
        rtt = new MeasuredEdgeRtt(220, 210, Planner.ImproveMinSamples - 1);
        Assert.Empty(planner.ImproveLatency(4, (peer, parent) => peer == c && parent == a ? rtt : null));
        // Measured long, enough samples: it moves to B.
        rtt = rtt with { Samples = Planner.ImproveMinSamples };
        var moves = planner.ImproveLatency(4, (peer, parent) => peer == c && parent == a ? rtt : null);
        Assert.Equal([new Reattachment(c, 0, b)], moves);
        PlanAssert.Consistent(planner);
        PlanAssert.MovesMatchPlan(planner, moves);
    }

    [Fact]
    public void With_measured_rtts_an_edge_only_a_little_longer_than_the_estimate_to_the_new_parent_moves_nobody()
    {
        // C measured 30 ms to A; the estimate to B is 12 ms: 18 ms less, under the 20 ms margin.
        var (planner, a, _, c) = MisplacedLeaf();
        var rtt = new MeasuredEdgeRtt(30, 30, 100);
        Assert.Empty(planner.ImproveLatency(4, (peer, parent) => peer == c && parent == a ? rtt : null));
    }

    [Fact]
    public void With_measured_rtts_an_unsure_coordinate_moves_nobody()
    {
        // C measured 210 ms to A, but its coordinate's error is 0.6: the 12 ms to B is not believed.
        var (planner, a, b, c) = MisplacedLeaf();
        planner.SetCoordinate(c, At(110) with { Error = Planner.ImproveMaxError + 0.1 });
        var rtt = new MeasuredEdgeRtt(210, 210, 100);
        Assert.Empty(planner.ImproveLatency(4, (peer, parent) => peer == c && parent == a ? rtt : null));
        planner.SetCoordinate(c, At(110) with { Error = Planner.ImproveMaxError });
        Assert.Equal([new Reattachment(c, 0, b)], planner.ImproveLatency(4, (peer, parent) => peer == c && parent == a ? rtt : null));
    }

    [Fact]
    public void With_measured_rtts_a_leaf_does_not_move_back_to_a_former_parent_it_measured_far()
    {
        // C moved from A to B (it measured A at 210 ms). Then it measures B at 200 ms, but the
        // estimates still say A is near (a coordinate wrong for A): its 210 ms to A, measured
        // before, is what counts, and it stays. Without that measurement it would move back.
        var (planner, a, b, c) = MisplacedLeaf();
        var toA = new MeasuredEdgeRtt(210, 210, 100);
        Assert.Equal([new Reattachment(c, 0, b)], planner.ImproveLatency(4, (peer, parent) => peer == c && parent == a ? toA : null));
        planner.SetCoordinate(c, At(-110));
        var toB = new MeasuredEdgeRtt(200, 200, 100);
        for (var i = 0; i < 2 * Planner.ImproveRest; i++)
        {
            Assert.Empty(planner.ImproveLatency(4, (peer, parent) => peer != c ? null : parent == a ? toA : parent == b ? toB : null));
        }

        Assert.Equal([new Reattachment(c, 0, a)], planner.ImproveLatency(4, (peer, parent) => peer == c && parent == b ? toB : null));
    }
}

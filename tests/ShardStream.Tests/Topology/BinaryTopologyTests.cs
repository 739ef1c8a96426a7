using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

public sealed class BinaryTopologyTests
{
    private static Planner Build(int peers)
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        for (var i = 0; i < peers; i++)
        {
            planner.Join(2);
        }

        return planner;
    }

    [Fact]
    public void Binary_tree_depth_for_N_peers_is_ceil_log2_N_plus_2_minus_1()
    {
        for (var n = 1; n <= 40; n++)
        {
            var planner = Build(n);
            var expected = (int)Math.Ceiling(Math.Log2(n + 2)) - 1;
            Assert.Equal(expected, planner.MaxDepth(0));
        }
    }

    [Fact]
    public void Binary_nodes_never_send_more_than_two_streams()
    {
        for (var n = 1; n <= 40; n++)
        {
            var planner = Build(n);
            PlanAssert.Consistent(planner);
            Assert.All(planner.Peers.Append(Planner.Source), node => Assert.True(planner.UsedUnits(node) <= 2));
        }
    }

    [Fact]
    public void Binary_fills_each_level_before_the_next()
    {
        var planner = Build(30);
        for (var d = 1; d < planner.MaxDepth(0); d++)
        {
            Assert.Equal(1 << d, planner.Peers.Count(p => planner.DepthOf(p, 0) == d));
        }
    }

    [Fact]
    public void Binary_pure_viewers_are_leaves()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        var viewers = Enumerable.Range(0, 10).Select(i => planner.Join(i % 2 == 0 ? 0 : 2)).Where(id => planner.Budget(id) == 0).ToList();
        Assert.All(viewers, v => Assert.Empty(planner.ChildrenOf(v, 0)));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Binary_uploader_pushes_a_shallow_viewer_down_and_reports_the_move()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        var viewer1 = planner.Join(0);
        var viewer2 = planner.Join(0);
        var uploader = planner.Join(2);

        Assert.Equal(1, planner.DepthOf(uploader, 0));
        Assert.Single(planner.LastJoinMoves);
        var move = planner.LastJoinMoves[0];
        Assert.Equal(uploader, move.NewParent);
        Assert.Contains(move.Peer, new[] { viewer1, viewer2 });
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Join_throws_placement_exception_when_no_slot_is_left_and_leaves_the_plan_unchanged()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        planner.Join(0);
        planner.Join(0);

        var error = Assert.Throws<PlacementException>(() => planner.Join(0));
        Assert.Contains("No capacity", error.Message);
        Assert.Equal(2, planner.PeerCount);
        Assert.Equal(3, planner.Join(2)); // the failed join consumed no id
    }
}

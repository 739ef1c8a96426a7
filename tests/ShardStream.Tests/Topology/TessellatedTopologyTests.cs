using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

public sealed class TessellatedTopologyTests
{
    // Peers per layer of the seed's tessellation: x1, x2, x1.5 repeating from the source.
    private static readonly int[] Layers = [1, 2, 3, 3, 6, 9, 9, 18, 27];

    private static Planner Build(int peers)
    {
        var planner = new Planner(PlannerOptions.Default(2, TopologyKind.Tessellated));
        for (var i = 0; i < peers; i++)
        {
            planner.Join(3);
        }

        return planner;
    }

    private static int ExpectedMaxDepth(int peers)
    {
        var depth = 0;
        for (var total = 0; total < peers; depth++)
        {
            total += Layers[depth];
        }

        return depth;
    }

    [Fact]
    public void Tessellated_layers_for_40_peers_are_1_2_3_3_6_9_9_then_7()
    {
        var planner = Build(40);
        var counts = planner.Peers.GroupBy(p => PlanAssert.NodeDepth(planner, p))
            .OrderBy(g => g.Key).Select(g => g.Count()).ToArray();
        Assert.Equal(new[] { 1, 2, 3, 3, 6, 9, 9, 7 }, counts);
    }

    [Fact]
    public void Tessellated_max_depth_follows_the_layer_sequence_for_every_N_up_to_40()
    {
        for (var n = 1; n <= 40; n++)
        {
            var planner = Build(n);
            var deepest = planner.Peers.Max(p => PlanAssert.NodeDepth(planner, p));
            Assert.Equal(ExpectedMaxDepth(n), deepest);
            Assert.Equal(deepest, Math.Max(planner.MaxDepth(0), planner.MaxDepth(1)));
        }
    }

    [Fact]
    public void Tessellated_nodes_send_at_most_three_half_streams()
    {
        for (var n = 1; n <= 40; n++)
        {
            var planner = Build(n);
            PlanAssert.Consistent(planner);
            Assert.All(planner.Peers.Append(Planner.Source), node => Assert.True(planner.UsedUnits(node) <= 3));
        }
    }

    [Fact]
    public void Tessellated_full_nodes_send_exactly_three_half_streams()
    {
        var planner = Build(40);
        var layer4 = planner.Peers.Where(p => PlanAssert.NodeDepth(planner, p) <= 4).ToList();
        Assert.All(layer4.Append(Planner.Source), node => Assert.Equal(3, planner.UsedUnits(node)));
    }

    [Fact]
    public void Tessellated_some_peers_have_two_distinct_parents()
    {
        var planner = Build(40);
        var split = planner.Peers.Count(p => planner.ParentOf(p, 0) != planner.ParentOf(p, 1));
        Assert.True(split >= 2);
    }

    [Fact]
    public void Tessellated_first_block_matches_the_seed_diagram()
    {
        var planner = Build(6);
        const int c = Planner.Source;
        (int Shard0, int Shard1)[] expected =
        [
            (c, c), // P1: both shards from the coordinator
            (1, 1), // P2: both from P1
            (c, 1), // P3: one half from the coordinator, one from P1
            (2, 2), // P4: both from P2
            (2, 3), // P5: one half from P2, one from P3
            (3, 3), // P6: both from P3
        ];
        for (var p = 1; p <= 6; p++)
        {
            Assert.Equal(expected[p - 1], (planner.ParentOf(p, 0), planner.ParentOf(p, 1)));
        }
    }

    [Fact]
    public void Tessellated_viewer_ends_the_exact_pattern_but_keeps_the_plan_sound()
    {
        var planner = Build(20);
        Assert.True(planner.IsExactPattern);
        planner.Join(0);
        Assert.False(planner.IsExactPattern);
        Assert.Empty(planner.LastJoinMoves); // the tessellation is not re-sorted into the best split
        for (var i = 0; i < 30; i++)
        {
            planner.Join(i % 3 == 0 ? 0 : 3);
        }

        PlanAssert.Consistent(planner);
        PlanAssert.NearTessellationOrBest(planner, "after 30 mixed joins");
    }
}

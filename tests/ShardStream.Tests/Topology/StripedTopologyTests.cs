using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

public sealed class StripedTopologyTests
{
    [Theory]
    [InlineData(4, 5)]
    [InlineData(8, 10)]
    [InlineData(16, 20)]
    public void Striped_bootstrap_with_source_budget_K_plus_1_admits_every_peer(int k, int budget)
    {
        var planner = new Planner(PlannerOptions.Default(k, TopologyKind.Striped));
        for (var n = 1; n <= 3 * k; n++)
        {
            planner.Join(budget);
            PlanAssert.Consistent(planner);
        }

        Assert.True(planner.UsedUnits(Planner.Source) <= k + 1);
    }

    [Theory]
    [InlineData(4, 5)]
    [InlineData(8, 10)]
    [InlineData(16, 20)]
    public void Striped_peers_forward_only_their_home_shard_once_every_tree_has_home_peers(int k, int budget)
    {
        var planner = new Planner(PlannerOptions.Default(k, TopologyKind.Striped));
        for (var n = 1; n <= 300; n++)
        {
            planner.Join(budget);
            // Until about 4K joins a tree can fill up before its next home peer arrives (upload
            // 1.25 leaves 25% spare); fostering bridges that, then it is gone for good.
            if (n >= 5 * k)
            {
                Assert.Equal(0, planner.FosteredEdges);
            }
        }

        PlanAssert.Consistent(planner);
        foreach (var peer in planner.Peers)
        {
            for (var s = 0; s < k; s++)
            {
                if (s != planner.HomeShard(peer))
                {
                    Assert.Empty(planner.ChildrenOf(peer, s));
                }
            }
        }
    }

    [Theory]
    [InlineData(4, 10)]
    [InlineData(8, 20)]
    [InlineData(16, 40)]
    public void A_viewer_that_joins_first_does_not_lock_uploaders_out(int k, int budget)
    {
        // The source's K + 1 slots: the first viewer takes the only one of K - 1 trees; an uploader
        // then finds no free slot and no foster parent there. It fosters itself in those trees (a
        // unit of its own budget each, taking the viewer's place), so it gets in, and viewers after it.
        var planner = new Planner(PlannerOptions.Default(k, TopologyKind.Striped));
        const int viewers = 1;
        planner.Join(0);

        var uploader = planner.Join(budget);
        PlanAssert.Consistent(planner);
        Assert.True(planner.UsedUnits(uploader) <= budget);

        // Its budget carries about budget / K more viewers (one slot in every tree each).
        for (var i = 0; i < budget / k - 1; i++)
        {
            planner.Join(0);
            PlanAssert.Consistent(planner);
        }

        Assert.Equal(viewers + budget / k, planner.PeerCount);
    }

    [Fact]
    public void Striped_homes_are_dealt_evenly_over_the_trees()
    {
        var planner = new Planner(PlannerOptions.Default(8, TopologyKind.Striped));
        for (var n = 0; n < 803; n++)
        {
            planner.Join(10);
        }

        var perHome = planner.Peers.GroupBy(planner.HomeShard).Select(g => g.Count()).ToArray();
        Assert.Equal(8, perHome.Length);
        Assert.True(perHome.Max() - perHome.Min() <= 1);
    }

    [Fact]
    public void Striped_pure_viewers_have_no_home_and_are_leaves_everywhere()
    {
        var planner = new Planner(PlannerOptions.Default(4, TopologyKind.Striped));
        var viewers = new List<int>();
        for (var n = 0; n < 200; n++)
        {
            // A third are viewers, so uploaders bring 2x (8 of K = 4 shard-streams) to keep the
            // overlay feasible; the first joiner uploads, or the source's one slot per tree fills.
            var id = planner.Join(n % 3 == 1 ? 0 : 8);
            if (n % 3 == 1)
            {
                viewers.Add(id);
            }
        }

        Assert.All(viewers, v =>
        {
            Assert.Equal(-1, planner.HomeShard(v));
            Assert.All(Enumerable.Range(0, 4), s => Assert.Empty(planner.ChildrenOf(v, s)));
        });
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Striped_tree_depth_is_within_one_of_the_best_for_its_home_budgets()
    {
        var planner = new Planner(PlannerOptions.Default(8, TopologyKind.Striped));
        for (var n = 0; n < 5000; n++)
        {
            planner.Join(10);
        }

        PlanAssert.NearBestDepth(planner, "after 5000 joins");
        Assert.All(Enumerable.Range(0, 8), s => Assert.True(planner.MaxDepth(s) <= 5));
    }

    [Fact]
    public void Striped_leave_of_an_interior_peer_hands_its_children_to_one_promoted_peer_without_deepening()
    {
        var planner = new Planner(PlannerOptions.Default(4, TopologyKind.Striped));
        for (var n = 0; n < 400; n++)
        {
            planner.Join(5);
        }

        var interior = planner.Peers.First(p => planner.DepthOf(p, planner.HomeShard(p)) == 2 && planner.ChildrenOf(p, planner.HomeShard(p)).Any());
        var home = planner.HomeShard(interior);
        var children = planner.ChildrenOf(interior, home).ToList();
        var depthBefore = planner.MaxDepth(home);

        var moves = planner.Leave([interior]);

        // The replacement is a deep home peer able to take all the children (maybe one of them);
        // if it fed leaves, they move to free slots; a re-homing may add two moves.
        var replacement = moves[0].Peer;
        Assert.Equal(2, planner.DepthOf(replacement, home));
        Assert.All(children.Where(c => c != replacement), c => Assert.Equal(replacement, planner.ParentOf(c, home)));
        Assert.True(planner.MaxDepth(home) <= depthBefore);
        Assert.True(moves.Count <= (2 * (children.Count + 1)) + 2, $"{moves.Count} moves");
        PlanAssert.Consistent(planner);
    }
}

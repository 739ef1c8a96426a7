using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary><see cref="Planner.Demote"/>: a peer that cannot carry its children becomes a leaf everywhere.</summary>
[RunsLong(135)]
public sealed class PlannerDemoteTests
{
    [Fact]
    public void A_demoted_interior_peer_feeds_nobody_and_its_children_are_served_elsewhere()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        for (var i = 0; i < 100; i++)
        {
            planner.Join(2);
        }

        var slow = planner.Peers.First(p => planner.DepthOf(p, 0) == 1);
        var below = PlanAssert.Subtree(planner, slow, 0);
        var children = planner.ChildrenOf(slow, 0).ToList();
        Assert.True(below.Count > 40);

        var moves = planner.Demote(slow);

        Assert.Equal(0, planner.Budget(slow));
        Assert.Equal(0, planner.UsedUnits(slow));
        Assert.Empty(planner.ChildrenOf(slow, 0));
        Assert.Equal(100, planner.PeerCount);
        Assert.All(below, p => Assert.NotEqual(slow, planner.ParentOf(p, 0)));
        PlanAssert.MovesMatchPlan(planner, moves);
        // Every former child of the slow peer is told where to go now.
        Assert.All(children, c => Assert.Contains(moves, m => m.Peer == c && m.Shard == 0));
        PlanAssert.Consistent(planner);
        PlanAssert.NearBestDepth(planner, "after the demotion");
    }

    [Fact]
    public void A_leaf_that_keeps_its_parent_gets_no_move()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        planner.Join(2);
        var leaf = planner.Join(2);

        var moves = planner.Demote(leaf);

        Assert.Empty(moves);
        Assert.Equal(0, planner.Budget(leaf));
        Assert.Equal(Planner.Source, planner.ParentOf(leaf, 0));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Demoting_twice_the_source_or_a_stranger_changes_nothing_or_throws()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        var a = planner.Join(2);
        planner.Join(2);
        planner.Join(2);

        planner.Demote(a);
        Assert.Empty(planner.Demote(a));
        Assert.Empty(planner.Demote(99));
        Assert.Throws<ArgumentException>(() => planner.Demote(Planner.Source));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void A_demoted_peer_with_no_free_slot_left_for_a_leaf_is_evicted()
    {
        // Source budget 1: peer 1 (budget 1) feeds viewer 2. Once 1 is a viewer too, only one of
        // the two fits: its child takes the source's slot, and 1 is evicted.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1));
        var relay = planner.Join(1);
        var viewer = planner.Join(0);

        var moves = planner.Demote(relay);

        Assert.Equal([new Reattachment(viewer, 0, Planner.Source), new Reattachment(relay, 0, Planner.None)], moves);
        Assert.False(planner.Contains(relay));
        PlanAssert.Consistent(planner);
    }

    public static TheoryData<TopologyKind, int, int> Policies => new()
    {
        { TopologyKind.Binary, 1, 1 },
        { TopologyKind.Binary, 1, 2 },
        { TopologyKind.Tessellated, 2, 3 },
        { TopologyKind.Tessellated, 2, 4 },
        { TopologyKind.Striped, 3, 5 },
        { TopologyKind.Striped, 4, 6 },
        { TopologyKind.Striped, 8, 7 },
    };

    [Theory]
    [MemberData(nameof(Policies))]
    public void Random_joins_leaves_and_demotions_keep_budgets_and_trees_without_cycles(TopologyKind topology, int k, int seed)
    {
        var random = new Random(seed);
        var planner = new Planner(PlannerOptions.Default(k, topology) with { Seed = seed });
        var demoted = new HashSet<int>();
        for (var step = 0; step < 1500; step++)
        {
            var roll = random.NextDouble();
            if (planner.PeerCount < 8 || roll < 0.6)
            {
                try
                {
                    planner.Join(k + 1);
                }
                catch (PlacementException)
                {
                    // Cannot happen with full budgets, but a viewer-heavy plan may run out.
                }
            }
            else if (roll < 0.8)
            {
                var peers = planner.Peers.ToList();
                var slow = peers[random.Next(peers.Count)];
                var moves = planner.Demote(slow);
                if (planner.Contains(slow))
                {
                    demoted.Add(slow);
                    Assert.Equal(0, planner.Budget(slow));
                    for (var s = 0; s < k; s++)
                    {
                        Assert.Empty(planner.ChildrenOf(slow, s));
                    }
                }

                PlanAssert.MovesMatchPlan(planner, moves);
            }
            else
            {
                var peers = planner.Peers.ToList();
                planner.Leave([peers[random.Next(peers.Count)]]);
            }

            PlanAssert.Consistent(planner);
            foreach (var d in demoted.Where(planner.Contains))
            {
                Assert.Equal(0, planner.UsedUnits(d));
            }
        }

        Assert.NotEmpty(demoted);
    }

    [Fact]
    public void Demoting_the_last_relay_with_spare_room_is_refused_because_it_would_evict()
    {
        // Binary, source budget 2: source -> 1, 2; 1 -> 3. Peers 2 and 3 become leaves while
        // there is room; then peer 1 (feeding 3) has no one left to take its children.
        Planner Build()
        {
            var p = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
            for (var i = 0; i < 3; i++)
            {
                p.Join(2);
            }

            return p;
        }

        var planner = Build();
        var relays = planner.Peers.Where(p => planner.UsedUnits(p) > 0).ToList();
        var leaves = planner.Peers.Except(relays).ToList();
        foreach (var leaf in leaves)
        {
            Assert.True(planner.CanDemoteWithoutEviction(leaf));
            Assert.DoesNotContain(planner.Demote(leaf), m => m.NewParent == Planner.None);
        }

        var last = Assert.Single(relays);
        Assert.False(planner.CanDemoteWithoutEviction(last));

        // The check is not over-cautious here: the same demotion on the same plan evicts.
        var moves = planner.Demote(last);
        Assert.True(moves.Any(m => m.NewParent == Planner.None) || planner.PeerCount < 3, "the refused demotion would have carried everyone");
    }

    [Theory]
    [InlineData(1, TopologyKind.Binary, 11)]
    [InlineData(2, TopologyKind.Tessellated, 12)]
    [InlineData(4, TopologyKind.Striped, 13)]
    [InlineData(8, TopologyKind.Striped, 14)]
    public void A_demotion_the_check_allows_never_evicts_anyone(int k, TopologyKind topology, int seed)
    {
        var random = new Random(seed);
        var planner = new Planner(PlannerOptions.Default(k, topology));
        int allowed = 0, refused = 0;
        for (var step = 0; step < 1200; step++)
        {
            if (planner.PeerCount < 10 || random.NextDouble() < 0.5)
            {
                try
                {
                    // Striped trees at (K+1)/K have no room for joining viewers: there only demotions make them.
                    planner.Join(topology != TopologyKind.Striped && random.Next(4) == 0 ? 0 : k + 1);
                }
                catch (PlacementException)
                {
                    // A viewer-heavy plan may run out of room for another viewer.
                }

                continue;
            }

            var peers = planner.Peers.ToList();
            var slow = peers[random.Next(peers.Count)];
            if (!planner.CanDemoteWithoutEviction(slow))
            {
                refused++;
                continue;
            }

            allowed++;
            int before = planner.PeerCount;
            var moves = planner.Demote(slow);
            Assert.DoesNotContain(moves, m => m.NewParent == Planner.None);
            Assert.Equal(before, planner.PeerCount);
            PlanAssert.Consistent(planner);
        }

        Assert.True(allowed > 10, $"only {allowed} demotions were allowed");
        Assert.True(refused > 0, "the plan never ran short of room: the check was never exercised");
    }

    [Theory]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    public void In_a_small_striped_overlay_the_only_home_peer_of_a_stripe_can_be_demoted_and_its_children_are_fostered(int peers)
    {
        // K = 4, upload 1.25 (budget 5 each): with few viewers a stripe has one home peer, the only
        // peer that may forward its shard. The check counted only home peers and the source as room
        // for its children, so it was never demoted, though the repair fosters them.
        Planner Build()
        {
            var p = new Planner(PlannerOptions.Default(4, TopologyKind.Striped));
            for (var i = 0; i < peers; i++)
            {
                p.Join(5);
            }

            return p;
        }

        var only = 0;
        foreach (var peer in Build().Peers)
        {
            var planner = Build();
            var home = planner.HomeShard(peer);
            if (home >= 0 && planner.ChildrenOf(peer, home).Any() && planner.Peers.Count(p => planner.HomeShard(p) == home) == 1)
            {
                only++;
                Assert.True(planner.CanDemoteWithoutEviction(peer), $"peer {peer}, the only home peer of stripe {home}, cannot be demoted");
            }
            else if (!planner.CanDemoteWithoutEviction(peer))
            {
                continue;
            }

            // Whatever the check allows evicts nobody.
            var moves = planner.Demote(peer);
            Assert.DoesNotContain(moves, m => m.NewParent == Planner.None);
            Assert.Equal(peers, planner.PeerCount);
            Assert.Equal(0, planner.UsedUnits(peer));
            PlanAssert.Consistent(planner);
        }

        Assert.True(only > 0, "no stripe had a single home peer with children");
    }
}

using ShardStream.Simulation;
using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

[RunsLong(115)]
public sealed class LatencyAwarePlannerTests
{
    private static NetworkCoordinate At(double x, double y = 0, double height = 1) => new(x, y, height, 0.1);

    [Fact]
    public void A_joiner_takes_the_free_slot_nearest_to_it_not_the_first_one()
    {
        // Binary: the source (at the origin) feeds A (x = -100) and B (x = +100).
        var aware = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        var blind = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        aware.SetCoordinate(Planner.Source, At(0));
        foreach (var planner in new[] { aware, blind })
        {
            planner.Join(2, At(-100));
            planner.Join(2, At(100));
        }

        // A joiner at x = +110 in both plans: the blind rule takes A's slot (first come), the aware one B's.
        var awareId = aware.Join(2, At(110));
        var blindId = blind.Join(2, At(110));
        Assert.Equal(1, blind.ParentOf(blindId, 0));
        Assert.Equal(2, aware.ParentOf(awareId, 0));
        PlanAssert.Consistent(aware);
    }

    [Fact]
    public void Nodes_of_a_top_level_swap_parents_when_both_edges_get_shorter()
    {
        // Binary: the source (origin) feeds A (x = -100) and B (x = +100); a1 and b1 join next to
        // them and are placed under them. Then their coordinates turn out to be the other way
        // round (a1 is really at +101, b1 at -101). Later joiners are far from everyone (never
        // better for a top place). At the join that sorts the tree (peer id Planner.SortEvery),
        // a1 and b1 swap parents: two Moves, same depths, nobody over budget.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var a = planner.Join(2, At(-100));
        var b = planner.Join(2, At(100));
        var a1 = planner.Join(2, At(-101));
        var b1 = planner.Join(2, At(101));
        Assert.Equal(a, planner.ParentOf(a1, 0));
        Assert.Equal(b, planner.ParentOf(b1, 0));
        planner.SetCoordinate(a1, At(101));
        planner.SetCoordinate(b1, At(-101));

        while (planner.NextPeerId < Planner.SortEvery)
        {
            planner.Join(2, At(0, 1000 + planner.NextPeerId));
            Assert.Equal(a, planner.ParentOf(a1, 0)); // nothing sorts before its turn
        }

        var last = planner.Join(2, At(0, 2000));
        Assert.Equal(Planner.SortEvery, last);
        Assert.Equal(b, planner.ParentOf(a1, 0));
        Assert.Equal(a, planner.ParentOf(b1, 0));
        Assert.Contains(new Reattachment(a1, 0, b), planner.LastJoinMoves);
        Assert.Contains(new Reattachment(b1, 0, a), planner.LastJoinMoves);
        Assert.Equal(2, planner.DepthOf(a1, 0));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void A_joiner_much_nearer_the_source_takes_a_first_level_place_from_a_far_peer()
    {
        // Binary: the source (origin) has two slots, taken by A (x = 200) and B (x = 150). C joins
        // next to the source: it is placed under one of them, then takes A's place (the farthest
        // from the source), and A hangs where C was. Nobody changes depth but the two.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var a = planner.Join(2, At(200), new Dictionary<int, double> { [Planner.Source] = 202 });
        var b = planner.Join(2, At(150), new Dictionary<int, double> { [Planner.Source] = 152 });
        var c = planner.Join(2, At(5), new Dictionary<int, double> { [Planner.Source] = 7 });
        Assert.Equal(Planner.Source, planner.ParentOf(c, 0));
        Assert.Equal(Planner.Source, planner.ParentOf(b, 0));
        Assert.Equal(2, planner.DepthOf(a, 0));
        Assert.Contains(planner.LastJoinMoves, m => m.Peer == a);
        PlanAssert.Consistent(planner);

        // A joiner only a little nearer than the farthest (B, 150 ms) takes nothing.
        var d = planner.Join(2, At(140));
        Assert.Equal(2, planner.DepthOf(d, 0));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void On_one_host_equal_rtts_to_the_source_reshuffle_nothing()
    {
        // Every node on one host (loopback): each joiner measures 0.2 ms to the source, while the
        // coordinates, still settling, put every peer about 22 ms from it. Binary, one slot each
        // (--upload 1): the plan is the chain source -> 1 -> 2 -> ... in join order. A joiner's
        // measured RTT is compared with the others' measured RTTs, not with their estimates, so
        // no joiner takes the place of an earlier one (which would cost Moves for nothing).
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var measured = new Dictionary<int, double> { [Planner.Source] = 0.2 };
        var chain = new List<int> { Planner.Source };
        for (var i = 0; i < 6; i++)
        {
            chain.Add(planner.Join(1, At(20 + (0.5 * i), i % 2), measured));
            Assert.Empty(planner.LastJoinMoves);
        }

        for (var i = 1; i < chain.Count; i++)
        {
            Assert.Equal(chain[i - 1], planner.ParentOf(chain[i], 0));
        }

        // A peer with no recorded RTT (an older one, or one whose control link has not measured yet)
        // is not compared with a joiner's measurement: 0.2 ms measured against its 22 ms estimated
        // would be a difference that is not there.
        var unmeasured = planner.Join(1, At(20.5));
        var next = planner.Join(1, At(20.5, 1), measured);
        Assert.Empty(planner.LastJoinMoves);
        Assert.Equal(unmeasured, planner.ParentOf(next, 0));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void A_top_peer_whose_join_time_rtt_was_inflated_keeps_its_place_once_a_later_rtt_is_recorded()
    {
        // One host again: peer 1 measured 30 ms to the source when it joined (a load spike), then
        // the coordinator's control link to it recorded 0.2 ms (SetSourceRtt). A joiner that
        // measured 0.2 ms takes nothing from it; without the record it would take peer 1's place.
        foreach (var recorded in new[] { false, true })
        {
            var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1, LatencyAware: true));
            planner.SetCoordinate(Planner.Source, At(0));
            var first = planner.Join(1, At(20), new Dictionary<int, double> { [Planner.Source] = 30 });
            if (recorded)
            {
                planner.SetSourceRtt(first, 0.2);
            }

            var joiner = planner.Join(1, At(20, 1), new Dictionary<int, double> { [Planner.Source] = 0.2 });
            Assert.Equal(recorded ? first : Planner.Source, planner.ParentOf(joiner, 0));
            PlanAssert.Consistent(planner);
        }
    }

    [Fact]
    public void A_leaf_pushed_down_by_a_far_joiner_takes_the_free_slot_nearest_it()
    {
        // Binary, source at the origin with two slots: viewer V (x = -100, budget 0) and relay R1
        // (x = -100) take them. Relay R2 (x = +100) then takes V's place, as a stronger node does;
        // the blind rule hangs V under R2, across the plane; the aware one puts it under R1.
        var aware = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        var blind = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        aware.SetCoordinate(Planner.Source, At(0, 300));
        foreach (var planner in new[] { aware, blind })
        {
            var v = planner.Join(0, At(-100));
            var r1 = planner.Join(2, At(-100, 1));
            var r2 = planner.Join(2, At(100));
            Assert.Equal(Planner.Source, planner.ParentOf(r2, 0));
            Assert.Equal(2, planner.DepthOf(v, 0));
            Assert.Equal(planner == aware ? r1 : r2, planner.ParentOf(v, 0));
            PlanAssert.Consistent(planner);
        }
    }

    [Fact]
    public void Landmarks_are_peers_with_a_budget_only()
    {
        // A peer placed with budget 0 (the coordinator's dial-back probe could not reach it) is no
        // landmark, and a landmark made a leaf (others could not connect to it) stops being one.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var unreachable = planner.Join(0, At(-10));
        var a = planner.Join(2, At(10));
        var b = planner.Join(2, At(20));
        Assert.Equal([Planner.Source, a, b], planner.Landmarks(8).Order());
        planner.Demote(a);
        Assert.Equal([Planner.Source, b], planner.Landmarks(8).Order());
        Assert.DoesNotContain(unreachable, planner.Landmarks(8));
    }

    [Fact]
    public void Orphans_of_a_repair_take_the_free_slot_nearest_them()
    {
        // Binary, source at the origin feeding A (x = -100) and B (x = +100). Viewers V1 (-101)
        // and V2 (+101) join under A and B; W joins with a coordinate near A and is placed there,
        // then its coordinate moves to +102 (it is really near B). A leaves: no leaf has the
        // capacity to take A's place (only viewers are leaves), so its orphans go to free slots:
        // A's old slot at the source and B's. The blind rule gives the first orphan the
        // shallowest (the source's); by latency, W takes B's (its path: 50 ms + 1) and V1 the
        // source's (50.5 ms, against 150 through B), whatever the order.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var a = planner.Join(2, At(-100));
        var b = planner.Join(2, At(100));
        var v1 = planner.Join(0, At(-101));
        var v2 = planner.Join(0, At(101));
        var w = planner.Join(0, At(-102));
        Assert.Equal([a, a, b], new[] { planner.ParentOf(v1, 0), planner.ParentOf(w, 0), planner.ParentOf(v2, 0) });
        planner.SetCoordinate(w, At(102));

        var moves = planner.Leave([a]);
        PlanAssert.MovesMatchPlan(planner, moves);
        PlanAssert.Consistent(planner);
        Assert.Equal(b, planner.ParentOf(w, 0));
        Assert.Equal(Planner.Source, planner.ParentOf(v1, 0));
    }

    [Fact]
    public void The_whole_path_counts_not_only_the_last_edge()
    {
        // Source (budget 1) -> A at x = 0 -> B at x = 200 and D at x = -50; C at x = 400 joins under B.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0, 0, 0.1));
        var a = planner.Join(2, At(0, 0, 0.1));
        var b = planner.Join(2, At(200, 0, 0.1));
        var d = planner.Join(2, At(-50, 0, 0.1));
        var c = planner.Join(2, At(400, 0, 0.1));
        Assert.Equal(a, planner.ParentOf(b, 0));
        Assert.Equal(a, planner.ParentOf(d, 0));
        Assert.Equal(b, planner.ParentOf(c, 0));

        // A joiner at x = 390 is nearest to C (10 ms), but the path through C costs 100 + 100 + 5 ms
        // one way, through B 100 + 95: the aware plan takes B.
        var joiner = planner.Join(2, At(390, 0, 0.1));
        Assert.Equal(b, planner.ParentOf(joiner, 0));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void Below_the_top_two_levels_a_viewer_hangs_under_a_relay_of_its_own_neighbourhood()
    {
        // Binary, source (origin, budget 1) -> A (0) -> B (+300) and C (-300). D (300, 10) joins
        // under B and E, F (-300, +-10) under C; L joins at (300, -10), under B, then turns out to
        // be at (-60, 0). A viewer V at (-60, 5) joins: the shortest estimated path is through E
        // or F (1 + 151 + 6 + 121 = 279 ms one way, against 333 + 3.5 through L), but E and F
        // are 240 ms away in the plane, in another region; L is its neighbour. Below the top two
        // levels a parent of the own neighbourhood wins: one crossing between regions per path,
        // near the top, and not a detour out and back for V and everyone who will hang below it.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var a = planner.Join(2, At(0));
        var b = planner.Join(2, At(300));
        var c = planner.Join(2, At(-300));
        var d = planner.Join(2, At(300, 10));
        var e = planner.Join(2, At(-300, 10));
        var f = planner.Join(2, At(-300, -10));
        var l = planner.Join(2, At(300, -10));
        Assert.Equal([a, a, b, c, c, b], new[] { b, c, d, e, f, l }.Select(n => planner.ParentOf(n, 0)));
        planner.SetCoordinate(l, At(-60));

        var v = planner.Join(0, At(-60, 5));
        Assert.Equal(l, planner.ParentOf(v, 0));
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void A_joiner_near_the_source_takes_a_far_peers_place_in_the_source_neighbourhoods_subtree()
    {
        // Binary, source (origin, budget 1): levels 1 to 3 (7 peers) and 7 of the 8 places of
        // level 4 are taken by peers within 10 ms of the source; the 8th by F, 300 ms away, under
        // one of them. A joiner J next to the source is placed deeper; it then takes F's place at
        // level 4 (Planner.ColumnDepth), and F takes J's: the source's neighbourhood keeps its
        // subtree for its own relays, whose children are its own leaves.
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 1, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var near = new List<int>();
        for (var i = 0; i < 7; i++)
        {
            near.Add(planner.Join(2, At(i, 2)));
        }

        var level4 = new List<int>();
        for (var i = 0; i < 7; i++)
        {
            level4.Add(planner.Join(2, At(i, -2)));
        }

        var far = planner.Join(2, At(300));
        Assert.All(near, n => Assert.InRange(planner.DepthOf(n, 0), 1, 3));
        Assert.All(level4.Append(far), n => Assert.Equal(4, planner.DepthOf(n, 0)));
        var farParent = planner.ParentOf(far, 0);

        // Joiners next to the source, with capacity, go to level 5 and below; within one refresh
        // of the summary of the top (LatencyPlacement.TopRefresh, 64 joins) one of them takes F's
        // place and F takes its place below.
        var joiners = new List<int>();
        while (planner.DepthOf(far, 0) == 4 && joiners.Count < LatencyPlacement.TopRefresh)
        {
            joiners.Add(planner.Join(2, At(1, 1 + (0.01 * joiners.Count))));
            PlanAssert.MovesMatchPlan(planner, planner.LastJoinMoves);
        }

        var taker = joiners[^1];
        Assert.Equal(4, planner.DepthOf(taker, 0));
        Assert.Equal(farParent, planner.ParentOf(taker, 0));
        Assert.True(planner.DepthOf(far, 0) > 4);
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void A_measured_rtt_wins_over_the_coordinates()
    {
        var planner = new Planner(new PlannerOptions(1, TopologyKind.Binary, 2, LatencyAware: true));
        planner.SetCoordinate(Planner.Source, At(0));
        var a = planner.Join(2, At(-100));
        var b = planner.Join(2, At(100));

        // The coordinates say B is 10 ms away and A 210; the joiner measured A at 5 ms, B at 300.
        var joiner = planner.Join(2, At(110), new Dictionary<int, double> { [a] = 5, [b] = 300 });
        Assert.Equal(a, planner.ParentOf(joiner, 0));
    }

    [Fact]
    public void Without_a_coordinate_an_aware_plan_places_exactly_as_the_blind_one()
    {
        var aware = new Planner(new PlannerOptions(8, TopologyKind.Striped, 9, LatencyAware: true));
        var blind = new Planner(new PlannerOptions(8, TopologyKind.Striped, 9));
        var random = new Random(3);
        for (var i = 0; i < 500; i++)
        {
            var budget = random.Next(3) == 0 ? 0 : 10;
            var refusals = 0;
            foreach (var planner in new[] { aware, blind })
            {
                try
                {
                    planner.Join(budget);
                }
                catch (PlacementException)
                {
                    refusals++;
                }
            }

            Assert.NotEqual(1, refusals); // refused by both or by neither
        }

        Assert.True(blind.PeerCount > 300);

        foreach (var peer in blind.Peers)
        {
            for (var s = 0; s < 8; s++)
            {
                Assert.Equal(blind.ParentOf(peer, s), aware.ParentOf(peer, s));
            }
        }
    }

    [Theory]
    [InlineData(TopologyKind.Striped, 8, 10, 1)]
    [InlineData(TopologyKind.Striped, 8, 10, 5)]
    [InlineData(TopologyKind.Striped, 8, 10, 7)]
    [InlineData(TopologyKind.Striped, 4, 5, 2)]
    [InlineData(TopologyKind.Binary, 1, 2, 3)]
    [InlineData(TopologyKind.Tessellated, 2, 3, 4)]
    public void Random_joins_and_leaves_keep_an_aware_plan_consistent_within_budgets_and_the_depth_bound(TopologyKind topology, int k, int budget, int seed)
    {
        // Coordinates from the world model through the simulator's joiner: pings, Vivaldi, probes.
        var planner = new Planner(new PlannerOptions(k, topology, k + 1, seed, LatencyAware: true));
        var model = new WorldLatencyModel(seed);
        var joiner = new LatencyJoiner(planner, model, seed);
        var random = new Random(seed);
        var live = new List<int>();
        for (var step = 0; step < 1200; step++)
        {
            if (live.Count > 10 && random.NextDouble() < 0.15)
            {
                var gone = new List<int>();
                var count = random.Next(3) == 0 ? random.Next(2, 6) : 1;
                for (var j = 0; j < count && live.Count > 0; j++)
                {
                    var at = random.Next(live.Count);
                    gone.Add(live[at]);
                    live.RemoveAt(at);
                }

                var moves = planner.Leave(gone);
                PlanAssert.MovesMatchPlan(planner, moves);
                live.RemoveAll(p => !planner.Contains(p));
            }
            else
            {
                try
                {
                    live.Add(joiner.Join(step > 100 && random.Next(4) == 0 && topology == TopologyKind.Striped ? 0 : budget));
                    PlanAssert.MovesMatchPlan(planner, planner.LastJoinMoves);
                }
                catch (PlacementException)
                {
                    // A viewer before enough uploaders: refused, and the plan is unchanged.
                }
            }

            // Moves for a shorter path between the joins and leaves (Planner.ImproveLatency).
            if (step % 10 == 0)
            {
                PlanAssert.MovesMatchPlan(planner, planner.ImproveLatency(4));
            }

            PlanAssert.Consistent(planner);
            if (topology != TopologyKind.Tessellated)
            {
                PlanAssert.NearBestDepth(planner, $"step {step}");
            }
        }

        Assert.True(planner.PeerCount > 100, $"only {planner.PeerCount} peers");
        Assert.True(joiner.MaxPingsPerJoin <= LatencyJoiner.MaxPings);
    }
}

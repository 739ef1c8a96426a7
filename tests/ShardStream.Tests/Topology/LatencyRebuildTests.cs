using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>
/// <see cref="Planner.RebuildLatency"/>: the rebuild by regions is carried out as Moves within the
/// cap of each call, the plan stays consistent (budgets, one parent per tree, no cycle) after every
/// call, and once done the peers' delays from the source are lower and the source's region is fed
/// from within itself.
/// </summary>
public sealed class LatencyRebuildTests
{
    // Four regions of a plane (ms): the source's at the origin, the others 150-290 ms away; peers
    // within 20 ms of their hub, access links of 1-30 ms. The RTT is the coordinates' own estimate,
    // so every measurement agrees with the coordinates.
    private static readonly (double X, double Y)[] Hubs = [(0, 0), (150, 0), (0, 200), (250, 150)];

    private static NetworkCoordinate PeerAt(Random random, int region)
    {
        var r = 20 * Math.Sqrt(random.NextDouble());
        var a = 2 * Math.PI * random.NextDouble();
        return new(Hubs[region].X + (r * Math.Cos(a)), Hubs[region].Y + (r * Math.Sin(a)), 1 + (29 * random.NextDouble()), 0.1);
    }

    private static (Planner Planner, Dictionary<int, int> Region) Build(int peers, int seed)
    {
        var planner = new Planner(new PlannerOptions(4, TopologyKind.Striped, 5, Seed: seed, LatencyAware: true));
        var source = new NetworkCoordinate(0, 0, 1, 0.1);
        planner.SetCoordinate(Planner.Source, source);
        var random = new Random(seed);
        var region = new Dictionary<int, int>();
        for (var i = 0; i < peers; i++)
        {
            var r = random.Next(Hubs.Length);
            var c = PeerAt(random, r);
            var id = planner.Join(5, c, new Dictionary<int, double> { [Planner.Source] = c.EstimateRtt(source) });
            region[id] = r;
        }

        return (planner, region);
    }

    private static MeasuredEdgeRtt? Measured(Planner planner, int peer, int parent)
    {
        var rtt = planner.CoordinateOf(peer).EstimateRtt(planner.CoordinateOf(parent));
        return new MeasuredEdgeRtt(rtt, rtt, 10);
    }

    /// <summary>Mean over peers of the delay from the source in its slowest tree (half the RTT of every edge on the path).</summary>
    private static double MeanSlowestDelay(Planner planner)
    {
        double sum = 0;
        foreach (var peer in planner.Peers)
        {
            double worst = 0;
            for (var s = 0; s < planner.ShardCount; s++)
            {
                double delay = 0;
                for (var node = peer; node != Planner.Source; node = planner.ParentOf(node, s))
                {
                    delay += planner.CoordinateOf(node).EstimateRtt(planner.CoordinateOf(planner.ParentOf(node, s))) / 2;
                }

                worst = Math.Max(worst, delay);
            }

            sum += worst;
        }

        return sum / planner.PeerCount;
    }

    /// <summary>
    /// The moves' cap with the rebuild on (the CLI's default since 2026-12-06): the floor below the
    /// fewest peers for a rebuild, 1% of the peers above it when that is more, never more than the
    /// floor when moving is off.
    /// </summary>
    [Theory]
    [InlineData(4, 0.01, 999, 1000, 4)]
    [InlineData(4, 0.01, 1000, 1000, 10)]
    [InlineData(4, 0.01, 100_000, 1000, 1000)]
    [InlineData(4, 0.01, 1_000_000, 1000, 10_000)]
    [InlineData(4, 0.01, 300, 20, 4)]
    [InlineData(4, 0.01, 401, 20, 5)]
    [InlineData(4, 0, 100_000, 1000, 4)]
    [InlineData(0, 0.01, 100_000, 1000, 0)]
    [InlineData(2000, 0.01, 100_000, 1000, 2000)]
    public void The_moves_cap_is_a_share_of_the_peers_from_the_fewest_for_a_rebuild(int floor, double share, int peers, int minPeers, int expected) =>
        Assert.Equal(expected, Planner.MovesCap(floor, share, peers, minPeers));

    /// <summary>
    /// A rebuild under way keeps the share when the live peers fall under the fewest for a rebuild:
    /// at the floor, the rest of a rebuild begun at 1,000 peers crawled at 4 moves a second.
    /// </summary>
    [Theory]
    [InlineData(999, true, 10)]
    [InlineData(999, false, 4)]
    [InlineData(500, true, 5)]
    public void A_rebuild_under_way_keeps_the_share_under_the_fewest_peers(int peers, bool rebuilding, int expected) =>
        Assert.Equal(expected, Planner.MovesCap(4, 0.01, peers, 1000, rebuilding));

    [Fact]
    public void A_rebuild_moves_within_the_cap_keeps_the_plan_consistent_and_lowers_the_delays()
    {
        var (planner, region) = Build(1500, seed: 3);
        var before = MeanSlowestDelay(planner);
        var maxDepthBefore = Enumerable.Range(0, planner.ShardCount).Max(planner.MaxDepth);
        var calls = 0;
        long moved = 0;
        do
        {
            var moves = planner.RebuildLatency(40, (p, q) => Measured(planner, p, q));
            Assert.InRange(moves.Count, 0, 40);
            moved += moves.Count;
            PlanAssert.MovesMatchPlan(planner, moves);
            if (calls % 25 == 0)
            {
                PlanAssert.Consistent(planner);
            }
        }
        while (++calls < 5000 && (planner.RebuildsPlanned == 0 || planner.RebuildInProgress));

        Assert.Equal(1, planner.RebuildsPlanned);
        PlanAssert.Consistent(planner);
        Assert.True(moved > 1500, $"{moved} edges moved");
        var after = MeanSlowestDelay(planner);
        Assert.True(after < before, $"mean slowest-tree delay {after:F1} ms after, {before:F1} ms before");
        Assert.InRange(Enumerable.Range(0, planner.ShardCount).Max(planner.MaxDepth), 1, maxDepthBefore + 1);

        // The series ends (at most RebuildSeries rebuilds, or the first not worth it), and without
        // joins or leaves no other starts: the plan stops moving.
        // (A rebuild here is about 9,000 moves, 230 calls of 40, then a pause: 3,000 calls hold a series.)
        for (var i = 0; i < 3000; i++)
        {
            var moves = planner.RebuildLatency(40, (p, q) => Measured(planner, p, q));
            PlanAssert.MovesMatchPlan(planner, moves);
        }

        PlanAssert.Consistent(planner);
        Assert.InRange(planner.RebuildsPlanned, 1, Planner.RebuildSeries);
        Assert.False(planner.RebuildInProgress);
        for (var i = 0; i < 3 * Planner.RebuildPauseCalls; i++)
        {
            Assert.Empty(planner.RebuildLatency(40, (p, q) => Measured(planner, p, q)));
        }

        Assert.True(MeanSlowestDelay(planner) < before);

        // The source's region is fed from within itself: below the first relay of every tree, no
        // peer of it hangs under a peer of another region.
        for (var s = 0; s < planner.ShardCount; s++)
        {
            foreach (var peer in planner.Peers.Where(p => region[p] == 0))
            {
                var parent = planner.ParentOf(peer, s);
                Assert.True(parent == Planner.Source || region[parent] == 0, $"shard {s}: peer {peer} of the source's region under {parent} of region {region.GetValueOrDefault(parent, -1)}");
            }
        }
    }

    [Fact]
    public void Moves_planned_on_a_snapshot_skip_what_joins_leaves_and_demotions_changed_meanwhile()
    {
        // The coordinator plans outside its lock: between the snapshot and the carrying out, peers
        // join and leave. Here a tenth of the peers leave, most of them new parents the plan counts
        // on; 150 join; relays the plan counts on become viewers. The carrying out must skip every
        // move that no longer fits, and keep the plan within budgets, one parent a tree, no cycle.
        var (planner, _) = Build(1500, seed: 5);
        var snapshot = planner.TakeRebuildSnapshot((p, q) => Measured(planner, p, q));
        Assert.NotNull(snapshot);
        Assert.True(planner.RebuildBeingPlanned);
        Assert.Null(planner.TakeRebuildSnapshot((p, q) => Measured(planner, p, q))); // one planning at a time
        Assert.Empty(planner.RebuildLatency(40, (p, q) => Measured(planner, p, q)));
        var plan = snapshot.Plan();
        Assert.NotNull(plan);
        Assert.True(plan.WorthCarryingOut);

        var random = new Random(5);
        var targets = Enumerable.Range(0, planner.ShardCount)
            .SelectMany(s => snapshot.Peers.Select(p => plan.Target[s][p]))
            .Where(t => t != Planner.Source && t != Planner.None)
            .Distinct()
            .OrderBy(_ => random.Next())
            .ToList();
        var leaving = targets.Take(100).Concat(snapshot.Peers.OrderBy(_ => random.Next()).Take(50)).Distinct().ToList();
        foreach (var group in leaving.Chunk(10))
        {
            PlanAssert.MovesMatchPlan(planner, planner.Leave(group));
        }

        var demoted = targets.Skip(100).Where(planner.Contains).Where(planner.CanDemoteWithoutEviction).Take(20).ToList();
        foreach (var peer in demoted)
        {
            PlanAssert.MovesMatchPlan(planner, planner.Demote(peer));
        }

        var source = planner.CoordinateOf(Planner.Source);
        for (var i = 0; i < 150; i++)
        {
            var c = PeerAt(random, random.Next(Hubs.Length));
            planner.Join(5, c, new Dictionary<int, double> { [Planner.Source] = c.EstimateRtt(source) });
        }

        PlanAssert.Consistent(planner);
        Assert.True(demoted.Count > 0, "no relay the plan counts on could be made a viewer");
        var stale = Enumerable.Range(0, planner.ShardCount).Sum(s => snapshot.Peers.Count(p => plan.Target[s][p] > 0 && !planner.Contains(plan.Target[s][p])));
        Assert.True(stale > 300, $"only {stale} planned edges lead to a peer that left");

        planner.AdoptRebuild(snapshot, plan);
        Assert.False(planner.RebuildBeingPlanned);
        Assert.Throws<InvalidOperationException>(() => planner.AdoptRebuild(snapshot, plan));
        var calls = 0;
        long moved = 0;
        while (planner.RebuildInProgress && ++calls < 5000)
        {
            var moves = planner.CarryOutRebuild(40);
            Assert.InRange(moves.Count, 0, 40);
            moved += moves.Count;
            PlanAssert.MovesMatchPlan(planner, moves);
            Assert.All(moves, m => Assert.True(planner.Contains(m.Peer) && (m.NewParent == Planner.Source || planner.Contains(m.NewParent)), $"{m} names a peer that left"));
            if (calls % 10 == 0)
            {
                PlanAssert.Consistent(planner);
            }
        }

        Assert.False(planner.RebuildInProgress, $"the rebuild still runs after {calls} calls");
        Assert.Equal(1, planner.RebuildsDone);
        Assert.True(moved > 1000, $"{moved} edges moved");
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void A_cancelled_planning_throws_and_its_snapshot_goes_back_as_one_that_gave_no_plan()
    {
        // The coordinator's stop cancels a planning under way; the snapshot it planned on comes back
        // with no plan, as after a planning that threw (Coordinator.ImproveLatencyAsync).
        var (planner, _) = Build(1500, seed: 3);
        var snapshot = planner.TakeRebuildSnapshot((p, q) => Measured(planner, p, q));
        Assert.NotNull(snapshot);
        using var stop = new CancellationTokenSource();
        stop.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => snapshot.Plan(stop.Token));

        planner.AdoptRebuild(snapshot, null);
        Assert.False(planner.RebuildBeingPlanned);
        Assert.False(planner.RebuildInProgress);
        Assert.Equal(0, planner.RebuildsPlanned);
        PlanAssert.Consistent(planner);

        // The series ended with it; without joins or leaves, no other planning starts.
        Assert.Null(planner.TakeRebuildSnapshot((p, q) => Measured(planner, p, q)));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void A_rebuild_under_a_cap_of_fewer_than_three_moves_a_call_still_ends(int cap)
    {
        // --latency-moves 1 or 2: a step onto a full new parent takes 2 or 3 moves (a swap), more
        // than a call's cap: the calls before it save their moves for it, so the moves stay within
        // the cap over the calls, and one call makes at most the cap and one step (an exchange of
        // places: 2 and the two nodes' caps, here 5 each). The same plan rebuilt 40 moves a call
        // ends in about 230 calls (see above).
        var (planner, _) = Build(1500, seed: 3);
        var calls = 0;
        long moved = 0;
        do
        {
            var moves = planner.RebuildLatency(cap, (p, q) => Measured(planner, p, q));
            Assert.InRange(moves.Count, 0, cap + 12);
            moved += moves.Count;
            Assert.InRange(moved, 0, (long)cap * (calls + 1));
            PlanAssert.MovesMatchPlan(planner, moves);
        }
        while (++calls < 40_000 && (planner.RebuildsPlanned == 0 || planner.RebuildInProgress));

        Assert.False(planner.RebuildInProgress, $"the rebuild still runs after {calls} calls of {cap} move(s), {moved} moves");
        PlanAssert.Consistent(planner);
    }

    [Fact]
    public void A_rebuild_under_way_when_the_peers_fall_below_the_fewest_for_one_still_ends_and_leaf_moves_go_on()
    {
        // Planning needs RebuildMinPeers; a rebuild already under way when leaves take the overlay
        // below that is carried out to its end (what no longer fits is skipped). Before, it stood
        // still while the count stayed below: RebuildInProgress held, and the coordinator, which
        // makes leaf moves only with no rebuild under way, moved nothing more.
        var (planner, _) = Build(1500, seed: 3);
        var calls = 0;
        while (++calls < 1000 && (!planner.RebuildInProgress || planner.RebuildsPlanned == 0))
        {
            planner.RebuildLatency(40, (p, q) => Measured(planner, p, q));
        }

        Assert.True(planner.RebuildInProgress, "no rebuild under way");
        for (var i = 0; i < 5; i++)
        {
            PlanAssert.MovesMatchPlan(planner, planner.RebuildLatency(40, (p, q) => Measured(planner, p, q)));
        }

        Assert.True(planner.RebuildInProgress, "the rebuild ended in 5 calls");
        var leaving = planner.Peers.Where(p => p % 2 == 0).Take(planner.PeerCount - Planner.RebuildMinPeers + 1).ToList();
        planner.Leave(leaving);
        Assert.Equal(Planner.RebuildMinPeers - 1, planner.PeerCount);
        PlanAssert.Consistent(planner);

        calls = 0;
        long moved = 0;
        while (++calls < 5000 && planner.RebuildInProgress)
        {
            var moves = planner.RebuildLatency(40, (p, q) => Measured(planner, p, q));
            Assert.InRange(moves.Count, 0, 40);
            moved += moves.Count;
            PlanAssert.MovesMatchPlan(planner, moves);
        }

        Assert.False(planner.RebuildInProgress, $"the rebuild still under way after {calls} calls below {Planner.RebuildMinPeers} peers ({moved} moves)");
        Assert.True(moved > 0, "the rest of the rebuild moved nothing");
        PlanAssert.Consistent(planner);
        Assert.Equal(1, planner.RebuildsDone);

        // No new planning below the fewest peers.
        for (var i = 0; i < 3 * Planner.RebuildPauseCalls; i++)
        {
            Assert.Empty(planner.RebuildLatency(40, (p, q) => Measured(planner, p, q)));
        }

        Assert.Equal(1, planner.RebuildsPlanned);
    }

    [Fact]
    public void A_plan_with_a_tree_no_peer_relays_in_gives_no_rebuild_plan()
    {
        // CoordinatorOptions takes a fewest-peers-for-a-rebuild of 1: two peers in four striped
        // trees leave two trees with no relay (the source feeds both peers there). Planning threw
        // IndexOutOfRangeException (logged as event 1687 by a coordinator); it gives no plan.
        var planner = new Planner(new PlannerOptions(4, TopologyKind.Striped, 8, Seed: 1, LatencyAware: true) { RebuildMinPeers = 1 });
        var source = new NetworkCoordinate(0, 0, 1, 0.1);
        planner.SetCoordinate(Planner.Source, source);
        var random = new Random(1);
        for (var i = 0; i < 2; i++)
        {
            var c = PeerAt(random, i);
            planner.Join(5, c, new Dictionary<int, double> { [Planner.Source] = c.EstimateRtt(source) });
        }

        var snapshot = planner.TakeRebuildSnapshot((p, q) => Measured(planner, p, q));
        Assert.NotNull(snapshot);
        Assert.Contains(Enumerable.Range(0, planner.ShardCount), s => planner.Peers.All(p => planner.ParentOf(p, s) == Planner.Source));
        Assert.Null(snapshot.Plan());

        planner.AdoptRebuild(snapshot, null);
        Assert.False(planner.RebuildInProgress);
        Assert.Empty(planner.RebuildLatency(40, (p, q) => Measured(planner, p, q)));
        PlanAssert.Consistent(planner);
    }

    /// <summary>Mean over peers of the delay from the source in its slowest tree, each tree's parents given by <paramref name="parentOf"/>, every RTT from <paramref name="truth"/>.</summary>
    private static double MeanSlowestDelay(Planner planner, Dictionary<int, NetworkCoordinate> truth, Func<int, int, int> parentOf) =>
        planner.Peers.Average(peer => Enumerable.Range(0, planner.ShardCount).Max(s =>
        {
            double delay = 0;
            for (var node = peer; node != Planner.Source; node = parentOf(node, s))
            {
                delay += truth[node].EstimateRtt(truth[parentOf(node, s)]) / 2;
            }

            return delay;
        }));

    [Fact]
    public void A_rebuild_planned_on_coordinates_inflated_since_the_last_is_not_carried_out_when_the_measured_rtts_say_it_is_worse()
    {
        // Real peers move their coordinates with every RTT sample, so under load their claims (the
        // plan's coordinates) drift farther between two rebuilds, while the parent links' RTTs they
        // report (the least sample) stay near the truth (docs/topology.md, "A rebuild planned right
        // after another"). Here the truth is the coordinates the peers joined with; a first rebuild
        // is carried out on them, then every peer's height grows by up to 600 ms and the next
        // rebuild is planned on that. The coordinates alone price the plan as it was with the
        // inflation of its many edges across the new clusters and from the source, the new plan,
        // which has few, with less, so it looked a gain; carried out, it is worse.
        var (planner, _) = Build(1500, seed: 3);
        var truth = planner.Peers.Append(Planner.Source).ToDictionary(p => p, planner.CoordinateOf);
        MeasuredEdgeRtt? Measured(int peer, int parent)
        {
            var rtt = truth[peer].EstimateRtt(truth[parent]);
            return new MeasuredEdgeRtt(rtt, rtt, 10);
        }

        var calls = 0;
        while (++calls < 2000 && planner.RebuildsDone == 0)
        {
            planner.RebuildLatency(1000, Measured);
        }

        Assert.Equal(1, planner.RebuildsDone);
        Assert.False(planner.RebuildInProgress);
        var random = new Random(7);
        foreach (var peer in planner.Peers)
        {
            var c = truth[peer];
            planner.SetCoordinate(peer, new NetworkCoordinate(c.X, c.Y, c.Height + (600 * random.NextDouble()), c.Error));
        }

        RebuildSnapshot? snapshot = null;
        for (var i = 0; i <= Planner.RebuildPauseCalls && snapshot is null; i++)
        {
            snapshot = planner.TakeRebuildSnapshot(Measured);
        }

        Assert.NotNull(snapshot);
        var plan = snapshot.Plan();
        Assert.NotNull(plan);
        var was = MeanSlowestDelay(planner, truth, planner.ParentOf);
        var planned = MeanSlowestDelay(planner, truth, (p, s) => plan.Target[s][p]);
        Assert.True(planned > was, $"the plan: {planned:F1} ms, as it was {was:F1} ms");
        Assert.True(plan.EstimatedAfterMs < plan.EstimatedBeforeMs * (1 - Planner.RebuildMinGainShare), $"from the coordinates {plan.EstimatedBeforeMs:F1} -> {plan.EstimatedAfterMs:F1} ms");
        Assert.False(plan.WorthCarryingOut, $"worth carrying out: {was:F1} -> {planned:F1} ms, estimated {plan.EstimatedBeforeMs:F1} -> {plan.EstimatedAfterMs:F1} ms");
        planner.AdoptRebuild(snapshot, plan);
        Assert.False(planner.RebuildInProgress);
    }

    [Theory]
    // The third planning of seed 1 at 100k peers (simulate --peers 100000 --shards 8 --upload 1.25
    // --latency world --improve-seconds 7200 --latency-moves 1000 --latency-rebuild): 1.4% from the
    // coordinates, 14% with the measured RTTs; carried out, the mean delay went 144.3 -> 139.8 ms
    // (3.1%) and the fourth rebuild took the mean RDP from 2.01 to 1.94. With 2% asked of the
    // coordinates too, the series ended there, at 2.05.
    [InlineData(139.22, 137.22, 144.25, 123.97, true)]
    // Its fourth: 1.9% and 7.8%.
    [InlineData(140.98, 138.37, 139.80, 128.94, true)]
    // Not worth it: the measured RTTs give under 2%, or the coordinates price it worse.
    [InlineData(140.0, 120.0, 140.0, 138.0, false)]
    [InlineData(140.0, 141.0, 140.0, 120.0, false)]
    // The inflated coordinates of the test above: a gain from them, worse with the measured RTTs.
    [InlineData(300.0, 250.0, 140.0, 226.7, false)]
    public void A_plan_is_carried_out_on_a_measured_gain_of_two_percent_that_the_coordinates_do_not_price_worse(double before, double after, double measuredBefore, double measuredAfter, bool worth) =>
        Assert.Equal(worth, RebuildSnapshot.IsWorthCarryingOut(before, after, measuredBefore, measuredAfter, Planner.RebuildMinGainShare));

    [Theory]
    // ci215 (LatencyRebuildOverlayTests, seed 1, 48 real peers at load 40-70): from the coordinates
    // 819.0 -> 802.4 ms, with the measured RTTs 319.0 -> 654.1 ms. The test asks for any plan to be
    // carried out (a share of -1); -1 allowed only twice the delay before, so it waited 2 minutes
    // for a rebuild that never came.
    [InlineData(819.0, 802.4, 319.0, 654.1)]
    [InlineData(100.0, 1000.0, 100.0, 1000.0)]
    [InlineData(100.0, 90.0, double.NaN, double.NaN)]
    public void A_share_of_minus_one_carries_out_any_plan(double before, double after, double measuredBefore, double measuredAfter) =>
        Assert.True(RebuildSnapshot.IsWorthCarryingOut(before, after, measuredBefore, measuredAfter, -1));

    [Fact]
    public void Small_or_latency_blind_plans_are_not_rebuilt()
    {
        var (small, _) = Build(Planner.RebuildMinPeers - 1, seed: 4);
        for (var i = 0; i < 100; i++)
        {
            Assert.Empty(small.RebuildLatency(100, (p, q) => Measured(small, p, q)));
        }

        Assert.Equal(0, small.RebuildsPlanned);
        var blind = new Planner(new PlannerOptions(4, TopologyKind.Striped, 5));
        for (var i = 0; i < Planner.RebuildMinPeers; i++)
        {
            blind.Join(5);
        }

        Assert.Empty(blind.RebuildLatency(100, (_, _) => null));
        Assert.Equal(0, blind.RebuildsPlanned);
    }
}

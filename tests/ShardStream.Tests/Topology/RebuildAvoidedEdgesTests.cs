using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>
/// A pair taken out of the plan (<see cref="Planner.DropEdge"/>: the child could not connect to the
/// parent, cut it off too often, or cut it off for a lag never made up) is never an edge again while
/// both are in the plan, the rebuild by regions included (<see cref="Planner.RebuildLatency"/>).
/// </summary>
public sealed class RebuildAvoidedEdgesTests
{
    private static readonly (double X, double Y)[] Hubs = [(0, 0), (150, 0), (0, 200), (250, 150)];

    [Fact]
    public void A_rebuild_never_puts_a_dropped_pair_back_together()
    {
        var planner = new Planner(new PlannerOptions(4, TopologyKind.Striped, 5, Seed: 3, LatencyAware: true));
        var source = new NetworkCoordinate(0, 0, 1, 0.1);
        planner.SetCoordinate(Planner.Source, source);
        var random = new Random(3);
        for (var i = 0; i < 1500; i++)
        {
            var hub = Hubs[random.Next(Hubs.Length)];
            var r = 20 * Math.Sqrt(random.NextDouble());
            var a = 2 * Math.PI * random.NextDouble();
            var c = new NetworkCoordinate(hub.X + (r * Math.Cos(a)), hub.Y + (r * Math.Sin(a)), 1 + (29 * random.NextDouble()), 0.1);
            planner.Join(5, c, new Dictionary<int, double> { [Planner.Source] = c.EstimateRtt(source) });
        }

        // Every tenth peer drops its parent in each shard where that parent is a peer.
        var dropped = new List<(int Child, int Parent)>();
        foreach (var peer in planner.Peers.Where(p => p % 10 == 0).ToList())
        {
            for (var s = 0; s < planner.ShardCount; s++)
            {
                var parent = planner.ParentOf(peer, s);
                if (parent == Planner.Source || parent < 0 || planner.DropEdge(peer, s).Count == 0)
                {
                    continue;
                }

                dropped.Add((peer, parent));
            }
        }

        Assert.NotEmpty(dropped);
        Assert.All(dropped, d => Assert.True(planner.IsAvoided(d.Child, d.Parent)));
        var calls = 0;
        do
        {
            planner.RebuildLatency(40, (p, q) =>
            {
                var rtt = planner.CoordinateOf(p).EstimateRtt(planner.CoordinateOf(q));
                return new MeasuredEdgeRtt(rtt, rtt, 10);
            });
            var back = dropped.Where(d => Enumerable.Range(0, planner.ShardCount).Any(s => planner.ParentOf(d.Child, s) == d.Parent)).ToList();
            if (back.Count > 0)
            {
                Assert.Fail($"after rebuild call {calls}: {back.Count} of {dropped.Count} dropped pairs are edges again, e.g. {back[0].Child} under {back[0].Parent}");
            }
        }
        while (++calls < 5000 && (planner.RebuildsPlanned == 0 || planner.RebuildInProgress));

        Assert.Equal(1, planner.RebuildsPlanned);
        PlanAssert.Consistent(planner);
    }
}

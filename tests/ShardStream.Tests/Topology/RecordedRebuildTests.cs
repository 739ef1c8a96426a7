using System.Text.Json;
using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>
/// <see cref="RebuildSnapshot.Plan"/> on snapshots recorded from real runs (Topology/Data: every
/// field the planning reads, as the coordinator copied it; -1 for a NaN RTT).
/// </summary>
public sealed class RecordedRebuildTests
{
    private static RebuildSnapshot Load(string name)
    {
        var d = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Topology", "Data", name))).RootElement;
        int[] Ints(JsonElement e) => [.. e.EnumerateArray().Select(x => x.GetInt32())];
        double[] Doubles(JsonElement e) => [.. e.EnumerateArray().Select(x => x.GetDouble())];
        NetworkCoordinate Coordinate(double[] c) => new(c[0], c[1], c[2], c[3]);
        double Rtt(double v) => v < 0 ? double.NaN : v;
        var peers = Ints(d.GetProperty("Peers"));
        var k = d.GetProperty("K").GetInt32();
        var snapshot = new RebuildSnapshot(k, d.GetProperty("NextId").GetInt32(), peers.Length, Coordinate(Doubles(d.GetProperty("Source"))), d.GetProperty("MinGainShare").GetDouble(), new RebuildLinks());
        peers.CopyTo(snapshot.Peers, 0);
        var coordinates = d.GetProperty("Coordinates").EnumerateArray().Select(Doubles).ToArray();
        var sourceRtt = Doubles(d.GetProperty("SourceRtt"));
        for (var i = 0; i < peers.Length; i++)
        {
            snapshot.Coordinates[i] = Coordinate(coordinates[i]);
            snapshot.SourceRtt[i] = Rtt(sourceRtt[i]);
        }

        Ints(d.GetProperty("Budget")).CopyTo(snapshot.Budget, 0);
        Ints(d.GetProperty("Home")).CopyTo(snapshot.Home, 0);
        Ints(d.GetProperty("SourceCap")).CopyTo(snapshot.SourceCap, 0);
        Ints(d.GetProperty("DepthBound")).CopyTo(snapshot.DepthBound, 0);
        var parent = d.GetProperty("Parent").EnumerateArray().Select(Ints).ToArray();
        var cap = d.GetProperty("Cap").EnumerateArray().Select(Ints).ToArray();
        var parentRtt = d.GetProperty("ParentRtt").EnumerateArray().Select(Doubles).ToArray();
        for (var s = 0; s < k; s++)
        {
            parent[s].CopyTo(snapshot.Parent[s], 0);
            cap[s].CopyTo(snapshot.Cap[s], 0);
            for (var i = 0; i < peers.Length; i++)
            {
                snapshot.ParentRtt[s][i] = (float)Rtt(parentRtt[s][i]);
            }
        }

        return snapshot;
    }

    /// <summary>
    /// LatencyRebuildOverlayTests, seed 1 (48 real peers, K = 4 striped, upload 1.25: the source's
    /// caps 2 1 1 1, the trees' depth bounds 4 5 5 5), one of ten runs on 2026-12-06: the
    /// construction put the members no slot of their cluster held under the first relay attached
    /// with a free slot, a deep one, and planned depths 5 4 4 4: deeper than the bound, so the plan
    /// was declined (event 1683 said "not worth carrying out"), and the bounded construction on the
    /// 12 clusters unmerged found no tree within it. With each under the shallowest relay with a
    /// free slot: 4 4 4 4.
    /// </summary>
    [Fact]
    public void A_small_striped_plan_puts_leftovers_high_enough_to_stay_within_its_depth_bound()
    {
        var snapshot = Load("rebuild-48-peers-striped-k4.json");
        Assert.Equal([2, 1, 1, 1], snapshot.SourceCap);
        Assert.Equal([4, 5, 5, 5], snapshot.DepthBound);

        var plan = snapshot.Plan();

        Assert.NotNull(plan);
        Assert.False(plan.DeeperThanBound, $"planned depths {string.Join(" ", plan.PlannedDepth)} against bounds {string.Join(" ", snapshot.DepthBound)}");
        Assert.True(plan.WorthCarryingOut, $"measured {plan.MeasuredBeforeMs:F1} -> {plan.MeasuredAfterMs:F1} ms");
    }
}

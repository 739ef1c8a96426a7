using ShardStream.Simulation;
using ShardStream.Topology;
using OverlaySimulation = ShardStream.Simulation.Simulation;

namespace ShardStream.Tests.Simulation;

public sealed class SimulationTests
{
    [Theory]
    [InlineData(TopologyKind.Binary, 1, 2.0)]
    [InlineData(TopologyKind.Tessellated, 2, 1.5)]
    [InlineData(TopologyKind.Striped, 8, 1.25)]
    public void Simulated_overlay_keeps_every_peer_within_budget_and_reports_its_depths(TopologyKind topology, int k, double upload)
    {
        var report = OverlaySimulation.Run(new SimulationOptions(3000, k, topology, upload));

        Assert.Equal(3000, report.PeerCount);
        Assert.Equal(0, report.PeersOverBudget);
        Assert.True(report.MaxPeerUpload <= report.PeerBudget);
        Assert.True(report.SourceUpload <= report.SourceBudget);
        Assert.Equal(k, report.Shards.Count);
        Assert.All(report.Shards, s => Assert.InRange(s.MeanDepth, 1, s.MaxDepth));
        Assert.True(report.JoinsPerSecond > 0);
    }

    [Fact]
    public void Binary_simulation_depth_matches_the_complete_tree()
    {
        var report = OverlaySimulation.Run(new SimulationOptions(1000, 1, TopologyKind.Binary, 2.0));
        Assert.Equal((int)Math.Ceiling(Math.Log2(1002)) - 1, report.Shards[0].MaxDepth);
    }

    [Fact]
    public void Upload_multiple_becomes_a_budget_in_shard_streams()
    {
        var options = new SimulationOptions(10, 8, TopologyKind.Striped, 1.25, SourceUpload: 2.0);
        Assert.Equal(10, options.PeerBudget);
        Assert.Equal(16, options.SourceBudget);
        Assert.Equal(9, (options with { SourceUpload = null }).SourceBudget);
    }

    [Theory]
    [InlineData(1.2, 4, 4)] // 4.8 shard-streams of upload: the fifth would go over it
    [InlineData(1.5, 2, 3)]
    [InlineData(1.99, 8, 15)]
    public void A_fractional_upload_gives_the_simulator_the_budget_a_node_gets(double upload, int k, int expected)
    {
        var options = new SimulationOptions(10, k, TopologyKind.Striped, upload, SourceUpload: upload);

        Assert.Equal(expected, options.PeerBudget);
        Assert.Equal(expected, options.SourceBudget);
        Assert.Equal(new ShardStream.Nodes.CoordinatorOptions { ShardCount = k, Upload = upload }.SourceBudget, options.SourceBudget);
    }

    [Theory]
    [InlineData(TopologyKind.Binary, 1, 2.0)]
    [InlineData(TopologyKind.Tessellated, 2, 1.5)]
    [InlineData(TopologyKind.Striped, 4, 1.25)]
    public void Branch_failure_of_a_tenth_is_repaired_within_one_level_of_the_best(TopologyKind topology, int k, double upload)
    {
        var report = OverlaySimulation.Run(new SimulationOptions(5000, k, topology, upload, Seed: 3, FailBranchFraction: 0.1));

        var failure = Assert.IsType<BranchFailureReport>(report.BranchFailure);
        Assert.InRange(failure.PeersFailed, 400, 600);
        Assert.Equal(0, failure.Evicted);
        Assert.True(failure.MaxDepthAfter <= failure.MaxDepthBefore);
        if (topology != TopologyKind.Tessellated)
        {
            Assert.True(failure.MaxDepthAfter <= failure.BestDepthAfter + 1);
        }
    }

    [Fact]
    public void Churn_leaves_a_fraction_of_the_joins_and_keeps_budgets()
    {
        var report = OverlaySimulation.Run(new SimulationOptions(4000, 4, TopologyKind.Striped, 1.25, Seed: 5, Churn: 0.25));

        Assert.InRange(report.Leaves, 800, 1200);
        Assert.Equal(4000 - report.Leaves - report.ChurnEvicted, report.PeerCount);
        Assert.True(report.ChurnEvicted <= 5, $"{report.ChurnEvicted} evicted"); // only while bootstrapping
        Assert.Equal(0, report.PeersOverBudget);
        Assert.All(report.Shards, s => Assert.True(s.MaxDepth <= s.BestDepth + 1));
    }
}

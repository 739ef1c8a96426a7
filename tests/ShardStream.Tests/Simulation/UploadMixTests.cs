using ShardStream.Simulation;
using ShardStream.Topology;
using OverlaySimulation = ShardStream.Simulation.Simulation;

namespace ShardStream.Tests.Simulation;

public sealed class UploadMixTests
{
    [Fact]
    public void A_mix_is_parsed_as_upload_fraction_pairs()
    {
        var mix = UploadMix.Parse("0:0.6, 2.5:0.4");

        Assert.Equal([new UploadClass(0, 0.6), new UploadClass(2.5, 0.4)], mix.Classes);
        Assert.Equal(1.0, mix.MeanUpload, 9);
        Assert.Equal("0:0.6,2.5:0.4", mix.ToString());
    }

    [Theory]
    [InlineData("0:0.6,2.5:0.3", "fractions sum to 0.9, not 1")]
    [InlineData("0:0.6,2.5:0.5", "fractions sum to 1.1, not 1")]
    [InlineData("0:0.6;2.5:0.4", "\"0:0.6;2.5:0.4\" is not upload:fraction")]
    [InlineData("2.5", "\"2.5\" is not upload:fraction")]
    [InlineData("a:1", "\"a:1\" is not upload:fraction")]
    [InlineData("", "\"\" is not upload:fraction")]
    [InlineData("-1:0.5,2:0.5", "upload -1 must be a finite multiple of the stream rate >= 0 (at most 1000000)")]
    [InlineData("1e12:1", "must be a finite multiple of the stream rate >= 0 (at most 1000000)")]
    [InlineData("1:0,2:1", "fraction 0 of upload 1 must be in (0, 1]")]
    [InlineData("1:1.5,2:-0.5", "fraction 1.5 of upload 1 must be in (0, 1]")]
    public void A_bad_mix_is_refused_with_the_reason(string text, string reason)
    {
        var error = Assert.Throws<ArgumentException>(() => UploadMix.Parse(text));
        Assert.Contains(reason, error.Message);
    }

    [Fact]
    public void Draws_follow_the_fractions_and_the_seed()
    {
        var mix = UploadMix.Parse("0:0.6,2.5:0.4");
        var random = new Random(7);
        var draws = Enumerable.Range(0, 10_000).Select(_ => mix.Draw(random)).ToList();

        Assert.All(draws, d => Assert.Contains(d, new[] { 0.0, 2.5 }));
        Assert.InRange(draws.Count(d => d == 0), 5800, 6200);
        var again = new Random(7);
        Assert.Equal(draws, Enumerable.Range(0, 10_000).Select(_ => mix.Draw(again)));
    }

    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    public void A_mix_whose_uploaders_cannot_carry_the_viewers_reports_evictions(int k)
    {
        // Mean upload 0.3x: the peers bring less than a third of what they take.
        var report = Run(k, "0:0.85,2:0.15", 2000);

        Assert.InRange(report.Evictions, 1000, 1800);
        Assert.Equal(report.Unplaced, report.Evictions);
        Assert.Equal(2000 - report.Unplaced, report.PeerCount);
        Assert.Equal(0, report.PeersOverBudget);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(16)]
    public void A_mix_with_enough_upload_carries_every_peer(int k)
    {
        // Mean upload 1.25x: 60% viewers, 40% uploading 3x.
        var report = Run(k, "0:0.6,3:0.4", 3000);

        Assert.Equal(0, report.Evictions);
        Assert.Equal(3000, report.PeerCount);
        Assert.Equal(0, report.PeersOverBudget);
        Assert.Equal(0, report.FosteredEdges);
        Assert.Equal(3000, report.BudgetMix.Sum(b => b.Peers));
        Assert.Equal([0, 3 * k], report.BudgetMix.Select(b => b.Budget));
        Assert.All(report.Shards, s => Assert.True(s.MaxDepth <= s.BestDepth + 1, $"shard {s.Shard}: depth {s.MaxDepth}, best {s.BestDepth}"));
    }

    private static SimulationReport Run(int k, string mix, int peers) =>
        OverlaySimulation.Run(new SimulationOptions(peers, k, TopologyKind.Striped, 1.25, Seed: 1, UploadMix: UploadMix.Parse(mix)));
}

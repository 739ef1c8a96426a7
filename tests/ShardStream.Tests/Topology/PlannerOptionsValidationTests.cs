using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

public sealed class PlannerOptionsValidationTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(17)]
    [InlineData(-1)]
    public void Shard_count_outside_1_to_16_is_rejected_with_its_range(int k)
    {
        var error = Assert.Throws<ArgumentException>(() => new Planner(new PlannerOptions(k, TopologyKind.Striped, 20)));
        Assert.Contains("ShardCount must be between 1 and 16", error.Message);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void Binary_with_more_than_one_shard_is_rejected_naming_the_topology(int k)
    {
        var error = Assert.Throws<ArgumentException>(() => new Planner(PlannerOptions.Default(k, TopologyKind.Binary)));
        Assert.Contains("binary topology needs ShardCount = 1", error.Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Tessellated_without_two_shards_is_rejected_naming_the_topology(int k)
    {
        var error = Assert.Throws<ArgumentException>(() => new Planner(PlannerOptions.Default(k, TopologyKind.Tessellated)));
        Assert.Contains("tessellated topology needs ShardCount = 2", error.Message);
    }

    [Fact]
    public void Source_budget_below_the_shard_count_is_rejected()
    {
        var error = Assert.Throws<ArgumentException>(() => new Planner(new PlannerOptions(8, TopologyKind.Striped, 7)));
        Assert.Contains("SourceBudget must be at least ShardCount", error.Message);
    }

    [Fact]
    public void Negative_join_budget_is_rejected()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        Assert.Throws<ArgumentOutOfRangeException>(() => planner.Join(-1));
    }

    [Fact]
    public void The_source_cannot_leave()
    {
        var planner = new Planner(PlannerOptions.Default(1, TopologyKind.Binary));
        planner.Join(2);
        var error = Assert.Throws<ArgumentException>(() => planner.Leave([Planner.Source]));
        Assert.Contains("source", error.Message);
    }
}

using ShardStream.Topology;

namespace ShardStream.Tests.Topology;

/// <summary>The forest's per-(node, shard) records (<c>ShardForest.Slot</c>, 64 bytes each).</summary>
public sealed class ShardForestRecordTests
{
    /// <summary>
    /// K = 16 (the most shards): the records of 2,097,152 node ids are 2 GiB, more than one byte
    /// array holds. Node ids are never reused, so a coordinator gets there after that many joins,
    /// rejoins included, however few peers are live: the growth that doubles from 1,048,576 ids
    /// must not throw. Costs little memory: only the records written are touched.
    /// </summary>
    [Fact]
    public void A_forest_of_sixteen_shards_holds_node_ids_past_two_million()
    {
        var forest = new ShardForest(16);
        forest.AddNode(0, 16);
        for (var s = 0; s < 16; s++)
        {
            forest.SetCap(0, s, 1);
        }

        const int node = (1 << 21) + 5;
        forest.AddNode(node, 0);
        forest.Attach(node, 0, 15);
        Assert.Equal(0, forest.Parent(node, 15));
        Assert.Equal(1, forest.Depth(node, 15));
        Assert.Equal(-1, forest.Parent(node, 14));
        Assert.False(forest.HasFreeSlot(0, 15));
        Assert.True(forest.HasFreeSlot(0, 14));
    }
}

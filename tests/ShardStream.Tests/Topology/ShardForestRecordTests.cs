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

    /// <summary>
    /// A latency-aware forest keeps every pair's open-at mark in one byte as well (what the zones'
    /// scans read), 255 standing for 255 or more: a node with a free slot at depth 300 of a chain
    /// is open at 300, not at the depth its mark would give cut to a byte (301 - 256 = 45, depth
    /// 44), and the full nodes above it are open nowhere.
    /// </summary>
    [Fact]
    public void A_node_deeper_than_a_byte_holds_is_open_at_its_own_depth()
    {
        var forest = new ShardForest(1);
        forest.Zones = new ZoneIndex(forest);
        forest.AddNode(0, 1);
        forest.SetCap(0, 0, 1);
        for (var node = 1; node <= 300; node++)
        {
            forest.AddNode(node, 1);
            forest.SetCap(node, 0, 1);
            forest.Attach(node, node - 1, 0);
        }

        Assert.Equal(300, forest.Depth(300, 0));
        Assert.True(forest.IsOpenAt(300, 0, 300));
        Assert.False(forest.IsOpenAt(300, 0, 44));
        Assert.False(forest.IsOpenAt(299, 0, 299));
        Assert.False(forest.IsOpenAt(254, 0, 254));
        Assert.False(forest.IsOpenAt(10, 0, 10));

        // A shallow node with room again is open at its depth, from the byte.
        forest.SetCap(10, 0, 2);
        Assert.True(forest.IsOpenAt(10, 0, 10));
        Assert.False(forest.IsOpenAt(10, 0, 11));
    }
}

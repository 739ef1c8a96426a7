using ShardStream.Nodes;

namespace ShardStream.Bench.Relay;

/// <summary>
/// The edges of an overlay as the coordinator placed them: per peer and shard, the parent (0 is the
/// coordinator) and the depth (hops from the coordinator). The baseline is built from the same shape.
/// </summary>
internal sealed record Shape(int ShardCount, int[] PeerIds, int[][] Parents, int[][] Depths)
{
    public int PeerCount => PeerIds.Length;

    public static Shape From(OverlaySnapshot snapshot)
    {
        var peers = snapshot.Nodes.Where(n => n.Id != 0).OrderBy(n => n.Id).ToList();
        return new Shape(
            snapshot.ShardCount,
            peers.Select(p => p.Id).ToArray(),
            peers.Select(p => p.Parents.ToArray()).ToArray(),
            peers.Select(p => p.Depths.ToArray()).ToArray());
    }

    /// <summary>The nodes (0 = coordinator, else a peer id) that <paramref name="node"/> sends <paramref name="shard"/> to.</summary>
    public IEnumerable<int> ChildrenOf(int node, int shard)
    {
        for (int i = 0; i < PeerIds.Length; i++)
            if (Parents[i][shard] == node) yield return PeerIds[i];
    }

    public int IndexOf(int peerId) => Array.IndexOf(PeerIds, peerId);

    public int MaxDepth => Depths.Max(d => d.Max());

    public bool SameEdges(Shape other) =>
        ShardCount == other.ShardCount && PeerIds.SequenceEqual(other.PeerIds)
        && Parents.Zip(other.Parents).All(p => p.First.SequenceEqual(p.Second));

    /// <summary>One line per shard: <c>shard 0: 0→1 0→2 1→3 …</c>.</summary>
    public string Describe()
    {
        var lines = new List<string>();
        for (int s = 0; s < ShardCount; s++)
        {
            var edges = Enumerable.Range(0, PeerCount).Select(i => $"{Parents[i][s]}→{PeerIds[i]}");
            lines.Add($"shard {s}: {string.Join(" ", edges)} (depths {string.Join(",", Depths.Select(d => d[s]))})");
        }
        return string.Join(Environment.NewLine, lines);
    }
}

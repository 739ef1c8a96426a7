using System.Text;
using ShardStream.Topology;

namespace ShardStream.Nodes;

/// <summary>A node of the overlay as the coordinator sees it. Node 0 is the coordinator.</summary>
/// <param name="Id">Node id.</param>
/// <param name="Address">Its listen address.</param>
/// <param name="Budget">Shard-streams it may send.</param>
/// <param name="Used">Shard-streams it sends.</param>
/// <param name="Parents">Per shard, the parent's id (-1 for the coordinator itself).</param>
/// <param name="Depths">Per shard, hops from the coordinator.</param>
public sealed record OverlayNode(int Id, string Address, int Budget, int Used, int[] Parents, int[] Depths);

/// <summary>The whole overlay at one moment.</summary>
public sealed record OverlaySnapshot(int ShardCount, TopologyKind Topology, IReadOnlyList<OverlayNode> Nodes)
{
    /// <summary>The deepest peer's hops from the coordinator, over all shards.</summary>
    public int MaxDepth => Nodes.Count <= 1 ? 0 : Nodes.Skip(1).Max(n => n.Depths.Max());

    /// <summary>A readable tree per shard, for the demo and logs.</summary>
    public string Render()
    {
        var text = new StringBuilder();
        for (int s = 0; s < ShardCount; s++)
        {
            if (ShardCount > 1) text.AppendLine($"shard {s}:");
            Render(text, s, 0, "", true, root: true);
        }
        return text.ToString();
    }

    private void Render(StringBuilder text, int shard, int id, string indent, bool last, bool root)
    {
        var node = Nodes.First(n => n.Id == id);
        string label = id == 0 ? "coordinator" : $"peer {id}";
        text.Append(indent).Append(root ? "" : last ? "└─ " : "├─ ").Append(label)
            .Append($"  (sends {node.Used}/{node.Budget} shard-streams)").AppendLine();
        var children = Nodes.Where(n => n.Id != 0 && n.Parents[shard] == id).ToList();
        for (int i = 0; i < children.Count; i++)
            Render(text, shard, children[i].Id, root ? indent : indent + (last ? "   " : "│  "), i == children.Count - 1, root: false);
    }
}

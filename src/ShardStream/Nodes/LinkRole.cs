namespace ShardStream.Nodes;

/// <summary>
/// What a link is to the node that owns it, set once its hello/welcome exchange has said so. The
/// hierarchy is closed (no role outside this file but the coordinator's own), so a link's owner
/// matches on a type instead of guessing what an <c>object</c> holds.
/// </summary>
internal abstract record LinkRole
{
    private protected LinkRole()
    {
    }
}

/// <summary>A child this node serves shards to over an attach link, by the child's peer id.</summary>
internal sealed record ChildRole(int PeerId) : LinkRole;

/// <summary>A peer's attach link to a parent it receives shards from, by the parent's id (0 = the coordinator).</summary>
internal sealed record ParentRole(int ParentId) : LinkRole;

/// <summary>
/// A peer's control link to the coordinator. The coordinator serves shards over it too, so it is
/// also the peer's parent <see cref="ParentId"/> for those shards.
/// </summary>
internal sealed record CoordinatorRole : LinkRole
{
    /// <summary>The coordinator's node id, as a parent.</summary>
    public const int ParentId = 0;
}

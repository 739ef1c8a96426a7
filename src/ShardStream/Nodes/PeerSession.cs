using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>What the coordinator knows of one peer in the overlay, from its join to its leave.</summary>
internal sealed class PeerSession(int id, string address, Link control)
{
    public int Id { get; } = id;

    public string Address { get; } = address;

    /// <summary>Its control link; a peer that joins again while still listed gets a new one.</summary>
    public Link Control { get; set; } = control;

    public bool Attached { get; set; }

    /// <summary>The control link the peer last reported Attached on: it has read that link's Welcome, so frames may go ahead of the chunks queued there.</summary>
    public Link? AttachedOn { get; set; }

    /// <summary>
    /// Sends a Move ahead of the chunks queued on the peer's control link (the coordinator serves
    /// some shards there): a repair must not wait behind the seconds of stream a slow reader has
    /// queued, or the replay windows move past the point it resumes at (seen in the 200-peer demo
    /// under load: a Move applied 103 s after it was sent, and the peer's shard lost as a gap).
    /// Only on a link the peer has reported Attached on, so never ahead of that link's Welcome.
    /// </summary>
    public void SendMove(Move move)
    {
        var control = Control;
        if (AttachedOn == control) control.SendAhead(move.Write);
        else control.Send(move.Write);
    }

    /// <summary>The first chunk this peer holds: its join point (or the earliest it resumed at), so that a peer moved under it from further back fills the gap first.</summary>
    public long HeldFrom { get; init; }

    /// <summary>The protocol version its control link speaks.</summary>
    public ushort Version { get; set; }

    /// <summary>The token of its Join (0: none): a Join with the same one is this peer again.</summary>
    public ulong Token { get; init; }

    /// <summary>How many parents this peer has accused of lying.</summary>
    public int Accusations { get; set; }

    /// <summary>Children that could not connect to this peer even after a second attempt (see <see cref="RepairService.DropUnreachableEdges"/>).</summary>
    public HashSet<int> UnreachableBy { get; } = [];

    /// <summary>
    /// When a child of this peer in the plan last reported it lost (a timestamp; 0: never). A
    /// control link that breaks right after is a peer gone for its children, not one away that
    /// will join again (see <c>Coordinator.WatchControlAsync</c>).
    /// </summary>
    public long LostByChildAt { get; set; }

    /// <summary>The parent this peer was last told to attach to again after a lost link (-1: none), and when.</summary>
    public int ReattachedTo { get; set; } = -1;

    public long ReattachedAt { get; set; }

    /// <summary>
    /// Per shard, the fills this peer may still ask for: one per Move entry that named a new
    /// parent holding the shard only from a later chunk, up to the latest such chunk. A fill
    /// nothing asked for would make the coordinator a parent nobody placed (docs/security.md).
    /// </summary>
    private readonly Dictionary<int, (int Count, long Until)> _fills = [];

    public void AllowFill(int shard, long until)
    {
        lock (_fills)
        {
            var (count, previous) = _fills.GetValueOrDefault(shard);
            _fills[shard] = (count + 1, Math.Max(previous, until));
        }
    }

    /// <summary>Takes one allowed fill of <paramref name="shard"/> up to <paramref name="until"/>; false when no move allowed it.</summary>
    public bool TryTakeFill(int shard, ulong until)
    {
        lock (_fills)
        {
            if (!_fills.TryGetValue(shard, out var allowed) || until > (ulong)allowed.Until) return false;
            if (allowed.Count == 1) _fills.Remove(shard);
            else _fills[shard] = (allowed.Count - 1, allowed.Until);
            return true;
        }
    }
}

/// <summary>The coordinator's side of a peer's control link: the peer's session.</summary>
internal sealed record ControlRole(PeerSession Session) : LinkRole;

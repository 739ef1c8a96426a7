using ShardStream.Topology;

namespace ShardStream.Nodes;

/// <summary>
/// Parents whose upload was found not to carry their children: for a while, their findings are
/// evidence against them, never against a child's download.
/// </summary>
internal sealed partial class EvictionPolicy
{
    /// <summary>
    /// How long a parent whose children were found slow together (event 910) is taken for one
    /// whose upload does not carry them: as long as <see cref="ExcuseWindow"/>.
    /// </summary>
    internal static readonly TimeSpan ShortUplinkWindow = ExcuseWindow;

    /// <summary>
    /// When each peer's children were last found slow together (event 910 naming it as the parent).
    /// Under the gate; an entry goes with its peer (<see cref="Forget"/>).
    /// </summary>
    private readonly Dictionary<int, long> _uplinkShort = [];

    /// <summary>Notes that <paramref name="parent"/>'s children were found slow together now (event 910). Under the gate.</summary>
    private void NoteUplinkShort(int parent, long now) => _uplinkShort[parent] = now;

    /// <summary>
    /// True when <paramref name="parent"/> is a peer whose children were found slow together within
    /// <see cref="ShortUplinkWindow"/> (<paramref name="since"/>: how long ago). Such a parent has
    /// shown that its upload does not carry its children: a child it finds slow may be only held
    /// back by it. Under the gate.
    /// </summary>
    private bool UplinkFoundShort(int parent, long now, out TimeSpan since)
    {
        since = TimeSpan.Zero;
        if (parent == Planner.Source || !_uplinkShort.TryGetValue(parent, out long at)) return false;
        since = time.GetElapsedTime(at, now);
        if (since < ShortUplinkWindow) return true;
        _uplinkShort.Remove(parent);
        return false;
    }

    /// <summary>
    /// True when a parent of <paramref name="id"/> in the plan now, other than <paramref name="parent"/>
    /// and with an upload not found short, found it slow within <see cref="SlowElsewhereWindow"/>
    /// (the coordinator counts). Under the gate.
    /// </summary>
    private bool SlowUnderAnotherParent(int id, int parent, long now) =>
        FoundSlowByOthers(id, parent, now).Any(f => f.Ago <= SlowElsewhereWindow && Enumerable.Range(0, options.ShardCount).Any(s => tracker.Planner.ParentOf(id, s) == f.By));

    /// <summary>
    /// A leaf behind for the grace on the <paramref name="served"/> shards <paramref name="parent"/>
    /// serves it, while none of its other parents found it slow (<see cref="SlowUnderAnotherParent"/>):
    /// never stopped on it (event 924). It moves away from that parent into free slots when there
    /// are some (<see cref="Planner.MoveAwayFrom"/>). Else the finding counts against the parent, as
    /// event 910 does (<see cref="Demote"/>: demoted, exchanged, made to shed it, evicted), unless
    /// the parent's other children kept up (<see cref="OtherChildrenKeptUp"/>): then its upload
    /// carries them, and what held this one back is its own link to it, or its reading (event 925:
    /// nothing changes). Under the gate.
    /// </summary>
    private void OnlyOneParentSlow(int id, int parent, int served, TimeSpan queueAge, string why, double? took, long now)
    {
        var moves = tracker.Planner.MoveAwayFrom(id, parent);
        if (moves.Count == 0 && OtherChildrenKeptUp(id, parent, now, out int kept))
        {
            // A viewer that reads one parent slowly on purpose, while its other parents keep it
            // fed, must not get an honest relay demoted, shed, or evicted and capped (found by a
            // review of 704c54e): the relay's other children are the evidence the accuser lacks.
            SlowChildLog.OneLinkSlow(log, id, queueAge.TotalSeconds, why, parent, served, options.ShardCount, kept, StarvedWindow.TotalSeconds);
            return;
        }
        string then = moves.Count > 0 ? $"moved to {string.Join(", ", moves.Select(m => NodeName(m.NewParent)).Distinct())}"
            : $"no other node has a free slot for it: peer {parent} is demoted instead (or sheds it)";
        SlowChildLog.OneParentSlow(log, id, queueAge.TotalSeconds, why, parent, served, options.ShardCount, SlowElsewhereWindow.TotalSeconds, then);
        if (moves.Count > 0)
        {
            tracker.SendMoves(moves, repair: false);
            return;
        }
        Demote(parent, $"its child, peer {id}, was behind on the {served} shard(s) it serves it while its other parents kept it fed: its upload does not carry it", childrenSlow: true, slowChild: id, slowChildTookMbps: took);
    }

    /// <summary>
    /// True when <paramref name="parent"/> has children other than <paramref name="id"/> (in any
    /// shard; <paramref name="kept"/>: how many), and it found none of them slow within
    /// <see cref="StarvedWindow"/>. An upload that does not carry a relay's children holds them all
    /// back (they share it), and they are found slow in turn (event 910, or alone within seconds of
    /// each other, as in <c>SlowViewerTests.A_relay_whose_uplink_cannot_carry_its_children_…</c>);
    /// a child that reads that relay slowly, or whose own path from it is slow, is behind alone.
    /// A relay with no other child gives no such evidence: its only child's finding counts against
    /// it (docs/security.md). Under the gate.
    /// </summary>
    private bool OtherChildrenKeptUp(int id, int parent, long now, out int kept)
    {
        var others = tracker.Planner.ChildrenInAnyShard(parent).Where(c => c != id && tracker.Peers.ContainsKey(c)).ToList();
        kept = others.Count;
        return kept > 0 && !others.Any(c => FoundSlowBy(c, parent, now, StarvedWindow));
    }

    /// <summary>True when <paramref name="parent"/> found <paramref name="id"/> slow within <paramref name="window"/> (<see cref="_slowUnder"/>). Under the gate.</summary>
    private bool FoundSlowBy(int id, int parent, long now, TimeSpan window) =>
        SlowFindings(id, now).Any(f => f.By == parent && f.Ago <= window);
}

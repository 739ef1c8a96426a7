using ShardStream.Topology;

namespace ShardStream.Nodes;

/// <summary>A leaf behind at one peer is moved once to another parent, which judges it, before it can be stopped.</summary>
internal sealed partial class EvictionPolicy
{
    /// <summary>
    /// A leaf found slow under two different parents within this long is stopped when the second
    /// finds it behind for the whole grace; found slow under one peer only, it is moved first. As
    /// long as <see cref="ExcuseWindow"/>: a viewer that reads slowly on purpose gets one move in
    /// that time, not one per parent.
    /// </summary>
    internal static readonly TimeSpan SecondParentWindow = ExcuseWindow;

    /// <summary>
    /// The last two different parents that found each peer slow (any finding, the coordinator's
    /// too), and when each last did. Under the gate; an entry goes with its peer (<see cref="Forget"/>).
    /// </summary>
    private readonly Dictionary<int, SlowUnder> _slowUnder = [];

    /// <summary>The two latest parents that found a peer slow, and when it was last moved for it (0: never).</summary>
    private readonly record struct SlowUnder(long At, int Parent, long EarlierAt, int EarlierParent, long MovedAt = 0);

    /// <summary>Notes that <paramref name="parent"/> found <paramref name="id"/> slow now. Under the gate.</summary>
    private void NoteSlowUnder(int id, int parent, long now)
    {
        if (!_slowUnder.TryGetValue(id, out var last)) _slowUnder[id] = new SlowUnder(now, parent, 0, Planner.None);
        else if (last.Parent == parent) _slowUnder[id] = last with { At = now };
        else _slowUnder[id] = new SlowUnder(now, parent, last.At, last.Parent, last.MovedAt);
    }

    /// <summary>
    /// True when a parent other than <paramref name="parent"/> found <paramref name="id"/> slow within
    /// <see cref="SecondParentWindow"/>, and that parent's upload was not found short (<see cref="UplinkFoundShort"/>). Under the gate.
    /// </summary>
    private bool FoundSlowElsewhere(int id, int parent, long now, out int other, out TimeSpan since)
    {
        foreach (var (by, ago) in FoundSlowByOthers(id, parent, now))
        {
            if (ago >= SecondParentWindow) continue;
            (other, since) = (by, ago);
            return true;
        }
        (other, since) = (Planner.None, TimeSpan.Zero);
        return false;
    }

    /// <summary>
    /// The last two findings of <paramref name="id"/> slow (<see cref="_slowUnder"/>) by parents
    /// other than <paramref name="parent"/> whose upload was not found short (such a parent held
    /// the peer back: no evidence of its download, <see cref="UplinkFoundShort"/>), each with how
    /// long ago. Under the gate.
    /// </summary>
    private IEnumerable<(int By, TimeSpan Ago)> FoundSlowByOthers(int id, int parent, long now) =>
        SlowFindings(id, now).Where(f => f.By != parent && !UplinkFoundShort(f.By, now, out _));

    /// <summary>The last two findings of <paramref name="id"/> slow (<see cref="_slowUnder"/>): which parent, and how long ago. Under the gate.</summary>
    private IEnumerable<(int By, TimeSpan Ago)> SlowFindings(int id, long now)
    {
        if (!_slowUnder.TryGetValue(id, out var found)) yield break;
        foreach (var (at, by) in new[] { (found.At, found.Parent), (found.EarlierAt, found.EarlierParent) })
            if (by != Planner.None) yield return (by, time.GetElapsedTime(at, now));
    }

    /// <summary>
    /// A leaf behind for the whole grace at <paramref name="parent"/>, which would be stopped: when
    /// that parent is a peer and no other parent found it slow within <see cref="SecondParentWindow"/>,
    /// it is moved to a free slot elsewhere instead (<see cref="Planner.MoveAwayFrom"/>; it resumes
    /// from its new parent's replay window), and true is returned. That peer's upload may be what
    /// held it back: seen across network namespaces, a relay behind a 2 Mbit/s uplink fed two
    /// children of a 1.2 Mbit/s stream, TCP gave one of them all it needed, and the other, on an
    /// uncapped link, was stopped with "0.6 vs 1.2 Mbit/s". A viewer whose own download is below
    /// the stream rate is found slow at its new parent too, and stopped there. Not for a leaf of the
    /// coordinator (see docs/resilience.md). Under the gate.
    /// </summary>
    private bool MovedToSecondParent(int id, int parent, TimeSpan queueAge, string why, long now)
    {
        if (parent == Planner.Source) return false;
        if (FoundSlowElsewhere(id, parent, now, out int other, out var since))
        {
            SlowChildLog.LeafNotMoved(log, id, parent, $"{NodeName(other)} found it slow too, {since.TotalSeconds:0} s ago: two parents point to its own download");
            return false;
        }
        // One move a window, wherever it went: a latency move or a rebuild can take it back under
        // the parent it was moved from, which would otherwise move it again, and again.
        if (_slowUnder.TryGetValue(id, out var found) && found.MovedAt != 0 && time.GetElapsedTime(found.MovedAt, now) < SecondParentWindow)
        {
            SlowChildLog.LeafNotMoved(log, id, parent, $"it was moved for being slow {time.GetElapsedTime(found.MovedAt, now).TotalSeconds:0} s ago, once a window");
            return false;
        }
        var moves = tracker.Planner.MoveAwayFrom(id, parent);
        if (moves.Count == 0)
        {
            SlowChildLog.LeafNotMoved(log, id, parent, "no other node has a free slot for it");
            return false;
        }
        if (_slowUnder.TryGetValue(id, out var noted)) _slowUnder[id] = noted with { MovedAt = now };
        tracker.SendMoves(moves, repair: false);
        SlowChildLog.LeafMoved(log, id, queueAge.TotalSeconds, why, parent, string.Join(", ", moves.Select(m => NodeName(m.NewParent)).Distinct()));
        return true;
    }

    private static string NodeName(int node) => node == Planner.Source ? "the coordinator" : $"peer {node}";
}

using ShardStream.Topology;

namespace ShardStream.Nodes;

/// <summary>
/// Who gets its budget back after a demotion, and when (docs/resilience.md, "Re-promoted"): a
/// peer demoted because a parent found it slow (its download, or the link from that parent) is
/// on probation; once it has kept up for the probation, under parents none of which is the one
/// that found it slow, while the source was producing, it is due. "Kept up" is what the
/// coordinator can see: no parent found it slow (every parent checks every child it serves on
/// each tick, and reports one whose oldest queued chunk waited <see cref="NodeOptions.SlowChildAge"/>
/// while its queue grew), so any finding about it starts its probation over. A peer re-promoted
/// and demoted again waits twice as long as the time before. A peer demoted for anything else
/// (its children starved: its upload; peers could not connect to it) is never put on probation:
/// as a leaf it uploads nothing, so nothing the coordinator sees tells that its upload got better.
/// Not thread-safe: the caller holds the tracker's gate.
/// </summary>
internal sealed class Repromotions(TimeSpan probation, TimeProvider time)
{
    /// <summary>
    /// The most time one check counts as kept up: a coordinator held up longer (a busy machine)
    /// saw nothing in between, and its findings may still be queued.
    /// </summary>
    internal static readonly TimeSpan MaxStep = TimeSpan.FromSeconds(2);

    /// <summary>A demoted peer on probation: its budget before, the parent that found it slow, how long it has kept up so far.</summary>
    private sealed class Probation(int budget, int foundBy, TimeSpan needed)
    {
        public int Budget { get; } = budget;

        public int FoundBy { get; } = foundBy;

        public TimeSpan Needed { get; } = needed;

        public TimeSpan Kept { get; set; }

        /// <summary>
        /// The next check counts nothing: it was demoted, found slow or under the finder at the
        /// last one, and the time up to the next check may be from before it moved or was found slow.
        /// </summary>
        public bool Restart { get; set; } = true;
    }

    private readonly Dictionary<int, Probation> _probation = [];

    /// <summary>How many times each peer was re-promoted (until it leaves).</summary>
    private readonly Dictionary<int, int> _count = [];

    private long _lastCheck;

    /// <summary>
    /// <paramref name="id"/>, whose budget was <paramref name="budget"/>, was demoted now.
    /// <paramref name="foundBy"/>: the parent that found it slow, when that was why (otherwise
    /// <see cref="Planner.None"/>, or <paramref name="childrenSlow"/> for a relay whose children
    /// were found slow together): only then is it put on probation.
    /// </summary>
    public void Demoted(int id, int budget, int foundBy, bool childrenSlow)
    {
        _probation.Remove(id);
        if (childrenSlow || foundBy == Planner.None || budget <= 0) return;
        int times = _count.GetValueOrDefault(id);
        _probation[id] = new Probation(budget, foundBy, probation * Math.Pow(2, Math.Min(times, 20)));
    }

    /// <summary>A parent found <paramref name="id"/> slow: a peer on probation starts it over.</summary>
    public void FoundSlow(int id)
    {
        if (_probation.TryGetValue(id, out var p)) (p.Kept, p.Restart) = (TimeSpan.Zero, true);
    }

    /// <summary>True when <paramref name="id"/> is on probation (for tests).</summary>
    public bool OnProbation(int id) => _probation.ContainsKey(id);

    /// <summary>The probation <paramref name="id"/> needs now, when it is on one.</summary>
    public TimeSpan? Needed(int id) => _probation.TryGetValue(id, out var p) ? p.Needed : null;

    /// <summary>
    /// A periodic check. <paramref name="streaming"/>: the source produced something since the last
    /// check (a paused or ended source queues nothing, so nobody can be found slow);
    /// <paramref name="parentsOf"/>: the peer's parents in the plan now, or null when it is not in
    /// it. The time since the last check (at most <see cref="MaxStep"/>) counts for every peer on
    /// probation that no shard has from the parent that found it slow, from the check after the
    /// one that first saw it so (or after its demotion, or a finding); under that parent, it
    /// starts over. Returns the peers due, each with the budget to give back and how long it kept
    /// up, and takes them off probation (counted as re-promoted).
    /// </summary>
    public List<Due> Check(bool streaming, Func<int, IReadOnlyList<int>?> parentsOf)
    {
        long now = time.GetTimestamp();
        var step = _lastCheck == 0 ? TimeSpan.Zero : time.GetElapsedTime(_lastCheck, now);
        _lastCheck = now;
        if (step > MaxStep) step = MaxStep;
        var due = new List<Due>();
        List<int>? gone = null;
        foreach (var (id, p) in _probation)
        {
            var parents = parentsOf(id);
            if (parents is null)
            {
                (gone ??= []).Add(id);
                continue;
            }
            if (parents.Contains(p.FoundBy)) (p.Kept, p.Restart) = (TimeSpan.Zero, true);
            else if (p.Restart) p.Restart = false;
            else if (streaming) p.Kept += step;
            if (p.Kept >= p.Needed) due.Add(new Due(id, p.Budget, p.Kept, p.FoundBy, _count.GetValueOrDefault(id) + 1));
        }
        foreach (var d in due)
        {
            _probation.Remove(d.Id);
            _count[d.Id] = d.Count;
        }
        if (gone is not null)
            foreach (int id in gone) _probation.Remove(id);
        return due;
    }

    /// <summary>A peer due: the budget it had, how long it kept up, the parent that found it slow, and which re-promotion of it this is (1, 2...).</summary>
    public readonly record struct Due(int Id, int Budget, TimeSpan Kept, int FoundBy, int Count);

    /// <summary>Forgets a peer that left.</summary>
    public void Forget(int id)
    {
        _probation.Remove(id);
        _count.Remove(id);
    }

    /// <summary>Whether anything is kept for <paramref name="id"/>.</summary>
    public bool Remembers(int id) => _probation.ContainsKey(id) || _count.ContainsKey(id);
}

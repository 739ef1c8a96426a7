using ShardStream.Collections;

namespace ShardStream.Nodes;

/// <summary>
/// Relays whose children keep being found slow together where the overlay can neither demote
/// them, nor exchange them with a child, nor let them shed one (<see cref="EvictionPolicy"/>):
/// how long each has starved its children, by whose findings and what those children took; and,
/// for relays evicted for it, what their uplink proved to carry, by listen address and join token,
/// so that a rejoin is not placed as a relay again at the upload it declared. Under the tracker's gate.
/// </summary>
internal sealed class StarvedRelays(TimeSpan gap, TimeProvider time)
{
    /// <summary>One relay's run of findings: none more than <c>gap</c> after the one before.</summary>
    internal sealed class Run
    {
        public long Since { get; set; }

        public long Last { get; set; }

        /// <summary>
        /// The children found slow in it, with the sum and count of what each took at its findings
        /// (Mbit/s of the shards the relay serves it, where said). Averaged over the run: one
        /// finding's window may be a burst of catching up (a child at 1.8 of 3 shard-streams' worth
        /// measured 0.1 to 0.5 of its 0.5 Mbit/s), and its sum of latest figures made 2.1.
        /// </summary>
        public Dictionary<int, (double Sum, int Count)> Found { get; } = [];

        /// <summary>What the children of <paramref name="children"/> found in the run took on average, added up (Mbit/s).</summary>
        public double Took(ISet<int> children) => Found.Where(c => children.Contains(c.Key) && c.Value.Count > 0).Sum(c => c.Value.Sum / c.Value.Count);
    }

    private readonly Dictionary<int, Run> _runs = [];

    /// <summary>Shard-streams each evicted relay proved to carry, by its listen address and by its join token, with when.</summary>
    private readonly RecentMap<string, (int Carried, string Reason, long At)> _byAddress = new(MaxRemembered);
    private readonly RecentMap<ulong, (int Carried, string Reason, long At)> _byToken = new(MaxRemembered);
    private const int MaxRemembered = 4096;

    /// <summary>
    /// How long an eviction's cap holds. Children that read slowly on purpose (two viewers one
    /// person runs, under one relay) look like an uplink that does not carry them: a relay evicted
    /// so gets its declared budget back when it joins after this; one whose uplink really fails is
    /// found and evicted again, which costs its children about a second.
    /// </summary>
    public static readonly TimeSpan CapLifetime = TimeSpan.FromMinutes(10);

    /// <summary>Notes that <paramref name="child"/> of <paramref name="relay"/> was found slow with its siblings at <paramref name="now"/>; the relay's run, begun again when the last finding is more than the gap old.</summary>
    public Run Note(int relay, int child, double? tookMbps, long now)
    {
        if (!_runs.TryGetValue(relay, out var run) || time.GetElapsedTime(run.Last, now) > gap)
        {
            _runs[relay] = run = new Run { Since = now };
        }
        run.Last = now;
        if (child <= 0) return run;
        var (sum, count) = run.Found.GetValueOrDefault(child);
        run.Found[child] = tookMbps is { } took ? (sum + took, count + 1) : (sum, count);
        return run;
    }

    /// <summary>Forgets a relay's run (it left, or was evicted).</summary>
    public void Forget(int relay) => _runs.Remove(relay);

    /// <summary>Whether a run is kept for <paramref name="relay"/>; for tests.</summary>
    public bool Remembers(int relay) => _runs.ContainsKey(relay);

    /// <summary>Remembers that the relay at <paramref name="address"/> with <paramref name="token"/> carried <paramref name="carried"/> shard-streams and was told <paramref name="reason"/>.</summary>
    public void Evicted(string address, ulong token, int carried, string reason, long now)
    {
        // Evicted again (at the budget it was capped to): the latest finding replaces the earlier.
        _byAddress.Remove(address, out _);
        _byAddress.TryAdd(address, (carried, reason, now));
        if (token == 0) return;
        _byToken.Remove(token, out _);
        _byToken.TryAdd(token, (carried, reason, now));
    }

    /// <summary>What a joiner at <paramref name="address"/> or with <paramref name="token"/> proved to carry when it was evicted less than <see cref="CapLifetime"/> before <paramref name="now"/> (the lower of the two), and why; null when it never was, or longer ago.</summary>
    public (int Carried, string Reason)? Proven(string address, ulong token, long now)
    {
        (int Carried, string Reason)? found = _byAddress.TryGetValue(address, out var a) && Fresh(a.At) ? (a.Carried, a.Reason) : null;
        if (token != 0 && _byToken.TryGetValue(token, out var t) && Fresh(t.At) && (found is not { } f || t.Carried < f.Carried)) found = (t.Carried, t.Reason);
        return found;

        bool Fresh(long at) => time.GetElapsedTime(at, now) < CapLifetime;
    }
}

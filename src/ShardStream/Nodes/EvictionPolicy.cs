using System.Globalization;
using Microsoft.Extensions.Logging;
using ShardStream.Collections;
using ShardStream.Topology;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Who loses its place, and when: a slow relay is demoted to a leaf (at most one demotion per
/// <see cref="NodeOptions.DemotionSpacing"/>, and never at the cost of evicting others), an
/// accused parent is cut off and its address refused from then on, and a peer that accuses too
/// many parents is taken for the liar. It owns the refused addresses and the demotion clock; the
/// plan it changes is the <see cref="Tracker"/>'s (under its gate).
/// </summary>
internal sealed partial class EvictionPolicy(CoordinatorOptions options, Tracker tracker, StreamSource source, ILogger log, TimeProvider time)
{
    /// <summary>A reporter may accuse this many parents; one that accuses more is taken for the liar.</summary>
    private const int MaxAccusations = 2;

    /// <summary>Listen addresses of peers cut off for what they sent: refused from then on. Under the gate.</summary>
    private readonly HashSet<string> _cutOff = [];
    private long _lastDemotion;

    /// <summary>
    /// The parent that found the peer of the last demotion slow (<see cref="Planner.None"/> when
    /// that demotion was not of a child found slow): that parent's own demotion, when its children
    /// are found slow together, is not held back by the spacing the child's started (see <see cref="Demote"/>).
    /// </summary>
    private int _lastDemotionFoundBy = Planner.None;

    /// <summary>
    /// The download measured at each peer's latest slow finding, and when: a stopped leaf is quoted
    /// the higher of that and its last finding's (each parent measures only what got through to
    /// it: right after a move the old parent's backlog shares the peer's link; a 1 Mbit/s viewer
    /// measured 0.3 at its new parent and 0.8 at the coordinator). Under the gate.
    /// </summary>
    private readonly Dictionary<int, (long At, double DownloadMbps)> _lastDownload = [];

    /// <summary>
    /// Join tokens of peers stopped as too slow, with what they were told: their TooSlow goodbye
    /// waits behind whatever the transport already holds for them (seconds of stream on a slow
    /// link), and when the close timeout resets the link first, the peer tries to join again.
    /// That join is answered with the same goodbye, on a fresh connection. Bounded; under the gate.
    /// </summary>
    private readonly RecentMap<ulong, string> _stoppedSlow = new(MaxStoppedRemembered);
    private const int MaxStoppedRemembered = 4096;

    /// <summary>Notes that the peer of <paramref name="session"/> was stopped as too slow with <paramref name="reason"/>. Under the gate.</summary>
    public void NoteStoppedSlow(PeerSession session, string reason)
    {
        if (session.Token == 0) return;
        _stoppedSlow.TryAdd(session.Token, reason);
    }

    /// <summary>What a joiner with <paramref name="token"/> was told when it was stopped as too slow; null when it was not. Under the gate.</summary>
    public string? StoppedSlow(ulong token) => token != 0 && _stoppedSlow.TryGetValue(token, out var reason) ? reason : null;

    /// <summary>
    /// Peers that left the overlay lately (a leave, a failure, a finish), with their address and
    /// the children they had in the plan then: an accusation from one of those children may come
    /// after its parent left. A child closes the link of a parent it caught lying before it
    /// reports it, and a parent that has the whole stream leaves as soon as its children closed:
    /// the liar was out before its accusation arrived, the coordinator forgot it, and neither
    /// logged it cut off nor refused its address (CliLyingRelayTests(flip) in a CI run; the in-process
    /// StaleRunTests every time). Bounded; under the gate.
    /// </summary>
    private readonly RecentMap<int, (string Address, HashSet<(int Child, int Shard)> Children)> _departed = new(MaxDepartedRemembered);
    private const int MaxDepartedRemembered = 4096;

    /// <summary>Notes that <paramref name="session"/> leaves the overlay now, with its children in the plan. Under the gate, before the planner forgets it.</summary>
    public void NoteDeparted(PeerSession session)
    {
        if (!tracker.Planner.Contains(session.Id)) return;
        var children = new HashSet<(int Child, int Shard)>();
        for (int s = 0; s < options.ShardCount; s++)
            foreach (int child in tracker.Planner.ChildrenOf(session.Id, s)) children.Add((child, s));
        _departed.TryAdd(session.Id, (session.Address, children));
    }

    /// <summary>What an accusation leads to (see <see cref="JudgeAccusation"/>).</summary>
    public enum Verdict
    {
        /// <summary>Nothing: the reporter is out, the accused is out already, or is not its parent.</summary>
        Ignored,

        /// <summary>The coordinator itself is accused: taken as a lost parent.</summary>
        AgainstCoordinator,

        /// <summary>The reporter accused too many parents: the caller evicts it.</summary>
        AccuserEvicted,

        /// <summary>The accused parent is cut off: its address is refused from now on; the caller takes it out.</summary>
        ParentCutOff,

        /// <summary>The accused parent had left the overlay already (its children were moved then): its address is refused from now on.</summary>
        DepartedParentCutOff,
    }

    /// <summary>True when peers at <paramref name="address"/> were cut off. Under the gate.</summary>
    public bool IsCutOff(string address) => _cutOff.Contains(address);

    /// <summary>
    /// A child cut its parent off for what the parent sent (data that failed verification, a
    /// frame it may not send). The coordinator cannot see the bytes, so it checks what it can:
    /// the reporter must be that parent's child in the plan, and may accuse only
    /// <see cref="MaxAccusations"/> parents in its life (an honest peer meets a liar rarely; a
    /// peer that finds every parent lying is the liar, and is evicted itself). Called under the gate.
    /// </summary>
    public Verdict JudgeAccusation(PeerSession reporter, int parentId, ShardStart[] shards, string violation, out PeerSession? parent, out string? departedAddress)
    {
        parent = null;
        departedAddress = null;
        if (!tracker.Peers.ContainsKey(reporter.Id)) return Verdict.Ignored;
        if (parentId == Planner.Source)
        {
            CoordinatorLog.CoordinatorAccused(log, reporter.Id, violation);
            return Verdict.AgainstCoordinator;
        }
        if (!tracker.Peers.TryGetValue(parentId, out parent))
        {
            // Left already: judged by the children it had in the plan when it left.
            if (!_departed.TryGetValue(parentId, out var departed) || !shards.Any(s => departed.Children.Contains((reporter.Id, s.Shard))))
            {
                CoordinatorLog.AccusedAlreadyOut(log, reporter.Id, parentId, violation);
                return Verdict.Ignored;
            }
            if (++reporter.Accusations > MaxAccusations)
            {
                CoordinatorLog.AccuserEvicted(log, reporter.Id, parentId, reporter.Accusations - 1);
                return Verdict.AccuserEvicted;
            }
            _cutOff.Add(departed.Address);
            departedAddress = departed.Address;
            return Verdict.DepartedParentCutOff;
        }
        if (!shards.Any(s => s.Shard < options.ShardCount && tracker.Planner.ParentOf(reporter.Id, s.Shard) == parentId))
        {
            CoordinatorLog.AccusationIgnored(log, reporter.Id, parentId, violation);
            return Verdict.Ignored;
        }
        if (++reporter.Accusations > MaxAccusations)
        {
            CoordinatorLog.AccuserEvicted(log, reporter.Id, parentId, reporter.Accusations - 1);
            return Verdict.AccuserEvicted;
        }
        _cutOff.Add(parent.Address);
        return Verdict.ParentCutOff;
    }

    /// <summary>
    /// A peer says one of its children is slow. Only a parent of that child in the plan is heard:
    /// a report can demote only a child the reporter serves (see docs/resilience.md on the trust
    /// this still gives a lying parent).
    /// </summary>
    public void OnSlowChildReport(PeerSession reporter, SlowChild report)
    {
        int child = report.ChildId > int.MaxValue ? -1 : (int)report.ChildId;
        bool isParent;
        lock (tracker.Gate)
            isParent = child > 0 && tracker.Planner.Contains(child) && Enumerable.Range(0, options.ShardCount).Any(s => tracker.Planner.ParentOf(child, s) == reporter.Id);
        if (!isParent)
        {
            SlowChildLog.ReportIgnored(log, reporter.Id, child);
            return;
        }
        // A peer sends a rate above zero as 1 kbit/s at least: 0 is nothing (the window is not in the report).
        string took = report.Rates is { } r ? $", {SlowChildren.Took(r.DownloadKbps / 1000.0, r.StreamKbps / 1000.0, null)}" : "";
        OnSlow(child, reporter.Id, $"its parent, peer {reporter.Id}, found its oldest queued chunk {report.QueueAgeMs / 1000.0:0.0} s old{took}",
            report.Rates is { } rates ? (rates.DownloadKbps / 1000.0, rates.StreamKbps / 1000.0) : null, TimeSpan.FromMilliseconds(report.QueueAgeMs));
    }

    /// <summary>
    /// A parent found peer <paramref name="id"/> slow: its oldest queued chunk there waited
    /// <paramref name="queueAge"/> and its queue kept growing (<paramref name="rates"/>: its measured
    /// download and the rate queued for it, in Mbit/s, when the parent sent them). A relay is
    /// demoted to a leaf. A leaf is stopped (its control link closed with Goodbye(TooSlow) and the
    /// figures: its download and the stream's rate at the source) only when it has been behind at
    /// one parent for at least <see cref="NodeOptions.SlowChildGrace"/>: a parent reports a child
    /// again when it is still slow that long after it was found slow, and its oldest queued chunk
    /// has waited that long by then. Two separate findings are not added up: on a busy machine a
    /// healthy peer falls behind for a second or two after each repair that touches it (seen: a
    /// healthy viewer found slow twice, 8 s apart, in the 30-peer kill test, and stopped), while a
    /// viewer whose download is below the stream rate stays behind for good. <paramref name="parent"/>
    /// is the peer that found it slow (<see cref="Planner.Source"/> for the coordinator).
    /// </summary>
    public void OnSlow(int id, int parent, string why, (double DownloadMbps, double StreamMbps)? rates, TimeSpan queueAge)
    {
        PeerSession? stop = null;
        double? streamMbps = null;
        lock (tracker.Gate)
        {
            var planner = tracker.Planner;
            // A peer whose control link is closing (stopped as too slow, cut off) is out as soon as
            // its goodbye has crossed, up to three close timeouts on a slow link; its parents still
            // find it slow meanwhile. Judged again, it was "stopped" once per report, with reasons
            // it was never sent (15 times in 14 s for one viewer, K=4 across network namespaces).
            if (!tracker.Peers.TryGetValue(id, out var session) || !planner.Contains(id) || session.Control.IsClosing) return;
            // A parent measures what it serves this peer: with K shards it may serve n of them, and
            // its figures are those shards' (0.5 of 0.5 Mbit/s for one shard of a 2 Mbit/s stream,
            // K=4). Scaled to the whole stream, they compare with the source's rate and with the
            // findings of its other parents.
            // Counted under this lock, not with the isParent check of the report: a move can land in
            // between. A parent that serves none of its shards any more is not heard (as when the
            // report came after the move); the coordinator serving it only fill shards (none in the
            // plan) keeps its finding without the figures, which are not the whole stream's.
            int served = Enumerable.Range(0, options.ShardCount).Count(s => planner.ParentOf(id, s) == parent);
            if (served == 0 && parent != Planner.Source)
            {
                SlowChildLog.ReportIgnored(log, parent, id);
                return;
            }
            if (served == 0) rates = null;
            // What it took of the shards this parent serves it: a relay's uplink carried that much to it.
            double? took = rates?.DownloadMbps;
            if (rates is { } part && served < options.ShardCount)
                rates = (part.DownloadMbps * options.ShardCount / served, part.StreamMbps * options.ShardCount / served);
            long now = time.GetTimestamp();
            double? earlier = _lastDownload.TryGetValue(id, out var last) && time.GetElapsedTime(last.At, now) < EarlierFindingWithin ? last.DownloadMbps : null;
            if (rates is { } found) _lastDownload[id] = (now, found.DownloadMbps);
            // Counted (and the old findings dropped) before this one is noted.
            int others = OthersFoundSlow(id, parent, now, out int siblings);
            _foundSlow[id] = (now, parent);
            NoteSlowUnder(id, parent, now);
            _repromotions.FoundSlow(id);
            bool relay = planner.Budget(id) > 0;
            if (!relay && queueAge < options.SlowChildGrace)
            {
                SlowChildLog.LeafNotYet(log, id, why, options.SlowChildGrace.TotalSeconds);
                return;
            }
            // A child already excused under another parent within ExcuseWindow is judged on its own:
            // two slow parents in a row point to the child (or to viewers that read slowly together
            // to get relays demoted, security.md), not to their uploads.
            bool parentSlow = parent != Planner.Source && siblings > 0;
            if (parentSlow && _excused.TryGetValue(id, out var excused) && excused.Parent != parent && time.GetElapsedTime(excused.At, now) is var since && since < ExcuseWindow)
            {
                SlowChildLog.ExcusedElsewhere(log, id, excused.Parent, since.TotalSeconds, parent);
                parentSlow = false;
            }
            if (parentSlow)
            {
                _excused[id] = (now, parent);
                NoteUplinkShort(parent, now);
                // Other children of the same peer behind too: its upload does not carry them, and
                // it is the one to demote (its children then move to other parents; one that is
                // really slow is found slow there alone). Seen across network namespaces: a relay
                // behind a 2 Mbit/s uplink fed children of a 1.2 Mbit/s stream; two of them, relays
                // on uncapped links, were demoted in turn, and a leaf was stopped with "your
                // download is below the stream rate: 0.8 vs 1.2 Mbit/s".
                SlowChildLog.ParentSlow(log, id, why, parent, siblings, SlowElsewhereWindow.TotalSeconds);
                Demote(parent, $"{siblings + 1} of its children were found slow within {SlowElsewhereWindow.TotalSeconds:0.#} s: its upload does not carry them", childrenSlow: true, slowChild: id, slowChildTookMbps: took);
                return;
            }
            if (UplinkFoundShort(parent, now, out var shortSince))
            {
                // Found slow alone under a parent whose children were found slow together lately
                // (event 910): that parent has shown its upload does not carry its children, and its
                // finding says nothing of this peer's download. It counts against the parent, as
                // event 910 does. Seen across network namespaces (run1, K = 4): a viewer behind a
                // 1 Mbit/s uplink shed two of its children, and the one left under it, on a 50 Mbit/s
                // link, was judged on its findings as a leaf and stopped as "below the stream rate".
                SlowChildLog.UnderShortUplink(log, id, why, parent, shortSince.TotalSeconds);
                Demote(parent, $"its child, peer {id}, was found slow under it {shortSince.TotalSeconds:0} s after its children were found slow together: its upload does not carry them", childrenSlow: true, slowChild: id, slowChildTookMbps: took);
                return;
            }
            if (relay)
            {
                if (HasChildren(planner, id) || planner.CanDemoteWithoutEviction(id))
                {
                    if (Demote(id, why, foundBy: parent) || !HasChildren(planner, id) || !NothingRelieves(id, now)) return;
                    // Its download is below the stream rate and nothing can take its children off it
                    // (no room elsewhere, no child to exchange places with): they starve with it, and
                    // it kept its place for good (event 904; the eviction of a relay whose children
                    // starve is held, rightly, as its own parent found it slow: its uplink is not what
                    // failed). Judged as a leaf, it is stopped as one, if its leaving evicts nobody
                    // else: its children go into the slots it frees.
                    if (queueAge < options.SlowChildGrace || !planner.CanEvictWithoutEvictingOthers(id)) return;
                    SlowChildLog.RelayJudgedAsLeaf(log, id, why);
                }
                // Upload to give but no children, and the overlay cannot spare its slots (no room
                // for one more viewer without them) while no child can take its place: it relays
                // nothing, so it is judged as a leaf. Kept in its place as a relay, it was never
                // stopped (across network namespaces, the last peer of a chain of --upload 1 nodes
                // behind a 300 kbit/s link: "not demoted" eight times in 30 s, 18 s behind and growing).
                if (queueAge < options.SlowChildGrace)
                {
                    SlowChildLog.LeafNotYet(log, id, why, options.SlowChildGrace.TotalSeconds);
                    return;
                }
            }
            if (others >= Math.Max(MinOthersSlowForBusy, tracker.Peers.Count / 100))
            {
                // Many viewers behind at once, under many parents: a busy machine or a congested
                // source, not this viewer's download. It stays; a parent that still finds it slow
                // later, when the others keep up, reports it again.
                SlowChildLog.LeafNotStopped(log, id, queueAge.TotalSeconds, why, others, SlowElsewhereWindow.TotalSeconds);
                return;
            }
            // The stream's rate as the source produces it: a parent's queued rate mixes in replayed
            // backlog and the source's bursts (measured 21.7 and 30.2 for 16.8 Mbit/s at load 50+).
            if (rates is { } measured) rates = (Math.Max(measured.DownloadMbps, earlier ?? 0), source.RateMbps() ?? measured.StreamMbps);
            if (rates is { } judged && judged.DownloadMbps >= judged.StreamMbps)
            {
                // Its download keeps up with the stream: what held its queue back is its parent
                // (seen in the 200-peer demo: a parent stalled 20 s toward all nine of its
                // children, and one of them was stopped with "0.5 vs 0.4 Mbit/s").
                SlowChildLog.LeafNotBelowRate(log, id, queueAge.TotalSeconds, why, judged.DownloadMbps, judged.StreamMbps);
                return;
            }
            // Behind on the shards of one peer parent while its other parents, serving the rest,
            // do not find it slow: its download carries those, and that parent's upload is what
            // holds it back (a download below the stream rate is behind on every shard, and each
            // of its parents finds it slow within seconds of the others). Seen across network
            // namespaces (run1, K = 4): the viewer behind a 1 Mbit/s uplink fed one shard to a
            // 50 Mbit/s viewer, nothing was free to move it to, and it was stopped.
            if (parent != Planner.Source && served < options.ShardCount && !SlowUnderAnotherParent(id, parent, now))
            {
                OnlyOneParentSlow(id, parent, served, queueAge, why, took, now);
                return;
            }
            // Behind at one peer only: that peer's upload may be what holds it back. A second parent
            // judges it first (it is moved once; see MovedToSecondParent).
            if (MovedToSecondParent(id, parent, queueAge, why, now)) return;
            stop = session;
            // The rate it is told it is below: the source's, also when its parent's finding gave none.
            streamMbps = rates?.StreamMbps ?? source.RateMbps();
            _lastDownload.Remove(id);
        }
        // No download figure: its parents' are not its download (each measures its own share, as
        // bytes are handed to its transport, seconds ahead of the link); the peer adds its own.
        string reason = streamMbps is { } stream ? string.Create(CultureInfo.InvariantCulture, $"your download is below the stream rate, {stream:0.0} Mbit/s: your parent held chunks for you {queueAge.TotalSeconds:0.0} s, and more kept coming")
            : $"your download is below the stream rate (your parent held chunks for you {queueAge.TotalSeconds:0.0} s, and more kept coming)";
        // The coordinator's line keeps its parents' figures, which decided (event 909 above).
        SlowChildLog.LeafStopped(log, id, queueAge.TotalSeconds, why, rates is { } f ? $"{reason}; its parents measured {SlowChildren.Versus(f.DownloadMbps, f.StreamMbps)}" : reason);
        lock (tracker.Gate)
        {
            NoteStoppedSlow(stop, reason);
            // Its parents stop serving it first (DropChild, dropping what they hold for it): their
            // backlog shares its slow link with the goodbye, which waited 3-16 s behind it across
            // network namespaces while they kept finding it slow (event 900 every 2-3 s).
            tracker.DropFromParents(stop, "stopped as too slow");
        }
        stop.Control.CloseAsync(GoodbyeCode.TooSlow, reason).Observe(log, $"peer {id}: stopping");
    }

    /// <summary>
    /// True when a relay that <see cref="Demote"/> left in place was not held back by the spacing of
    /// demotions but can be neither demoted without evicting someone nor exchanged with a child. Under the gate.
    /// </summary>
    private bool NothingRelieves(int id, long now) =>
        tracker.Planner.Budget(id) > 0
        && !(_lastDemotion != 0 && time.GetElapsedTime(_lastDemotion, now) < options.DemotionSpacing)
        && !tracker.Planner.CanDemoteWithoutEviction(id)
        && ExchangeCandidate(id, now) == Planner.None;

    private bool HasChildren(Planner planner, int id) => Enumerable.Range(0, options.ShardCount).Any(shard => planner.ChildrenOf(id, shard).Any());

    /// <summary>
    /// When each peer was last found slow, by any parent (a relay or a leaf, reported or found
    /// here), for <see cref="OthersFoundSlow"/>. Entries older than <see cref="SlowElsewhereWindow"/>
    /// are dropped as it counts. Under the gate.
    /// </summary>
    private readonly Dictionary<int, (long At, int Parent)> _foundSlow = [];

    /// <summary>
    /// Children excused because their parent found a sibling slow too (event 910): when, and under
    /// which parent. Under the gate; an entry goes with its peer (<see cref="Forget"/>).
    /// </summary>
    private readonly Dictionary<int, (long At, int Parent)> _excused = [];

    /// <summary>A child excused under one parent is not excused again under another for this long.</summary>
    internal static readonly TimeSpan ExcuseWindow = TimeSpan.FromMinutes(5);

    /// <summary>Slow findings about other peers within this long before a stop make it wait (see <see cref="OnSlow"/>).</summary>
    internal TimeSpan SlowElsewhereWindow => options.SlowChildGrace * 2;

    /// <summary>
    /// A leaf is not stopped while at least this many other peers (and 1% of the overlay) were found
    /// slow within <see cref="SlowElsewhereWindow"/>. In the 200-peer demo on the loaded 2-core
    /// machine a healthy viewer was stopped ("0.9 vs 1.7 Mbit/s", the overlay as a whole then
    /// moving 0.8 Mbit/s) while 31 other peers were found slow in the same 10 s; a viewer whose own
    /// download is below the stream rate is alone in being behind.
    /// </summary>
    internal const int MinOthersSlowForBusy = 3;

    /// <summary>
    /// How many peers other than <paramref name="id"/> were found slow within <see cref="SlowElsewhereWindow"/>;
    /// <paramref name="siblings"/>: how many of them <paramref name="parent"/> found slow. Under the gate.
    /// </summary>
    private int OthersFoundSlow(int id, int parent, long now, out int siblings)
    {
        int others = 0;
        siblings = 0;
        List<int>? old = null;
        foreach (var (peer, (at, by)) in _foundSlow)
        {
            if (time.GetElapsedTime(at, now) > SlowElsewhereWindow) (old ??= []).Add(peer);
            else if (peer != id)
            {
                others++;
                if (by == parent) siblings++;
            }
        }
        if (old is not null)
            foreach (int peer in old) _foundSlow.Remove(peer);
        return others;
    }

    /// <summary>An earlier finding's download is quoted only when it is this recent.</summary>
    internal static readonly TimeSpan EarlierFindingWithin = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Forgets a peer that left (<see cref="Tracker.Forget"/>, however it left). Under the gate.
    /// Its entry in <see cref="_foundSlow"/> stays until it ages out: a finding about a peer that
    /// left is still evidence of a busy machine for <see cref="SlowElsewhereWindow"/>, and that map
    /// is pruned at every finding, so it never holds more than one window's findings.
    /// </summary>
    public void Forget(int id)
    {
        _starved.Forget(id);
        _lastDownload.Remove(id);
        _excused.Remove(id);
        _slowUnder.Remove(id);
        _uplinkShort.Remove(id);
        _repromotions.Forget(id);
    }

    /// <summary>Whether anything kept per peer until it leaves (<see cref="Forget"/>) is still kept for <paramref name="id"/>; for tests. Under the gate.</summary>
    internal bool Remembers(int id) => _starved.Remembers(id) || _lastDownload.ContainsKey(id) || _excused.ContainsKey(id) || _slowUnder.ContainsKey(id) || _uplinkShort.ContainsKey(id) || _repromotions.Remembers(id);

    /// <summary>
    /// Makes a peer a leaf everywhere (budget 0) and sends the moves that re-place its children;
    /// false when it did not. At most one demotion within <see cref="NodeOptions.DemotionSpacing"/>,
    /// but for one case: when the demotion before was of a child that this peer itself found slow
    /// (<paramref name="foundBy"/> of that call), and this peer is demoted because its children
    /// are found slow together (<paramref name="childrenSlow"/>), this one goes ahead. That child was demoted
    /// because nothing pointed to its parent yet; when the parent is to be demoted now (its
    /// children found slow together), the child's demotion was a symptom of the same upload, not
    /// a second slow relay of a busy machine. Held back, the parent kept its place once that child
    /// moved elsewhere and nothing pointed to it any more (ci159). A demotion that goes ahead so
    /// lets no third one through (it is of no child found slow), and a peer found slow itself, by
    /// its own parent, is held back: before, each demotion let through named the next parent up,
    /// and a chain of relays found slow in turn, as on a busy machine, went at once
    /// (<c>SlowViewerTests.A_chain_of_relays_each_found_slow_by_its_parent_…</c>).
    /// </summary>
    /// <param name="id">The peer to demote.</param>
    /// <param name="why">Why, for the log.</param>
    /// <param name="foundBy">The parent that found <paramref name="id"/> slow, when that is why.</param>
    /// <param name="childrenSlow">True when <paramref name="id"/>'s children were found slow together (event 910).</param>
    /// <param name="slowChild">With <paramref name="childrenSlow"/>: the child whose finding it was, the first to shed.</param>
    /// <param name="slowChildTookMbps">With <paramref name="slowChild"/>: what it took of the shards the peer serves it, when said.</param>
    public bool Demote(int id, string why, int foundBy = Planner.None, bool childrenSlow = false, int slowChild = Planner.None, double? slowChildTookMbps = null)
    {
        int moves, child = Planner.None, childBudget = 0;
        lock (tracker.Gate)
        {
            var planner = tracker.Planner;
            if (!tracker.Peers.ContainsKey(id) || !planner.Contains(id) || planner.Budget(id) == 0) return false;
            long now = time.GetTimestamp();
            // The evidence that its children starve under it is noted whatever the spacing says.
            var starved = childrenSlow ? _starved.Note(id, slowChild, slowChildTookMbps, now) : null;
            if (_lastDemotion != 0 && time.GetElapsedTime(_lastDemotion, now) < options.DemotionSpacing && !(childrenSlow && _lastDemotionFoundBy == id))
            {
                SlowChildLog.DemotionSpaced(log, id, why, options.DemotionSpacing.TotalSeconds);
                return false;
            }
            if (!planner.CanDemoteWithoutEviction(id))
            {
                // No room elsewhere for its children: one of them, with upload to give, takes its
                // place (and its children), and the peer becomes a leaf. Seen across network
                // namespaces: a relay behind a 2 Mbit/s uplink, the only child of a coordinator
                // with --upload 1, kept its place and its children ran up to 12 s behind.
                child = ExchangeCandidate(id, now);
                if (child == Planner.None)
                {
                    // Evicting others to make room would cost more than a slow relay (and a busy
                    // machine can make healthy relays look slow): the peer keeps its place. When its
                    // children were found slow together, it sheds one into a free slot elsewhere and
                    // takes no more (Planner.Shed). Seen across network namespaces: a viewer behind
                    // a 1 Mbit/s uplink kept every child it had, was given a later joiner too, and
                    // that joiner fell more than the replay window behind.
                    if (childrenSlow && Shed(id, why, foundBy, slowChild, now)) return true;
                    // Nothing relieves its children: once they have starved under it long enough,
                    // it is evicted, if its leaving evicts nobody else (EvictStarved).
                    if (starved is not null && EvictStarved(id, why, starved, now)) return true;
                    SlowChildLog.NotDemoted(log, id, why);
                    return false;
                }
                childBudget = planner.Budget(child);
            }
            _repromotions.Demoted(id, planner.Budget(id), foundBy, childrenSlow);
            _starved.Forget(id);
            var plan = child == Planner.None ? planner.Demote(id) : planner.DemoteByExchange(id, child);
            _lastDemotion = now;
            _lastDemotionFoundBy = foundBy;
            tracker.SendMoves(plan, repair: false);
            moves = plan.Count;
            // The peer is told, with the figures (a demotion for peers that could not connect to
            // it has its own notice, RepairService.DemoteUnreachable).
            if ((foundBy != Planner.None || childrenSlow) && tracker.Peers.TryGetValue(id, out var demoted) && demoted.Version >= Protocol.ProbeVersion)
                demoted.SendNotice(new Notice(NoticeCode.Demoted, DemotedNotice(why, childrenSlow)).Write);
        }
        if (child == Planner.None) SlowChildLog.Demoted(log, id, why, moves);
        else SlowChildLog.DemotedByExchange(log, id, why, child, childBudget, moves);
        return true;
    }

    /// <summary>
    /// A relay whose children were found slow together, that can neither be demoted nor exchanged
    /// with a child: one child moves to a free slot outside its subtree, <paramref name="slowChild"/>
    /// first, and its budget drops to what it still serves (<see cref="Planner.Shed"/>, event 918).
    /// False when nothing changed (no child could move and its budget was what it serves already).
    /// A child moved counts as a demotion for <see cref="NodeOptions.DemotionSpacing"/>: once per
    /// finding, 10 s apart, a relay keeps as many children as its upload carries; a budget dropped
    /// with nobody moved does not hold other demotions back. Under the gate.
    /// </summary>
    private bool Shed(int id, string why, int foundBy, int slowChild, long now)
    {
        var planner = tracker.Planner;
        int before = planner.Budget(id);
        var moves = planner.Shed(id, slowChild);
        int after = planner.Budget(id);
        if (moves.Count == 0 && after == before) return false;
        if (moves.Count > 0)
        {
            // A budget dropped with nobody moved costs no repair: it does not hold other demotions back.
            _lastDemotion = now;
            _lastDemotionFoundBy = foundBy;
        }
        tracker.SendMoves(moves, repair: false);
        string shed = moves.Count == 0 ? "none of its children could move to a free slot elsewhere"
            : $"its child, peer {moves[0].Peer}, moves to a free slot elsewhere ({moves.Count} move(s) sent)";
        SlowChildLog.Shed(log, id, why, shed, before, after);
        return true;
    }

    /// <summary>Relays whose children starve under them with nothing to relieve them, and what evicted ones proved to carry. Under the gate.</summary>
    private readonly StarvedRelays _starved = new(options.SlowChildGrace * 2, time);

    /// <summary>
    /// How long the children of a relay must have starved under it (findings, each less than
    /// <see cref="SlowElsewhereWindow"/> after the one before, with no demotion, exchange or shed
    /// possible at the last) before it is evicted: four slow-child graces, 20 s by default. A relay
    /// on a loaded host sees its children fall behind for seconds after each stall; one whose
    /// uplink does not carry them keeps them behind, and they fall about a second behind for every
    /// few seconds of it, so 20 s leaves them well within the 30 s replay windows of their new parents.
    /// </summary>
    internal TimeSpan StarvedWindow => options.SlowChildGrace * 4;

    /// <summary>Takes a peer out of the overlay for <see cref="EvictStarved"/> and tells it the reason (Goodbye(Refused)); set by the coordinator. Called under the gate.</summary>
    internal Action<PeerSession, string>? Evict { get; set; }

    /// <summary>
    /// What a joiner at <paramref name="address"/> or with <paramref name="token"/> is given at most:
    /// the shard-streams it proved to carry when it was evicted for starving its children
    /// (<see cref="EvictStarved"/>), with why; null when it never was. Under the gate.
    /// </summary>
    public (int Carried, string Why)? ProvenUpload(string address, ulong token) => _starved.Proven(address, token, time.GetTimestamp());

    /// <summary>
    /// A relay whose children were found slow together, that can be neither demoted, nor exchanged
    /// with a child, nor made to shed one: it is evicted (taken out of the overlay, its children
    /// re-placed into the slots its leaving frees, and told why, naming --upload) when all of these
    /// hold, else false and nothing changes: its children have starved under it for
    /// <see cref="StarvedWindow"/> (<paramref name="run"/>), found slow by every one of them (two
    /// children reading slowly on purpose must not get a relay that feeds its others evicted);
    /// fewer than <see cref="MinOthersSlowForBusy"/> (and 1% of the overlay) other peers were found
    /// slow under other parents within <see cref="SlowElsewhereWindow"/> (many behind at once point to a busy machine) and it was not
    /// found slow itself then (its own download, or its process, may be what holds its children back);
    /// and the planner finds its leaving evicts nobody else (<see cref="Planner.CanEvictWithoutEvictingOthers"/>).
    /// A rejoin from its address or with its join token within <see cref="StarvedRelays.CapLifetime"/>
    /// is given no more budget than the shard-streams its children took from it (<see cref="ProvenUpload"/>), below what it was given.
    /// The eviction counts as a demotion for <see cref="NodeOptions.DemotionSpacing"/>. Under the gate.
    /// </summary>
    private bool EvictStarved(int id, string why, StarvedRelays.Run run, long now)
    {
        var planner = tracker.Planner;
        var children = new HashSet<int>(planner.ChildrenInAnyShard(id));
        int found = run.Found.Keys.Count(children.Contains);
        var span = time.GetElapsedTime(run.Since, now);
        // Every child found slow: two children that read slowly on purpose (one person's viewers)
        // must not get a relay that keeps its other children fed evicted as an uplink that fails.
        if (children.Count == 0 || span < StarvedWindow || found < children.Count || Evict is null || !tracker.Peers.TryGetValue(id, out var session)) return false;
        int others = _foundSlow.Count(f => f.Key != id && f.Value.Parent != id && !children.Contains(f.Key) && time.GetElapsedTime(f.Value.At, now) <= SlowElsewhereWindow);
        string? kept = others >= Math.Max(MinOthersSlowForBusy, tracker.Peers.Count / 100)
            ? $"{others} peers under other parents were found slow in the last {SlowElsewhereWindow.TotalSeconds:0.#} s (many viewers behind at once point to a busy machine)"
            : _foundSlow.TryGetValue(id, out var self) && time.GetElapsedTime(self.At, now) <= SlowElsewhereWindow
                ? $"its own parent found it slow in the last {SlowElsewhereWindow.TotalSeconds:0.#} s (its download, or its process, may be what holds its children back)"
                : !planner.CanEvictWithoutEvictingOthers(id) ? "the overlay has no room for its children without it either" : null;
        if (kept is not null)
        {
            SlowChildLog.NotEvicted(log, id, why, span.TotalSeconds, kept);
            return false;
        }
        int used = planner.UsedUnits(id);
        double took = run.Took(children);
        double? shard = source.RateMbps() / options.ShardCount;
        // What its children took from it, in whole shard-streams, below what it was given.
        int carried = shard is > 0 ? Math.Clamp((int)Math.Floor((took / shard.Value) + 1e-9), 0, used - 1) : 0;
        string Failed(string its, string it) => (shard is > 0 && took > 0)
            ? string.Create(CultureInfo.InvariantCulture, $"{its} uplink did not carry the {used} shard-stream(s) placed on {it} ({its} children took {took:0.0} of the {used * shard.Value:0.0} Mbit/s they needed, for {span.TotalSeconds:0} s)")
            : string.Create(CultureInfo.InvariantCulture, $"{its} uplink did not carry the {used} shard-stream(s) placed on {it} (for {span.TotalSeconds:0} s)");
        string back = carried == 0 ? "--upload 0 here: this coordinator takes you back as a leaf"
            : string.Create(CultureInfo.InvariantCulture, $"at most {carried / (double)options.ShardCount:0.###} here: this coordinator takes you back relaying {carried} shard-stream(s) at most");
        string reason = $"evicted: {Failed("your", "you")}; rejoin with a lower --upload ({back})";
        string failed = Failed("its", "it");
        _starved.Evicted(session.Address, session.Token, carried, failed, now);
        _starved.Forget(id);
        _lastDemotion = now;
        _lastDemotionFoundBy = Planner.None;
        SlowChildLog.Evicted(log, id, why, span.TotalSeconds, found, children.Count, reason);
        Evict(session, reason);
        return true;
    }

    /// <summary>What a peer demoted for being slow is told (Notice(Demoted), logged by the peer at info as event 917).</summary>
    internal static string DemotedNotice(string why, bool childrenSlow) =>
        $"the coordinator moved this peer to the leaves: it relays nothing from now on and still receives the whole stream, as its {(childrenSlow ? "upload did not carry its children" : "download did not keep up")} ({why})";

    /// <summary>Peers demoted for being slow that kept up since (<see cref="Repromotions"/>). Under the gate.</summary>
    private readonly Repromotions _repromotions = new(options.RepromotionProbation, time);

    /// <summary>The source's head at the last <see cref="CheckRepromotions"/>: it moved since, or the source produced nothing.</summary>
    private long _headAtCheck = -1;

    /// <summary>How often the coordinator calls <see cref="CheckRepromotions"/>.</summary>
    internal static readonly TimeSpan RepromotionCheckInterval = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Gives each peer that kept up through its probation its budget back
    /// (<see cref="Planner.Repromote"/>: nobody moves; its slots serve later joins and repairs), log
    /// event 915. The time since the last call counts only when the source produced in between.
    /// Called every <see cref="RepromotionCheckInterval"/> while the stream lasts.
    /// </summary>
    public void CheckRepromotions()
    {
        lock (tracker.Gate)
        {
            var planner = tracker.Planner;
            long head = source.NextOffset;
            bool streaming = !source.Ended && _headAtCheck >= 0 && head > _headAtCheck;
            _headAtCheck = head;
            var due = _repromotions.Check(streaming, id =>
                tracker.Peers.ContainsKey(id) && planner.Contains(id) ? [.. Enumerable.Range(0, options.ShardCount).Select(s => planner.ParentOf(id, s))] : null);
            foreach (var d in due)
                if (planner.Repromote(d.Id, d.Budget))
                    SlowChildLog.Repromoted(log, d.Id, d.Budget, d.Kept.TotalSeconds, NodeName(d.FoundBy), d.Count);
        }
    }

    /// <summary>
    /// The child of <paramref name="id"/> to take its place (<see cref="Planner.DemoteByExchange"/>),
    /// or <see cref="Planner.None"/>: of the children that relay and that the planner can exchange
    /// with it, one not found slow within <see cref="SlowElsewhereWindow"/> if there is one, and of
    /// those the one with the most budget (its declared upload, capped by --max-upload at its
    /// join), the earliest joined among equals. A child found slow by another parent within
    /// <see cref="SlowElsewhereWindow"/>, or excused under another parent within
    /// <see cref="ExcuseWindow"/>, is never chosen: its own link is suspect. Found slow by
    /// <paramref name="id"/> itself only ranks it after the others: when the peer's upload does
    /// not carry its children, all of them are found slow.
    /// Under the gate.
    /// </summary>
    private int ExchangeCandidate(int id, long now)
    {
        var planner = tracker.Planner;
        var children = new SortedSet<int>(planner.ChildrenInAnyShard(id));
        bool FoundSlow(int child, out int by)
        {
            by = _foundSlow.TryGetValue(child, out var found) ? found.Parent : Planner.None;
            return by != Planner.None && time.GetElapsedTime(found.At, now) <= SlowElsewhereWindow;
        }
        bool Suspect(int child) =>
            (FoundSlow(child, out int by) && by != id)
            || (_excused.TryGetValue(child, out var excused) && excused.Parent != id && time.GetElapsedTime(excused.At, now) < ExcuseWindow);
        return children.Where(c => tracker.Peers.ContainsKey(c) && planner.Budget(c) > 0 && !Suspect(c))
            .OrderBy(c => FoundSlow(c, out _))
            .ThenByDescending(planner.Budget)
            .FirstOrDefault(c => planner.CanDemoteByExchange(id, c), Planner.None);
    }
}

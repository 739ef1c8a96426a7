using Microsoft.Extensions.Logging;
using ShardStream.Topology;
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

    /// <summary>
    /// Sends the Welcome's frames (the Welcome, then a notice or the stream header that go with
    /// it) on <paramref name="link"/>, the peer's control link now, before the chunks of the shards
    /// served there are queued: they go out in that order. Moves and notices are sent ahead of the
    /// stream only once the writer has taken the last of them (<see cref="SendMove"/>, <see cref="SendNotice"/>).
    /// </summary>
    public void SendWelcome(Link link, IReadOnlyList<byte[]> frames)
    {
        lock (_moveOrder)
        {
            if (_movesOn != link) StartCounts(link);
            for (int i = 0; i < frames.Count - 1; i++) link.Send(frames[i]);
            link.Send(frames[^1], (_, _, _) => WelcomeOut(link));
        }
    }

    /// <summary>
    /// The writer of <paramref name="link"/> took the last frame of its Welcome: the Moves and
    /// notices held until then go ahead of the stream now, in the order they were sent, and the
    /// next ones at once.
    /// </summary>
    private void WelcomeOut(Link link)
    {
        lock (_moveOrder)
        {
            // A link replaced meanwhile (a rejoin in place): its Moves and notices were dropped with
            // its counts, as they would have been with the link.
            if (_movesOn != link) return;
            _welcomeOut = true;
            if (_held is not { } held) return;
            _held = null;
            foreach (var frame in held) link.SendAhead(frame);
        }
    }

    /// <summary>
    /// Sends a Move ahead of the chunks queued on the peer's control link (the coordinator serves
    /// some shards there): a repair must not wait behind the seconds of stream a slow reader has
    /// queued, or the replay windows move past the point it resumes at (seen in the 200-peer demo
    /// under load: a Move applied 103 s after it was sent, and the peer's shard lost as a gap), or
    /// the peer joins again in its place for a report the Move answers (event 1418). Moves keep
    /// their order among themselves (the frames sent ahead do), and none passes the Welcome: one
    /// sent before the writer took the Welcome's last frame is held here until it has
    /// (<see cref="SendWelcome"/>), not until the peer's first Attached: the answer to a failed
    /// attach of the Welcome, reported before that Attached, would otherwise wait behind the whole
    /// join backlog (3.7 MB on a 125 kB/s link, past the report's wait: <c>MoveBeforeAttachedTests</c>).
    /// </summary>
    public void SendMove(Move move)
    {
        lock (_moveOrder)
        {
            var control = Control;
            if (_movesOn != control) StartCounts(control);
            foreach (var e in move.Shards) _movedTo[e.Shard] = (int)e.ParentId;
            _movesSent++;
            Ahead(control, FrameWriting.ToArray(move.Write));
        }
    }

    /// <summary>
    /// Sends a notice (a DropChild, a Notice) ahead of the chunks queued on the peer's control
    /// link, as a Move (<see cref="SendMove"/>): in order with the Moves, and never before the
    /// Welcome. It names no chunk, so nothing queued before it is needed to read it; behind the
    /// stream, a peer whose reading runs behind went on serving a child the coordinator had taken
    /// out of the overlay while it read seconds of backlog (<c>NoticeAheadTests</c>).
    /// </summary>
    public void SendNotice(Action<System.Buffers.IBufferWriter<byte>> write)
    {
        lock (_moveOrder)
        {
            var control = Control;
            if (_movesOn != control) StartCounts(control);
            Ahead(control, FrameWriting.ToArray(write));
        }
    }

    /// <summary>
    /// Evicts the peer: Goodbye(Refused, <paramref name="reason"/>) on its control link ahead of
    /// everything queued there, which is dropped (it is leaving). Behind a slow reader's backlog
    /// the goodbye came after seconds of stream, or the close timeout reset the link first, and
    /// the peer said "connection lost" instead of the coordinator's reason (<c>NoticeAheadTests</c>).
    /// While the writer has not yet taken the Welcome of that link (a peer evicted by a repair
    /// right after its join), only the queued chunks are dropped: the goodbye passing its Welcome
    /// was the answer to its Join, a refusal that ends a first joiner.
    /// </summary>
    public void Evict(string reason, ILogger log)
    {
        bool welcomeQueued;
        Link control;
        lock (_moveOrder)
        {
            control = Control;
            welcomeQueued = _movesOn == control && !_welcomeOut;
        }
        control.CloseAsync(GoodbyeCode.Refused, reason, dropQueued: !welcomeQueued, dropChunks: welcomeQueued).Observe(log, $"peer {Id}: evicting");
    }

    /// <summary>Sends <paramref name="frame"/> ahead of the stream on <paramref name="control"/>, or holds it until the Welcome went out. Under <c>_moveOrder</c>.</summary>
    private void Ahead(Link control, byte[] frame)
    {
        if (_welcomeOut) control.SendAhead(frame);
        else (_held ??= []).Add(frame);
    }

    /// <summary>The peer reported Attached on <paramref name="link"/> (its Welcome's attaches, or a Move's, are done).</summary>
    public void ReportedAttached(Link link)
    {
        lock (_moveOrder)
        {
            // A report read on a control link that was replaced since counts for nothing: the new
            // link's counts stand (reset to the old link, they would say the wrong Moves applied).
            if (link != Control) return;
            if (_movesOn != link) StartCounts(link);
            _attachedReports++;
        }
    }

    /// <summary>
    /// Notes the next Move sent on the peer's control link as one to know the outcome of
    /// (<see cref="AppliedNotedMove"/>): a re-attach to the parent it reported lost.
    /// </summary>
    public void NoteNextMove()
    {
        lock (_moveOrder)
        {
            if (_movesOn != Control) StartCounts(Control);
            // Its Welcome's report, one for each Move sent before it, and its own.
            _noted = (Control, _movesSent + 2);
        }
    }

    /// <summary>
    /// True when the peer reported Attached for the Move noted last (<see cref="NoteNextMove"/>), on
    /// the same control link (a Move noted before a rejoin in place is carried over to the new link:
    /// <see cref="StartCounts"/>): as many reports as its Welcome, the Moves before it and it. A peer
    /// whose attach failed reports that parent lost before its Attached, so a report that comes
    /// while this is false is of an attach that failed (or of one still under way). Moves are
    /// applied side by side and the reports name none, so it errs both ways: a later Move's report
    /// may stand for it ("applied"), and a Move sent before it and still under way (a new parent
    /// slow to answer: up to a connect and a welcome timeout) keeps this false after its own report
    /// came (the counts cannot tell that from a failed attach, whose report comes before its
    /// Attached; resilience.md gives this known gap).
    /// </summary>
    public bool AppliedNotedMove
    {
        get
        {
            lock (_moveOrder)
            {
                if (_movesOn != Control) StartCounts(Control);
                return _noted.Link == Control && _attachedReports >= _noted.Reports;
            }
        }
    }

    private (Link? Link, int Reports) _noted;

    /// <summary>
    /// True when the last Move sent on the peer's control link as it is now gave
    /// <paramref name="shard"/> to <paramref name="parent"/>: the peer has been told that place,
    /// and reads it before anything it is sent later (RepairService: a report of a parent taken out
    /// since, sent before that Move arrived, needs no Move again).
    /// </summary>
    public bool WasMovedTo(int shard, int parent)
    {
        lock (_moveOrder) return _movesOn == Control && _movedTo.TryGetValue(shard, out var to) && to == parent;
    }

    /// <summary>The counts below start again on <paramref name="control"/> (a rejoin replaced the link: its Welcome is where the peer is told its places). Under <c>_moveOrder</c>.</summary>
    private void StartCounts(Link control)
    {
        // A Move noted on the link replaced (the peer joined again in its place after it) is
        // carried over: applied there, it stays applied (the peer reached that parent); not yet,
        // the rejoin's Welcome places the shard where the plan has it, and its Attached (the first
        // report on the new link) says that attach is done. Not carried over, a report about that
        // parent after any rejoin would count as one it could not reach (804).
        if (_noted.Link is { } noted && noted == _movesOn)
            _noted = (control, _attachedReports >= _noted.Reports ? 0 : 1);
        (_movesOn, _attachedReports, _movesSent, _welcomeOut, _held) = (control, 0, 0, false, null);
        _movedTo.Clear();
    }

    private readonly object _moveOrder = new();

    /// <summary>The control link the counts below are of: Moves sent on it, and the peer's Attached reports on it.</summary>
    private Link? _movesOn;

    /// <summary>True once the writer of <see cref="_movesOn"/> took the last frame of its Welcome: Moves and notices go ahead of the stream.</summary>
    private bool _welcomeOut;

    /// <summary>Moves and notices sent on <see cref="_movesOn"/> before its Welcome went out, encoded, in order (null: none).</summary>
    private List<byte[]>? _held;

    /// <summary>Moves sent on <see cref="_movesOn"/> (held until its Welcome went out, or sent ahead).</summary>
    private int _movesSent;

    private int _attachedReports;

    /// <summary>The parent the last Move sent on <see cref="_movesOn"/> named for each shard.</summary>
    private readonly Dictionary<int, int> _movedTo = [];

    /// <summary>The first chunk this peer holds: its join point (or the earliest it resumed at), so that a peer moved under it from further back fills the gap first.</summary>
    public long HeldFrom { get; set; }

    /// <summary>The protocol version its control link speaks.</summary>
    public ushort Version { get; set; }

    private volatile Wire.ParentRtt[] _parentRtts = [];

    /// <summary>Former parents whose last reported RTT is kept besides the current ones, and former parents in the plan remembered (<see cref="PlannedParent"/>).</summary>
    private const int FormerParentsKept = 16;

    /// <summary>
    /// The RTTs to its parents the peer's heartbeats reported (version 11; empty before): its last
    /// report, then what it last reported for up to <see cref="FormerParentsKept"/> former parents
    /// (latest first), so that a move back to a parent is judged by what was measured to it. Only
    /// entries for nodes that were its parents in the plan (<see cref="WasPlannedParent"/>): see
    /// <see cref="Report"/>.
    /// </summary>
    public Wire.ParentRtt[] ParentRtts => _parentRtts;

    /// <summary>
    /// Takes a heartbeat's parent RTTs (from the control link's read loop only). An entry for a node
    /// that was never this peer's parent in the plan during this session is dropped: the peer cannot
    /// have measured it as a parent, and its claim would stand for a measurement in a move to that
    /// node (docs/security.md, "Lies about RTTs and coordinates"). Entries kept from earlier reports
    /// are dropped too once their node is no longer remembered as a former parent. Returns the ids
    /// dropped from this report (empty: none).
    /// </summary>
    public ulong[] Report(Wire.ParentRtt[] reported)
    {
        var old = _parentRtts;
        var merged = new List<Wire.ParentRtt>(reported.Length + Math.Min(old.Length, FormerParentsKept));
        List<ulong>? ignored = null;
        foreach (var r in reported)
        {
            if (WasPlannedParent(r.NodeId)) merged.Add(r);
            else (ignored ??= []).Add(r.NodeId);
        }
        int current = merged.Count;
        _reaching = [.. merged.Where(r => r.Samples > 0).Select(r => (int)r.NodeId)];
        foreach (var r in old)
        {
            if (merged.Count >= current + FormerParentsKept) break;
            if (!merged.Exists(m => m.NodeId == r.NodeId) && WasPlannedParent(r.NodeId)) merged.Add(r);
        }
        _parentRtts = [.. merged];
        return ignored is null ? [] : [.. ignored];
    }

    /// <summary>The parents (nodes that were its parents in the plan) with a round trip measured in the peer's last report: those it has a link to now.</summary>
    private volatile int[] _reaching = [];

    /// <summary>
    /// True when the peer's last heartbeat reported a round trip measured on its link to
    /// <paramref name="parent"/> (version 11): it reached that node, and is connected to it now
    /// (<see cref="RepairService.MakesLeaf"/>). The peer's own word, as every entry of <see cref="Report"/>.
    /// </summary>
    public bool Reaches(int parent) => Array.IndexOf(_reaching, parent) >= 0;

    /// <summary>The ids dropped from the peer's last report that had any (<see cref="Report"/>): the coordinator logs a report's drops only when they differ from these.</summary>
    public ulong[] LastIgnored { get; set; } = [];

    /// <summary>
    /// True while the coordinate the peer claims puts it grossly nearer the coordinator than the
    /// coordinator measured it (<see cref="Coordinator.Agreeing"/>): the coordinator logs when this changes.
    /// </summary>
    public bool CoordinateDiscounted { get; set; }

    /// <summary>The coordinate the peer last claimed, as <see cref="Coordinator.Agreeing"/> held it (<see cref="NetworkCoordinate.Unknown"/> before its first); under the coordinator's lock.</summary>
    public NetworkCoordinate Claim { get; set; } = NetworkCoordinate.Unknown;

    /// <summary>The RTT to the coordinator that <see cref="Claim"/> was checked with (NaN: none).</summary>
    public double ClaimCheckedMs { get; set; } = double.NaN;

    /// <summary>What the peers it was a parent of measured to it: the check of its claim's direction (<see cref="CoordinateWitnesses"/>).</summary>
    public CoordinateWitnesses Witnesses { get; } = new();

    /// <summary>Shard by shard, the node the plan last made this peer's parent (<see cref="Topology.Planner.None"/>: none yet).</summary>
    private readonly int[] _plannedParents = [.. Enumerable.Repeat(Topology.Planner.None, Protocol.MaxShards)];

    /// <summary>Nodes that were this peer's parents in the plan and are no longer (latest first, at most <see cref="FormerParentsKept"/>).</summary>
    private readonly List<int> _formerParents = [];

    /// <summary>
    /// For each node that is or was this peer's parent in the plan (as kept in <see cref="_plannedParents"/>
    /// and <see cref="_formerParents"/>), the shards it was its parent of during this session, one bit each.
    /// </summary>
    private readonly Dictionary<int, int> _shardsOf = [];

    /// <summary>
    /// The plan made <paramref name="parent"/> this peer's parent in <paramref name="shard"/> (its
    /// Welcome, or a Move; called under the tracker's gate before either is sent). The parent it
    /// had there becomes a former parent, unless it still is one in another shard; the oldest
    /// former parents are forgotten past <see cref="FormerParentsKept"/>, so what is kept per peer
    /// is bounded by the shard count and that.
    /// </summary>
    public void PlannedParent(int shard, int parent)
    {
        if ((uint)shard >= (uint)_plannedParents.Length) return;
        lock (_formerParents)
        {
            int before = _plannedParents[shard];
            _plannedParents[shard] = parent;
            _formerParents.Remove(parent);
            _shardsOf[parent] = _shardsOf.GetValueOrDefault(parent) | 1 << shard;
            if (before == Topology.Planner.None || before == parent || Array.IndexOf(_plannedParents, before) >= 0) return;
            _formerParents.Insert(0, before);
            if (_formerParents.Count <= FormerParentsKept) return;
            _shardsOf.Remove(_formerParents[FormerParentsKept]);
            _formerParents.RemoveAt(FormerParentsKept);
        }
    }

    /// <summary>The peers (not the coordinator) the plan last made this peer's parents, each once.</summary>
    public int[] PlannedPeerParents()
    {
        lock (_formerParents) return [.. _plannedParents.Where(p => p > Topology.Planner.Source).Distinct()];
    }

    /// <summary>True when the plan made <paramref name="node"/> this peer's parent in some shard during this session (now, or among the former parents remembered).</summary>
    public bool WasPlannedParent(ulong node)
    {
        if (node > int.MaxValue) return false;
        lock (_formerParents) return Array.IndexOf(_plannedParents, (int)node) >= 0 || _formerParents.Contains((int)node);
    }

    /// <summary>
    /// True when the plan made <paramref name="node"/> this peer's parent in <paramref name="shard"/>
    /// during this session, and it is still its parent or a former parent remembered (<see cref="WasPlannedParent"/>).
    /// </summary>
    public bool WasPlannedParentOf(ulong node, int shard)
    {
        if (node > int.MaxValue || (uint)shard >= (uint)_plannedParents.Length) return false;
        lock (_formerParents) return _shardsOf.TryGetValue((int)node, out int shards) && (shards & 1 << shard) != 0;
    }

    /// <summary>The token of its Join (0: none): a Join with the same one is this peer again.</summary>
    public ulong Token { get; init; }

    /// <summary>
    /// Where its first Welcome started it, with the media header and the leaf notice sent with it,
    /// for that Welcome sent again when it was lost (Admission's WelcomeAgain); null for a peer
    /// placed with resume points (a rejoin as a new peer). A join point too old for the windows is
    /// replaced when the Welcome is sent again.
    /// </summary>
    public FirstWelcome? FirstWelcome { get; set; }

    /// <summary>How many parents this peer has accused of lying.</summary>
    public int Accusations { get; set; }

    /// <summary>
    /// Nodes this peer's Join reported as not measured, with the RTT the plan took for each (ms): one
    /// it connected to that gave no answer within its round (the round's whole time), or one it could
    /// not connect to. A latency move takes that figure in place of the node's claimed coordinate
    /// (<see cref="Coordinator"/>'s reported RTTs), so a node that dodges the joiner's probe does not
    /// win it after its placement by the claim it could not win it by at its join.
    /// </summary>
    public Dictionary<int, double> Unmeasured { get; } = [];

    /// <summary>Children that could not connect to this peer even after a second attempt (see <see cref="RepairService.DropUnreachableEdges"/>).</summary>
    public HashSet<int> UnreachableBy { get; } = [];

    /// <summary>
    /// When a child of this peer in the plan last reported it lost (a timestamp; 0: never). A
    /// control link that breaks right after is a peer gone for its children, not one away that
    /// will join again (see <c>Coordinator.WatchControlAsync</c>).
    /// </summary>
    public long LostByChildAt { get; set; }

    /// <summary>Its parents were told to stop serving it (<see cref="Tracker.DropFromParents"/>). Under the gate.</summary>
    public bool DroppedFromParents { get; set; }

    /// <summary>
    /// Per shard, when this peer's repair of its parent of that shard last began (a timestamp; 0:
    /// never): a report of it about its parent in the plan that the coordinator answered with a
    /// Move, or a Move of a repair (its parent failed, or an edge to it was taken out of the
    /// plan), not a Move of the optimiser. Until the repair is done it has nothing of that shard
    /// to relay, and its children's cuts for it are no sign against it
    /// (<see cref="RepairService.OnParentLost"/>). Under the gate.
    /// </summary>
    private readonly long[] _repairedAt = new long[Protocol.MaxShards];

    /// <summary>This peer's parent of <paramref name="shards"/> is being repaired since <paramref name="at"/>. Under the gate.</summary>
    public void UnderRepair(IEnumerable<int> shards, long at)
    {
        foreach (int s in shards)
            if (s < _repairedAt.Length) _repairedAt[s] = at;
    }

    /// <summary>When the last repair of every one of <paramref name="shards"/> had begun: the earliest of their last repairs (0: one had none). Under the gate.</summary>
    public long RepairedAt(IEnumerable<int> shards) => shards.Select(s => s < _repairedAt.Length ? _repairedAt[s] : 0).DefaultIfEmpty(0).Min();

    /// <summary>
    /// The reports of this peer's children about it that were excused as its starving (event
    /// 9308): which child, and when. Kept for <see cref="RepairService"/>'s period (minutes), and
    /// counted per child over it; no report starts the count again. Under the gate.
    /// </summary>
    public List<(int Child, long At)> StarvedExcuses { get; } = [];

    /// <summary>
    /// This peer's reports about its parents that counted against them (neither excused nor about
    /// a parent out of the plan): which parent, and when. Kept for <see cref="RepairService"/>'s
    /// period (minutes): one more than a few about one parent takes the edge out of the plan.
    /// Under the gate.
    /// </summary>
    public List<(int Parent, long At)> CountedCuts { get; } = [];

    /// <summary>What is left of this peer's ParentLost bucket (<see cref="RepairService.TakeReport"/>), as of <see cref="ReportsCheckedAt"/> (0: never). Under the gate.</summary>
    public double ReportTokens { get; set; }

    /// <summary>When <see cref="ReportTokens"/> was last refilled (a timestamp; 0: never). Under the gate.</summary>
    public long ReportsCheckedAt { get; set; }

    /// <summary>This peer's reports dropped past its bucket since the last line that said so (event 9322), and when that was (0: never). Under the gate.</summary>
    public int ReportsDropped { get; set; }

    /// <inheritdoc cref="ReportsDropped"/>
    public long DroppedReportsSaidAt { get; set; }

    /// <summary>
    /// When another peer was moved to make this one room, as an edge from it to a parent was taken
    /// out of the plan on its report: one entry per such Move (a leaf exchanging places with it in
    /// one shard; <see cref="RepairService.DropsMakingRoom"/>), kept for <see cref="RepairService"/>'s
    /// period (minutes). Under the gate.
    /// </summary>
    public List<long> RoomMoves { get; } = [];

    /// <summary>Whether this peer is at <see cref="RepairService.DropsMakingRoom"/> and was told so in the log (event 9321, said once each time it gets there). Under the gate.</summary>
    public bool DropsCapSaid { get; set; }

    /// <summary>
    /// Reports of this peer's children that lost it while its control link was silent, which the
    /// coordinator answered by aborting that link and leaving the repair to its failure: taken
    /// again when it joins in its place instead (<see cref="RepairService.OnRejoinedInPlace"/>).
    /// Under the gate.
    /// </summary>
    public List<(PeerSession Child, ShardStart[] Lost, bool Lagged)> LostWhileSilent { get; } = [];

    /// <summary>The parent this peer was last told to attach to again after a lost link (-1: none), and when.</summary>
    public int ReattachedTo { get; set; } = -1;

    public long ReattachedAt { get; set; }

    /// <summary>
    /// Per shard, the fills this peer may still ask for: one per Move entry that named a new
    /// parent holding the shard only from a later chunk, up to the latest such chunk, and at most
    /// one a rejoin in place gave back (<see cref="AllowFillAgain"/>). A fill nothing asked for
    /// would make the coordinator a parent nobody placed (docs/security.md). Under its own lock.
    /// </summary>
    private readonly Dictionary<int, (int Count, long Until)> _fills = [];

    /// <summary>
    /// Per shard, the fill the shard's last Move owes: up to the first chunk of its new parent
    /// (<c>Parent</c>), from the chunk the peer first asked a fill from since (-1: not asked yet),
    /// and whether a rejoin in place gave it back already. Under the lock of <see cref="_fills"/>.
    /// </summary>
    private readonly Dictionary<int, (int Parent, long Until, long From, bool Again)> _owedFills = [];

    /// <summary>A Move put <paramref name="shard"/> under <paramref name="parent"/>, which holds it only from chunk <paramref name="until"/>: one fill more, and the one this Move owes.</summary>
    public void AllowFill(int shard, long until, int parent)
    {
        lock (_fills)
        {
            var (count, previous) = _fills.GetValueOrDefault(shard);
            _fills[shard] = (count + 1, Math.Max(previous, until));
            _owedFills[shard] = (parent, until, -1, false);
        }
    }

    /// <summary>A Move put <paramref name="shard"/> under a parent that needs no fill: no earlier Move's fill is owed any more (those not asked yet may still be).</summary>
    public void OweNoFill(int shard)
    {
        lock (_fills) _owedFills.Remove(shard);
    }

    /// <summary>
    /// A rejoin in place that keeps <paramref name="shard"/> under <paramref name="parent"/>: the
    /// fill the shard's last Move owes, when it went to that parent, is allowed once more (it may
    /// have broken off with the old control link; asked there or not, as a Fill sent on the old
    /// link may still be read after this). Once per Move, never added up over rejoins: a peer
    /// that joins again and again gets that one fill again, no more.
    /// </summary>
    public void AllowFillAgain(int shard, int parent)
    {
        lock (_fills)
        {
            if (!_owedFills.TryGetValue(shard, out var owed) || owed.Parent != parent || owed.Again) return;
            var (count, previous) = _fills.GetValueOrDefault(shard);
            _fills[shard] = (count + 1, Math.Max(previous, owed.Until));
            _owedFills[shard] = owed with { Again = true };
        }
    }

    /// <summary>What <see cref="TryTakeFill"/> found.</summary>
    public enum FillTaken
    {
        /// <summary>No Move allowed a fill of the shard: a protocol error.</summary>
        Never,

        /// <summary>A Move did, and a rejoin in place gave that fill back already, which was taken: nothing more is sent.</summary>
        Spent,

        /// <summary>Allowed, from the chunk given back.</summary>
        Allowed,
    }

    /// <summary>
    /// Takes one allowed fill of <paramref name="shard"/> from <paramref name="from"/> up to
    /// <paramref name="until"/>; <paramref name="start"/> is where it is served from: no earlier
    /// than the first fill asked since the shard's last Move (a peer's next chunk only grows, so
    /// a fill given back at a rejoin is what the Move owed, whatever chunk the peer says it is at).
    /// </summary>
    public FillTaken TryTakeFill(int shard, ulong from, ulong until, out long start)
    {
        start = (long)Math.Min(from, long.MaxValue);
        lock (_fills)
        {
            bool owes = _owedFills.TryGetValue(shard, out var owed);
            if (!_fills.TryGetValue(shard, out var allowed) || until > (ulong)allowed.Until)
                return owes && owed.Again && until <= (ulong)owed.Until ? FillTaken.Spent : FillTaken.Never;
            if (allowed.Count == 1) _fills.Remove(shard);
            else _fills[shard] = (allowed.Count - 1, allowed.Until);
            if (!owes) return FillTaken.Allowed;
            if (owed.From < 0) _owedFills[shard] = owed with { From = start };
            else start = Math.Max(start, owed.From);
            return FillTaken.Allowed;
        }
    }
}

/// <summary>The coordinator's side of a peer's control link: the peer's session.</summary>
internal sealed record ControlRole(PeerSession Session) : LinkRole;

/// <summary>
/// What a joiner's first Welcome said besides its place: the join point (<paramref name="StartSeq"/>,
/// <paramref name="StartOffset"/>), the media header its StreamHeader carried (null: none), and
/// why it was placed as a leaf (the text of its Notice(Leaf); null: it was not);
/// <paramref name="At"/>: when the join point was chosen (a timestamp).
/// </summary>
internal sealed record FirstWelcome(long StartSeq, long StartOffset, Media.MediaHeader? Header, string? Leaf, long At);

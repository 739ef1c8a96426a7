using Microsoft.Extensions.Logging;
using ShardStream.Topology;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// The coordinator's authoritative view of the overlay, as a BitTorrent tracker keeps one: the
/// planner (who receives which shard from whom), the session of every listed peer, and the
/// admission tickets that let a child attach where the plan puts it. Its <see cref="Gate"/> is the
/// coordinator's one lock: the source, admission, repair and eviction take it to read or change
/// the plan, so that a welcome, a Move and the plan they come from always agree. Every way out of
/// <see cref="Peers"/> goes through <see cref="Forget"/>, which hands the session to
/// <paramref name="forgotten"/> once: what the coordinator's other parts keep about the peer
/// (its probe's round trip, its slow findings) goes with it, whether it left, failed or was evicted.
/// </summary>
internal sealed class Tracker(CoordinatorOptions options, RunSigner signer, ILogger log, TimeProvider time, Func<string> listenAddress, Action<PeerSession> forgotten)
{
    private int _attachedPeers;
    private ulong _ticketSerial;

    /// <summary>The coordinator's lock.</summary>
    public object Gate { get; } = new();

    /// <summary>The plan. Under the gate.</summary>
    public Planner Planner { get; } = CreatePlanner(options);

    /// <summary>Every listed peer's session, by id. Under the gate; a session is listed by <see cref="List"/>.</summary>
    public Dictionary<int, PeerSession> Peers { get; } = [];

    /// <summary>
    /// The session each join token placed last, of those listed (tokens 0, of joiners older than
    /// version 4, are not kept). Under the gate. One per token: a first join tried again (its
    /// Welcome lost) brings the token on a second connection, and a rejoin in place must find the
    /// one session that holds the peer's place, not whichever a walk over <see cref="Peers"/> meets last.
    /// </summary>
    private readonly Dictionary<ulong, PeerSession> _byToken = [];

    /// <summary>Lists a placed peer's session. Under the gate.</summary>
    public void List(PeerSession session)
    {
        Peers[session.Id] = session;
        if (session.Token != 0) _byToken[session.Token] = session;
        PeersChanged();
    }

    /// <summary>The listed session <paramref name="token"/> placed last (<see cref="List"/>); null for none, or for token 0. Under the gate.</summary>
    public PeerSession? SessionOf(ulong token) => token != 0 && _byToken.TryGetValue(token, out var session) ? session : null;

    /// <summary>How often quiet control links heartbeat, chosen from the number of peers (<see cref="PeersChanged"/>). Under the gate.</summary>
    public ControlHeartbeats ControlHeartbeats { get; } = new(options);

    /// <summary>
    /// Called under the gate whenever <see cref="Peers"/> gained or lost a peer: when the number of
    /// peers changes the control-link heartbeat interval, every control link is asked for the new
    /// one (it goes out with each link's next heartbeat; the peer follows and says so). A walk over
    /// every peer, but rare: the interval changes only when the count moved by a quarter.
    /// </summary>
    public void PeersChanged()
    {
        var before = ControlHeartbeats.Interval;
        if (!ControlHeartbeats.Update(Peers.Count)) return;
        foreach (var session in Peers.Values) ControlHeartbeats.Offer(session.Control);
        CoordinatorLog.ControlHeartbeatChanged(log, ControlHeartbeats.Interval.TotalSeconds, Peers.Count, before.TotalSeconds);
    }

    /// <summary>Peers that said they attached to all their parents. Under the gate.</summary>
    public int AttachedPeers => _attachedPeers;

    private static Planner CreatePlanner(CoordinatorOptions options)
    {
        var planner = new Planner(new PlannerOptions(options.ShardCount, options.EffectiveTopology, options.SourceBudget, LatencyAware: options.LatencyAware) { RebuildMinPeers = options.LatencyRebuildMinPeers, RebuildMinGainShare = options.LatencyRebuildMinGainShare });
        planner.SetCoordinate(Planner.Source, Coordinator.Anchor);
        return planner;
    }

    /// <summary>A listed peer attached to all its parents: counted once per peer, not by a walk over every peer at every report (50,000 peers). Under the gate.</summary>
    public void MarkAttached(PeerSession session)
    {
        if (!session.Attached && Peers.ContainsKey(session.Id)) _attachedPeers++;
        session.Attached = true;
    }

    /// <summary>
    /// Takes a peer's session out (under the gate), and with it what the other parts keep about the
    /// peer (the constructor's callback, run only here and only when the session was listed); false
    /// when it was out already. An eviction (<see cref="SendMoves"/>) used to take the session out
    /// without that cleanup, and the failure of its control link then found it out already: a
    /// stranger evicted again and again left a probe round trip and slow findings behind each time.
    /// </summary>
    public bool Forget(PeerSession session)
    {
        if (!Peers.Remove(session.Id)) return false;
        if (session.Token != 0 && _byToken.TryGetValue(session.Token, out var last) && last == session) _byToken.Remove(session.Token);
        if (session.Attached) _attachedPeers--;
        forgotten(session);
        PeersChanged();
        return true;
    }

    /// <summary>
    /// Gives every Redirect entry the admission ticket its child shows the parent: one per parent,
    /// naming that parent, the child and the shards it is to serve it. Called under the gate.
    /// </summary>
    public ShardAssignment[] WithTickets(int childId, ShardAssignment[] entries)
    {
        var result = (ShardAssignment[])entries.Clone();
        foreach (var group in entries.Where(e => e.Kind == AssignmentKind.Redirect).GroupBy(e => e.ParentId))
        {
            byte[] ticket = new AdmissionTicket(group.Key, (ulong)childId, AdmissionTicket.MaskOf(group.Select(e => (int)e.Shard)), ++_ticketSerial).Sign(signer);
            for (int i = 0; i < result.Length; i++)
                if (result[i].Kind == AssignmentKind.Redirect && result[i].ParentId == group.Key) result[i] = result[i] with { Ticket = ticket };
        }
        return result;
    }

    /// <summary>A ticket for a test's hand-made child: attach to <paramref name="parentId"/> as <paramref name="childId"/> for these shards.</summary>
    public byte[] IssueTicket(int parentId, int childId, params int[] shards)
    {
        lock (Gate) return new AdmissionTicket((ulong)parentId, (ulong)childId, AdmissionTicket.MaskOf(shards), ++_ticketSerial).Sign(signer);
    }

    /// <summary>The welcome's assignments for peer <paramref name="id"/> as the plan has it now. Called under the gate.</summary>
    public ShardAssignment[] Assignments(int id, long startSeq, long[]? resume)
    {
        int k = options.ShardCount;
        var entries = new ShardAssignment[k];
        for (int s = 0; s < k; s++)
        {
            int parent = Planner.ParentOf(id, s);
            // A rejoin that resumes: each entry echoes the peer's own next chunk of the shard.
            ulong from = (ulong)(resume?[s] ?? startSeq);
            entries[s] = parent == Planner.Source
                ? new ShardAssignment((byte)s, AssignmentKind.Served, 0, from, "")
                : new ShardAssignment((byte)s, AssignmentKind.Redirect, (ulong)parent, from, Peers[parent].Address);
        }
        return entries;
    }

    /// <summary>
    /// Notes in <paramref name="session"/> the parents the plan gives its peer now, shard by shard
    /// (<see cref="PeerSession.PlannedParent"/>): its RTT reports are taken only about those and its
    /// former parents. Called under the gate, before its Welcome goes out.
    /// </summary>
    public void RecordParents(PeerSession session)
    {
        for (int s = 0; s < options.ShardCount; s++)
        {
            int parent = Planner.ParentOf(session.Id, s);
            if (parent != Planner.None) session.PlannedParent(s, parent);
        }
    }

    /// <summary>
    /// How many of <paramref name="moves"/> <see cref="SendMoves"/> sends: not a peer's that is
    /// gone, nor those of a peer it evicts (no capacity left for one of its shards: it gets no
    /// Move), nor one to a parent it has no session of. Called under the gate, before the moves go out.
    /// </summary>
    public int SentOf(IEnumerable<Reattachment> moves) =>
        moves.GroupBy(r => r.Peer).Where(g => Peers.ContainsKey(g.Key) && !Evicts(g)).Sum(g => g.Count(Sends));

    /// <summary>The planner found no capacity left for the peer of <paramref name="group"/> anywhere: it is evicted.</summary>
    private static bool Evicts(IEnumerable<Reattachment> group) => group.Any(r => r.NewParent == Planner.None);

    /// <summary>A move to the source or to a peer with a session; any other is a disagreement between the plan and the sessions.</summary>
    private bool Sends(Reattachment r) => r.NewParent == Planner.Source || Peers.ContainsKey(r.NewParent);

    /// <summary>
    /// Tells every peer the planner moved where its shards come from now. Called under the gate.
    /// <paramref name="repair"/>: the moves repair a lost parent (one failed or left, an edge was
    /// taken out of the plan), and each moved peer is noted under repair for those shards
    /// (<see cref="PeerSession.UnderRepair"/>); a move of the optimiser (latency, rebuild, a
    /// stronger joiner, a slow child's or a demotion's) is not: the peer keeps its parent until
    /// it has the new one.
    /// </summary>
    public void SendMoves(IEnumerable<Reattachment> moves, bool repair)
    {
        foreach (var group in moves.GroupBy(r => r.Peer))
        {
            if (!Peers.TryGetValue(group.Key, out var moved)) continue;
            if (Evicts(group))
            {
                // The planner found no capacity left for this peer anywhere: it must rejoin later.
                // Never after the end (Planner.SourceTakesStranded: the coordinator takes it).
                Forget(moved);
                // Its removal line, as every peer taken out has (its control link's end finds it
                // gone and logs nothing), before what its removal causes: its parents told to drop
                // it, its link closed with the reason, as a removal's line comes before its moves.
                CoordinatorLog.PeerRemoved(log, moved.Id, "is evicted", "no upload capacity is left for it", 0);
                DropFromParents(moved, "evicted: no upload capacity left for it");
                ShardStreamMetrics.Evictions.Add(1);
                moved.Evict("evicted: no upload capacity is left in the overlay for this peer; join again later", log);
                continue;
            }
            var entries = new List<ShardAssignment>();
            foreach (var r in group)
            {
                if (Sends(r)) moved.PlannedParent(r.Shard, r.NewParent);
                if (r.NewParent == Planner.Source)
                {
                    entries.Add(new ShardAssignment((byte)r.Shard, AssignmentKind.Redirect, 0, 0, listenAddress()));
                    moved.OweNoFill(r.Shard);
                }
                // FromSeq: the first chunk the new parent holds (its join point). A peer that is further
                // behind takes the chunks before it from this coordinator first (a Fill).
                else if (Peers.TryGetValue(r.NewParent, out var parent))
                {
                    entries.Add(new ShardAssignment((byte)r.Shard, AssignmentKind.Redirect, (ulong)r.NewParent, (ulong)parent.HeldFrom, parent.Address));
                    if (parent.HeldFrom > 0) moved.AllowFill(r.Shard, parent.HeldFrom, r.NewParent);
                    else moved.OweNoFill(r.Shard);
                }
                // The plan and the sessions disagree (a bug): say so, and still send every other move.
                else HardeningLog.MoveToUnknownParent(log, r.Peer, r.Shard, r.NewParent);
            }
            foreach (var e in entries)
            {
                ShardStreamMetrics.Moves.Add(1, ShardStreamMetrics.Shard(e.Shard));
                if (Planner.Contains(moved.Id)) ShardStreamMetrics.Depth.Record(Planner.DepthOf(moved.Id, e.Shard), ShardStreamMetrics.Shard(e.Shard));
            }
            if (entries.Count == 0) continue;
            if (repair) moved.UnderRepair(entries.Select(e => (int)e.Shard), time.GetTimestamp());
            moved.SendMove(new Move(WithTickets(moved.Id, [.. entries])));
        }
    }

    /// <summary>
    /// Tells every peer the plan last made <paramref name="removed"/>'s parent to stop serving it
    /// (DropChild, version 12): it is out of the overlay, and the plan gives its slots to others,
    /// but a peer cut off only from this coordinator still has its links to its parents, which
    /// would serve it on, beyond their budgets. Called under the gate once it is out of the plan,
    /// or as it is stopped as too slow (<see cref="EvictionPolicy"/>); only the first call tells them.
    /// </summary>
    public void DropFromParents(PeerSession removed, string why)
    {
        // Once: a peer stopped as too slow is told to its parents at the stop, and again at its removal.
        if (removed.DroppedFromParents) return;
        removed.DroppedFromParents = true;
        var told = new List<int>();
        foreach (int id in removed.PlannedPeerParents())
        {
            if (!Peers.TryGetValue(id, out var parent) || parent.Version < Protocol.DropChildVersion) continue;
            parent.SendNotice(new DropChild((ulong)removed.Id).Write);
            told.Add(id);
        }
        if (told.Count > 0) RepairLog.ParentsToldToDrop(log, removed.Id, why, string.Join(",", told));
    }

    /// <summary>
    /// The coordinator's address as a user could connect to it, for the overlay's listing: the
    /// listen address, or for a listener on 0.0.0.0 or [::] (no address to connect to) the host its
    /// peers reached it on, with its port, as a peer on 0.0.0.0 is listed where it is reached
    /// (<see cref="Transport.Endpoint.Advertised"/>). Another machine's way in is preferred to loopback;
    /// with no peer yet, this machine's first address. Under <see cref="Gate"/>.
    /// </summary>
    private string ReachedAddress()
    {
        string listen = listenAddress();
        string? loopback = null;
        foreach (var session in Peers.Values)
        {
            string local = session.Control.LocalAddress;
            if (local.Length == 0) continue;
            string reached = Transport.Endpoint.Advertised(listen, local);
            if (reached == listen) return listen; // not an unspecified listener
            if (Transport.Endpoint.IsThisMachineOnly(Transport.Endpoint.HostOf(local))) loopback ??= reached;
            else return reached;
        }
        if (loopback is not null) return loopback;
        try
        {
            var (host, port) = Transport.Endpoint.Parse(listen);
            if (Transport.Endpoint.IsUnspecified(host) && FirstMachineAddress is { } mine) return Transport.Endpoint.Format(mine, port);
        }
        catch (FormatException)
        {
            // Not HOST:PORT (a test's virtual name): listed as it is.
        }
        return listen;
    }

    /// <summary>
    /// This machine's first address (<see cref="Transport.Endpoint.MachineAddresses"/>), looked up
    /// once: the listing is asked for under the gate, by every poll of the dashboard, and the
    /// interfaces are read with system calls.
    /// </summary>
    private string? FirstMachineAddress => (_firstMachineAddress ??= new Lazy<string?>(() => Transport.Endpoint.MachineAddresses(1) is [var a] ? a : null)).Value;

    private Lazy<string?>? _firstMachineAddress;

    /// <summary>The overlay as the planner sees it now: who receives which shard from whom.</summary>
    public OverlaySnapshot Snapshot()
    {
        lock (Gate)
        {
            int k = options.ShardCount;
            var nodes = new List<OverlayNode> { new(0, ReachedAddress(), Planner.Budget(0), Planner.UsedUnits(0), new int[k], new int[k]) };
            foreach (int id in Planner.Peers.Order())
            {
                var parents = new int[k];
                var depths = new int[k];
                for (int s = 0; s < k; s++)
                {
                    parents[s] = Planner.ParentOf(id, s);
                    depths[s] = Planner.DepthOf(id, s);
                }
                string address = Peers.TryGetValue(id, out var p) ? p.Address : "?";
                nodes.Add(new OverlayNode(id, address, Planner.Budget(id), Planner.UsedUnits(id), parents, depths));
            }
            for (int s = 0; s < k; s++) nodes[0].Parents[s] = Planner.None;
            return new OverlaySnapshot(k, options.EffectiveTopology, nodes);
        }
    }
}

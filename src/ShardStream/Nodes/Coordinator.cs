using System.Buffers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Media;
using ShardStream.Streaming;
using ShardStream.Topology;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Owns the live stream: reads the source, cuts it into chunks as reads return (at most 64 KiB),
/// deals them to K shards round-robin, serves its children within its budget, and places every
/// joining peer with the planner (the tracker-like authoritative view of the overlay).
/// </summary>
public sealed partial class Coordinator : Node
{
    private readonly CoordinatorOptions _options;
    private readonly object _gate = new();
    private readonly Planner _planner;
    private readonly Dictionary<int, PeerSession> _peers = [];
    private readonly TaskCompletionSource _enoughPeers = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly HashSet<string> _cutOff = [];

    /// <summary>(peer, shard) pairs whose move a repair after the end kept back (see <see cref="RemovePeer"/>).</summary>
    private readonly HashSet<(int Peer, int Shard)> _keptBack = [];
    private readonly StreamSigner _signer;
    private readonly bool _ephemeralKey;
    private readonly StreamSource _source;
    private long _lastDemotion;
    private int _attachedPeers;

    /// <summary>Creates a coordinator; <see cref="StartAsync"/> binds it.</summary>
    public Coordinator(CoordinatorOptions options, ITransport? transport = null, ILoggerFactory? loggerFactory = null, TimeProvider? time = null)
        : base(options, transport ?? TcpTransport.Instance, (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("coordinator"), time ?? TimeProvider.System)
    {
        options.Validate();
        _options = options;
        _planner = new Planner(new PlannerOptions(options.ShardCount, options.EffectiveTopology, options.SourceBudget, LatencyAware: options.LatencyAware));
        _planner.SetCoordinate(Planner.Source, Anchor);
        Coordinate = Anchor;
        Relay = new Relay(options.ShardCount, options.ReplayWindowBytes, options.ReplayWindowAge, Time);
        _ephemeralKey = options.Signer is null;
        _signer = options.Signer ?? StreamSigner.CreateEphemeral();
        _source = new StreamSource(options, _gate, Relay, _signer, Log, Time);
        if (options.MinPeers == 0) _enoughPeers.TrySetResult();
    }

    private protected override int ShardCount => _options.ShardCount;

    private protected override StreamKey? AdmissionKey => _signer.PublicKey;

    private protected override ulong NodeId => 0;

    /// <summary>The stream's identity: viewers pass its <see cref="StreamKey.Address"/> with <c>--stream</c>.</summary>
    public StreamKey StreamKey => _signer.PublicKey;

    /// <summary>Stream bytes read from the source so far.</summary>
    public long BytesStreamed => _source.BytesStreamed;

    /// <summary>The format of the source, once its first bytes were read.</summary>
    public MediaFormat? Format => _source.Format;

    /// <summary>Chunks cut from the source so far (for tests and the bench).</summary>
    internal long ChunksCut => _source.ChunksCut;

    /// <summary>Hash lists signed so far, and how long chunks were held for them (see <see cref="SigningQueue.HoldHistogram"/>); for the bench.</summary>
    internal (long ListsSigned, long[] HoldHistogram) SigningStats() => _source.SigningStats();

    /// <summary>Streams a raw byte source (see <see cref="RunAsync(MediaReader, CancellationToken)"/>).</summary>
    public Task RunAsync(Stream source, CancellationToken cancellationToken) => RunAsync(new MediaReader(source, MediaFormat.Raw), cancellationToken);

    /// <summary>Binds the listener and starts accepting peers.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        ShardStreamMetrics.Announce(_options.ShardCount);
        await ListenAsync(cancellationToken).ConfigureAwait(false);
        CoordinatorLog.Listening(Log, ListenAddress, _options.ShardCount, _options.EffectiveTopology.ToString().ToLowerInvariant(), _options.SourceBudget);
        CoordinatorLog.StreamAddress(Log, StreamKey.Address, _ephemeralKey ? " (an ephemeral key, made for this run: give --key FILE to keep the address across runs)" : "", ListenAddress, StreamKey.Address);
    }

    /// <summary>
    /// Streams <paramref name="source"/> to the overlay until it ends, then waits for the peers to
    /// finish (up to the drain timeout). Holds the source until <see cref="CoordinatorOptions.MinPeers"/> peers are attached.
    /// FLV and MPEG-TS sources are cut at tag or packet boundaries (see <see cref="MediaReader"/>).
    /// </summary>
    public async Task RunAsync(MediaReader source, CancellationToken cancellationToken)
    {
        source.LostSync ??= why => MediaLog.LostSync(Log, why);
        if (_options.MinPeers > 0)
        {
            CoordinatorLog.WaitingForPeers(Log, _options.MinPeers);
            await _enoughPeers.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        CoordinatorLog.Streaming(Log);
        var (seq, offset) = await _source.RunAsync(source, cancellationToken).ConfigureAwait(false);
        CoordinatorLog.SourceEnded(Log, offset, seq);
        await DrainPeersAsync(cancellationToken).ConfigureAwait(false);
        CoordinatorLog.Done(Log);
    }

    private async Task DrainPeersAsync(CancellationToken cancellationToken)
    {
        List<Task<CloseReason>> controls;
        lock (_gate) controls = _peers.Values.Select(p => p.Control.Closed).ToList();
        await Task.WhenAny(Task.WhenAll(controls), Task.Delay(_options.DrainTimeout, Time, cancellationToken)).ConfigureAwait(false);
    }

    private protected override async Task OnJoinAsync(Link link, Hello hello)
    {
        int k = _options.ShardCount;
        int budget = hello.UploadPercent == Hello.DefaultUpload ? k + 1 : Budgets.FromMultiple(hello.UploadPercent / 100.0, k);
        budget = CapUpload(hello, budget);
        // A peer listening on 0.0.0.0 or [::] is reached where its connection came from.
        string advertised = Endpoint.Advertised(hello.ListenAddress, link.RemoteAddress);
        if (advertised != hello.ListenAddress)
            CoordinatorLog.Advertised(Log, link.Name, hello.ListenAddress, advertised);
        // At most so many joins at once; the rest wait a little or are told to come back (Coordinator.Admission.cs).
        using var turn = await EnterJoinAsync(link).ConfigureAwait(false);
        if (turn is null) return;
        // A peer the coordinator still lists, joining again: it keeps its place (Coordinator.Rejoin.cs).
        if (await TryRejoinInPlaceAsync(link, hello, advertised, turn).ConfigureAwait(false)) return;
        // A latency-aware plan first wants to know where the joiner is (Coordinator.Latency.cs).
        if (await SendLandmarksAsync(link, hello).ConfigureAwait(false)) return;
        // Before anyone is placed under the joiner: does it accept connections where others will be sent?
        string? unreachable = budget > 0 && hello.MaxVersion >= Protocol.ProbeVersion ? await ProbeAsync(advertised, hello.PeerId).ConfigureAwait(false) : null;
        if (unreachable is not null) budget = 0;
        Welcome welcome;
        PeerSession session;
        List<PeerSession> demote;
        lock (_gate)
        {
            // A peer that joins again (it says where each shard goes on) still needs the tail and
            // the ends, which the windows hold: only new joiners are refused after the end.
            if (_source.Ended && hello.Shards.Length == 0)
            {
                RefuseAsync(link, GoodbyeCode.Refused, "the stream has ended").Observe(Log, $"{link.Name}: refusing");
                return;
            }
            if (_cutOff.Contains(advertised))
            {
                RefuseAsync(link, GoodbyeCode.Refused, $"{advertised} was cut off for sending its children what it may not send").Observe(Log, $"{link.Name}: refusing");
                return;
            }
            int id;
            try
            {
                id = JoinPlanner(budget, hello);
            }
            catch (PlacementException e)
            {
                RefuseAsync(link, GoodbyeCode.Refused, $"no room in the overlay: {e.Message}").Observe(Log, $"{link.Name}: refusing");
                return;
            }
            // The join point: a little in the past (see JoinBacklog), always at a chunk boundary.
            // A peer that joins again resumes at its own next chunks, and is told the stream's head.
            var resume = ResumeSeqs(hello);
            var (startSeq, startOffset) = resume is not null ? (_source.NextSeq, _source.NextOffset) : _source.JoinPoint();
            // A media stream: a new joiner starts at a keyframe, with the header to write first (Coordinator.Media.cs).
            var mediaHeader = resume is null ? _source.MediaJoinPoint(ref startSeq, ref startOffset) : null;
            var entries = Assignments(id, startSeq, resume);
            // The proof that this coordinator holds the stream's key: the joiner checks it against its nonce.
            byte[] proof = [.. StreamKey.Bytes, .. _signer.SignJoin(hello.Nonce ?? new byte[Protocol.NonceLength], (ulong)id)];
            welcome = new Welcome(Protocol.Negotiate(hello), (ulong)id, (byte)k, (ulong)startSeq, (ulong)startOffset, WithTickets(id, entries), proof);
            _source.WelcomedAtHead();
            // What it will hold: from its join point, or, joining again, from the earliest chunk it resumes at.
            session = new PeerSession(id, advertised, link) { Version = welcome.Version, Token = hello.PeerId, HeldFrom = resume?.Min() ?? startSeq };
            _peers[id] = session;
            demote = NoteUnreachableReports(id, hello);
            ShardStreamMetrics.Joins.Add(1);
            for (int s = 0; s < k; s++) ShardStreamMetrics.Depth.Record(_planner.DepthOf(id, s), ShardStreamMetrics.Shard(s));
            // A stronger joiner may take the place of weaker peers: they move under it.
            SendMoves(_planner.LastJoinMoves.Where(m => m.Peer != id));
            link.Name = $"peer {id} ({advertised})";
            link.Role = new ControlRole(session);
            if (_options.ControlHeartbeatInterval is { } control && control > _options.HeartbeatInterval) link.OfferLongerHeartbeats(control);
            // Welcome first, then the chunks of the shards served here: the link's queue keeps that order.
            link.Send(welcome.Write);
            if (unreachable is not null)
                link.Send(new Notice(NoticeCode.Leaf, $"the coordinator could not connect to it at {advertised} ({unreachable}), so no peer is placed under it").Write);
            if (session.Version >= Protocol.StreamHeaderVersion) link.Send(_source.SignedHeader(startSeq, mediaHeader).Write);
            MeasureRtt(link, session.Version);
            link.Start(OnPeerFrame);
            foreach (var e in entries)
                if (e.Kind == AssignmentKind.Served) Relay!.Subscribe(link, e.Shard, (long)e.FromSeq);
        }
        turn.Dispose();
        if (unreachable is not null) ReachabilityLog.ProbeFailed(Log, session.Id, session.Address, unreachable);
        // Peers this joiner could not connect to when it measured them (Coordinator.Latency.cs).
        foreach (var other in demote) DemoteUnreachable(other);
        CoordinatorLog.PeerJoined(Log, session.Id, session.Address, welcome.StartOffset, budget,
            string.Join(", ", welcome.Shards.Select(e => $"shard {e.Shard} from {(e.Kind == AssignmentKind.Served ? "coordinator" : $"peer {e.ParentId}")}")));
        await WatchControlAsync(link, session).ConfigureAwait(false);
    }

    private void OnPeerFrame(Link link, FrameType type, ReadOnlySequence<byte> body)
    {
        var session = ((ControlRole)link.Role!).Session;
        var reader = new SequenceReader<byte>(body);
        switch (type)
        {
            case FrameType.Attached:
                if (!Attached.TryRead(ref reader, out _)) throw new ProtocolException("malformed attached frame");
                bool enough;
                lock (_gate)
                {
                    // Counted once per peer, not by a walk over every peer at every report (50,000 peers).
                    if (!session.Attached && _peers.ContainsKey(session.Id)) _attachedPeers++;
                    session.Attached = true;
                    enough = _attachedPeers >= _options.MinPeers;
                }
                CoordinatorLog.PeerAttached(Log, session.Id);
                if (enough) _enoughPeers.TrySetResult();
                break;
            case FrameType.Detach:
                HandleDetach(link, body);
                break;
            case FrameType.Fill when session.Version >= Protocol.FillVersion:
                if (!Fill.TryRead(ref reader, out var fill)) throw new ProtocolException("malformed fill frame");
                OnFill(link, session, fill);
                break;
            case FrameType.Leave:
                if (!Leave.TryRead(ref reader, out _)) throw new ProtocolException("malformed leave frame");
                RemovePeer(session, "leaving on purpose", graceful: true);
                break;
            case FrameType.ParentLost:
                if (!ParentLost.TryRead(ref reader, out var lost)) throw new ProtocolException("malformed parent-lost frame");
                if (lost.Violation is { Length: > 0 }) OnParentAccused(session, (int)lost.ParentId, lost.Shards, lost.Violation);
                else OnParentLost(session, (int)lost.ParentId, lost.Shards);
                break;
            case FrameType.SlowChild when session.Version >= Protocol.SlowChildVersion:
                if (!SlowChild.TryRead(ref reader, out var slow)) throw new ProtocolException("malformed slow-child frame");
                OnSlowChildReport(session, slow);
                break;
            case FrameType.Goodbye:
                break;
            default:
                throw new ProtocolException($"unexpected {type} frame from a peer");
        }
    }

    /// <summary>
    /// After a re-attach to the same parent, a new report about it within this time takes the edge
    /// out of the plan: at least 10 s, and room for an attach that waits out the heartbeat timeout.
    /// </summary>
    private TimeSpan ReattachRetryWindow => TimeSpan.FromSeconds(Math.Max(10, 3 * _options.HeartbeatTimeout.TotalSeconds));

    /// <summary>
    /// A child lost its parent. When the coordinator has not heard from that parent for a while
    /// either, it is taken for dead now (a frozen or half-open node) instead of waiting for the
    /// coordinator's own heartbeat timeout. When the parent still answers, only the link between
    /// the two broke (a reset on one path, a parent that timed the child out during a stall): the
    /// plan is right, so the child is told to attach to the same parent again for the shards it
    /// lost, and resumes from that parent's replay window. One child's trouble never evicts a
    /// parent that answers. A second report within <see cref="ReattachRetryWindow"/> means the two
    /// cannot connect: the edge is taken out of the plan and the child placed under another parent
    /// (a parent that several children cannot reach is made a leaf). A shard that no other node
    /// has room for, or that came from the coordinator itself, is sent to the same parent again:
    /// no orphan is left without a parent.
    /// </summary>
    private void OnParentLost(PeerSession reporter, int parentId, ShardStart[] lost)
    {
        PeerSession? parent = null;
        ShardAssignment[] again = [];
        bool demote = false, later = false;
        lock (_gate)
        {
            if (parentId != Planner.Source && !_peers.TryGetValue(parentId, out parent))
            {
                // Out of the overlay already (failed and repaired, or finished after the end and
                // gone before its children had everything): the plan has the reporter elsewhere.
                CoordinatorLog.LostParentAlreadyOut(Log, reporter.Id, parentId);
                if (!_peers.ContainsKey(reporter.Id) || !_planner.Contains(reporter.Id)) return;
                if (_keptBack.Count > 0)
                {
                    // The peers follow the plan again before this orphan is sent to its plan parent.
                    SendMoves(_keptBack.Where(m => m.Peer != reporter.Id && _planner.Contains(m.Peer)).Select(m => new Reattachment(m.Peer, m.Shard, _planner.ParentOf(m.Peer, m.Shard))).ToList());
                    _keptBack.Clear();
                }
                SendMoves(lost.Where(s => s.Shard < _options.ShardCount && _planner.ParentOf(reporter.Id, s.Shard) != parentId)
                    .Select(s => new Reattachment(reporter.Id, s.Shard, _planner.ParentOf(reporter.Id, s.Shard))).ToList());
                return;
            }
            // Suspected by the control link's failure detector (phi over its threshold, nothing
            // waiting unread), without the heartbeat timeout's floor: a child's report is evidence too.
            // Only a child of that parent in the plan may get it evicted: anyone else's report is a Move at most.
            bool childInPlan = lost.Any(s => s.Shard < _options.ShardCount && _planner.ParentOf(reporter.Id, s.Shard) == parentId);
            if (parent is not null && childInPlan && TakeOutIfDisconnected(parent, reporter.Id)) return;
            if (parent is not null && childInPlan && parent.Control.Suspected)
            {
                CoordinatorLog.LostParentSilent(Log, reporter.Id, parentId, parent.Control.Silence.TotalSeconds);
                parent.Control.Abort($"its child {reporter.Id} lost it and it has been silent");
                return;
            }
            if (!_peers.ContainsKey(reporter.Id)) return;
            long now = Time.GetTimestamp();
            // Only the shards the plan still gives to this parent: a move already on its way wins.
            var stillThere = lost.Where(s => s.Shard < _options.ShardCount && _planner.ParentOf(reporter.Id, s.Shard) == parentId).ToArray();
            if (reporter.ReattachedTo == parentId && Time.GetElapsedTime(reporter.ReattachedAt, now) < ReattachRetryWindow && parent is not null)
            {
                reporter.ReattachedTo = -1;
                // The two cannot keep a connection: take the edge out of the plan (see Coordinator.Reachability.cs).
                // Shards no other node has room for are tried at the same parent again: an orphan is never left without one.
                demote = DropUnreachableEdges(reporter, parent, stillThere, out var stranded);
                stillThere = stranded;
                later = stillThere.Length > 0;
                if (later) RepairLog.SameParentAgain(Log, reporter.Id, parentId, string.Join(",", stillThere.Select(s => s.Shard)), RepairRetryDelay.TotalSeconds);
            }
            else if (parent is null && reporter.ReattachedTo == parentId && Time.GetElapsedTime(reporter.ReattachedAt, now) < ReattachRetryWindow)
            {
                // The coordinator is every peer's last resort: it is sent there again (it never leaves the plan).
                later = stillThere.Length > 0;
                RepairLog.CoordinatorAgain(Log, reporter.Id, RepairRetryDelay.TotalSeconds);
            }
            if (stillThere.Length > 0)
            {
                string address = parent?.Address ?? ListenAddress;
                again = WithTickets(reporter.Id, stillThere.Select(s => new ShardAssignment(s.Shard, AssignmentKind.Redirect, (ulong)parentId, 0, address)).ToArray());
                reporter.ReattachedTo = parentId;
                reporter.ReattachedAt = now;
            }
        }
        if (demote) DemoteUnreachable(parent!);
        if (again.Length == 0) return;
        if (later)
        {
            // A retry of an attach that failed twice: after a pause, so that a parent nobody can
            // reach costs one attempt per pause, not a loop of reports and moves.
            SendMoveLaterAsync(reporter, again).Observe(Log, $"peer {reporter.Id}: attaching again");
            return;
        }
        CoordinatorLog.ReattachingToSameParent(Log,
            reporter.Id, parentId, string.Join(",", again.Select(a => a.Shard)));
        reporter.Control.Send(new Move(again).Write);
    }

    /// <summary>
    /// A peer moved under a parent that holds the stream only from a later chunk asks for the
    /// chunks in between on its control link: they are replayed from this coordinator's window
    /// (a bounded subscription, <see cref="Relay.Subscribe"/>), then the peer attaches to its new
    /// parent. A fill replaces any earlier one of the same shard on this link.
    /// </summary>
    private void OnFill(Link link, PeerSession session, Fill fill)
    {
        foreach (var s in fill.Shards)
        {
            if (s.Shard >= _options.ShardCount) throw new ProtocolException($"a fill of shard {s.Shard}, the stream has {_options.ShardCount}");
            if (!session.TryTakeFill(s.Shard, fill.UntilSeq))
                throw new ProtocolException($"a fill of shard {s.Shard} up to chunk {fill.UntilSeq} that no move asked for");
            if (s.FromSeq >= fill.UntilSeq) continue;
            Relay!.Unsubscribe(link, s.Shard);
            long first = Relay.Subscribe(link, s.Shard, (long)s.FromSeq, (long)Math.Min(fill.UntilSeq, long.MaxValue - 1));
            RepairLog.Filling(Log, session.Id, s.Shard, (long)s.FromSeq, (long)fill.UntilSeq, first);
        }
    }

    /// <summary>The pause before a child is sent once more to a parent it failed to attach to twice (no other parent had room).</summary>
    private TimeSpan RepairRetryDelay => _options.HeartbeatInterval;

    private async Task SendMoveLaterAsync(PeerSession reporter, ShardAssignment[] again)
    {
        try
        {
            await Task.Delay(RepairRetryDelay, Time, Stopping).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        lock (_gate)
        {
            // Still listed, and no later move of these shards meanwhile (the plan may have found room).
            if (!_peers.TryGetValue(reporter.Id, out var current) || current != reporter) return;
            if (again.Any(a => _planner.ParentOf(reporter.Id, a.Shard) != (int)a.ParentId)) return;
            reporter.ReattachedAt = Time.GetTimestamp();
        }
        reporter.Control.Send(new Move(again).Write);
    }

    /// <summary>A direct child of the coordinator is slow: demote it to a leaf.</summary>
    private protected override void OnSlowChild(Link child, TimeSpan queueAge)
    {
        int id = ChildIdOf(child);
        if (id > 0) Demote(id, $"its oldest queued chunk at the coordinator waited {queueAge.TotalSeconds:0.0} s");
    }

    /// <summary>
    /// A peer says one of its children is slow. Only a parent of that child in the plan is heard:
    /// a report can demote only a child the reporter serves (see docs/resilience.md on the trust
    /// this still gives a lying parent).
    /// </summary>
    private void OnSlowChildReport(PeerSession reporter, SlowChild report)
    {
        int child = report.ChildId > int.MaxValue ? -1 : (int)report.ChildId;
        bool isParent;
        lock (_gate)
            isParent = child > 0 && _planner.Contains(child) && Enumerable.Range(0, _options.ShardCount).Any(s => _planner.ParentOf(child, s) == reporter.Id);
        if (!isParent)
        {
            SlowChildLog.ReportIgnored(Log, reporter.Id, child);
            return;
        }
        Demote(child, $"its parent, peer {reporter.Id}, found its oldest queued chunk {report.QueueAgeMs / 1000.0:0.0} s old");
    }

    /// <summary>Makes a peer a leaf everywhere (budget 0) and sends the moves that re-place its children.</summary>
    private void Demote(int id, string why)
    {
        int moves;
        lock (_gate)
        {
            if (!_peers.ContainsKey(id) || !_planner.Contains(id) || _planner.Budget(id) == 0) return;
            long now = Time.GetTimestamp();
            if (_lastDemotion != 0 && Time.GetElapsedTime(_lastDemotion, now) < _options.DemotionSpacing)
            {
                SlowChildLog.DemotionSpaced(Log, id, why, _options.DemotionSpacing.TotalSeconds);
                return;
            }
            if (!_planner.CanDemoteWithoutEviction(id))
            {
                // Evicting others to make room would cost more than a slow relay (and a busy
                // machine can make healthy relays look slow): the peer keeps its place.
                SlowChildLog.NotDemoted(Log, id, why);
                return;
            }
            var plan = _planner.Demote(id);
            _lastDemotion = now;
            SendMoves(plan);
            moves = plan.Count;
        }
        SlowChildLog.Demoted(Log, id, why, moves);
    }

    private void OnPeerGone(PeerSession session, string reason) => RemovePeer(session, reason, graceful: false);

    /// <summary>
    /// Takes a peer out of the overlay and sends every peer the planner moves its new parents.
    /// A graceful leaver keeps serving until its children have moved (they close their links to it).
    /// </summary>
    private void RemovePeer(PeerSession session, string reason, bool graceful)
    {
        IReadOnlyList<Reattachment> plan;
        lock (_gate)
        {
            if (!Forget(session)) return;
            _probeRtts.TryRemove(session.Address, out _);
            ShardStreamMetrics.Leaves.Add(1, new KeyValuePair<string, object?>("how", graceful ? "graceful" : "failed"));
            plan = _planner.Leave([session.Id]);
            if (_source.Ended && session.Control.ReceivedGoodbye == GoodbyeCode.Normal)
            {
                // After the end, a peer that finished has sent its children everything: they keep
                // draining from it, and a move now could only cost them what a new parent's
                // window no longer holds. Its repair's moves are kept back, but not forgotten:
                // the plan now has edges nobody followed, and an orphan sent to its plan parent
                // could be sent below itself (seen: peer 2 sent to 7, which still received from 4,
                // which received from 2). The first report of a parent that left this way sends
                // every kept-back move (see OnParentLost), so the peers follow the plan again.
                foreach (var r in plan) _keptBack.Add((r.Peer, r.Shard));
                CoordinatorLog.PeerLeftAfterEnd(Log, session.Id, reason, plan.Count);
                return;
            }
            // A failure, even after the source ended: the orphans still need the rest of the stream from a window.
            SendMoves(plan);
        }
        CoordinatorLog.PeerRemoved(Log, session.Id, graceful ? "is leaving" : "is gone", reason, plan.Count);
    }

    /// <summary>Takes a peer's session out (under the gate); false when it was out already.</summary>
    private bool Forget(PeerSession session)
    {
        if (!_peers.Remove(session.Id)) return false;
        if (session.Attached) _attachedPeers--;
        return true;
    }

    /// <summary>Tells every peer the planner moved where its shards come from now. Called under the gate.</summary>
    private void SendMoves(IEnumerable<Reattachment> moves)
    {
        foreach (var group in moves.GroupBy(r => r.Peer))
        {
            if (!_peers.TryGetValue(group.Key, out var moved)) continue;
            if (group.Any(r => r.NewParent == Planner.None))
            {
                // The planner found no capacity left for this peer anywhere: it must rejoin later.
                Forget(moved);
                ShardStreamMetrics.Evictions.Add(1);
                moved.Control.CloseAsync(GoodbyeCode.Refused, "evicted: no upload capacity is left in the overlay for this peer; join again later").Observe(Log, $"peer {moved.Id}: evicting");
                continue;
            }
            var entries = new List<ShardAssignment>();
            foreach (var r in group)
            {
                if (r.NewParent == Planner.Source) entries.Add(new ShardAssignment((byte)r.Shard, AssignmentKind.Redirect, 0, 0, ListenAddress));
                // FromSeq: the first chunk the new parent holds (its join point). A peer that is further
                // behind takes the chunks before it from this coordinator first (a Fill).
                else if (_peers.TryGetValue(r.NewParent, out var parent))
                {
                    entries.Add(new ShardAssignment((byte)r.Shard, AssignmentKind.Redirect, (ulong)r.NewParent, (ulong)parent.HeldFrom, parent.Address));
                    if (parent.HeldFrom > 0) moved.AllowFill(r.Shard, parent.HeldFrom);
                }
                // The plan and the sessions disagree (a bug): say so, and still send every other move.
                else HardeningLog.MoveToUnknownParent(Log, r.Peer, r.Shard, r.NewParent);
            }
            foreach (var e in entries)
            {
                ShardStreamMetrics.Moves.Add(1, ShardStreamMetrics.Shard(e.Shard));
                if (_planner.Contains(moved.Id)) ShardStreamMetrics.Depth.Record(_planner.DepthOf(moved.Id, e.Shard), ShardStreamMetrics.Shard(e.Shard));
            }
            if (entries.Count > 0) moved.Control.Send(new Move(WithTickets(moved.Id, [.. entries])).Write);
        }
    }

    private protected override int ChildIdOf(Link link) => link.Role is ControlRole control ? control.Session.Id : base.ChildIdOf(link);

    private protected override IEnumerable<System.Diagnostics.Metrics.Measurement<long>> OverlayPeerCount
    {
        get
        {
            lock (_gate) return [new(_peers.Count)];
        }
    }

    /// <summary>The round trip of the reachability probe to a peer's address, where one was made and answered.</summary>
    public TimeSpan? ProbeRoundTrip(string address) => _probeRtts.TryGetValue(address, out var rtt) ? rtt : null;

    /// <summary>Direct children of the coordinator now.</summary>
    public int ChildCount => Relay?.Subscribers().Count ?? 0;

    /// <summary>
    /// Changes whenever <see cref="Snapshot"/> would give another overlay (the plan's change count
    /// and the number of peer sessions): readers rebuild their view only then (the page's trees).
    /// </summary>
    public (long Plan, int Sessions) PlanVersion
    {
        get
        {
            lock (_gate) return (_planner.Version, _peers.Count);
        }
    }

    /// <summary>The overlay as the planner sees it now: who receives which shard from whom.</summary>
    public OverlaySnapshot Snapshot()
    {
        lock (_gate)
        {
            int k = _options.ShardCount;
            var nodes = new List<OverlayNode> { new(0, ListenAddress, _planner.Budget(0), _planner.UsedUnits(0), new int[k], new int[k]) };
            foreach (int id in _planner.Peers.Order())
            {
                var parents = new int[k];
                var depths = new int[k];
                for (int s = 0; s < k; s++)
                {
                    parents[s] = _planner.ParentOf(id, s);
                    depths[s] = _planner.DepthOf(id, s);
                }
                string address = _peers.TryGetValue(id, out var p) ? p.Address : "?";
                nodes.Add(new OverlayNode(id, address, _planner.Budget(id), _planner.UsedUnits(id), parents, depths));
            }
            for (int s = 0; s < k; s++) nodes[0].Parents[s] = Planner.None;
            return new OverlaySnapshot(k, _options.EffectiveTopology, nodes);
        }
    }

    /// <inheritdoc />
    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync().ConfigureAwait(false);
        _source.Clear();
        if (_ephemeralKey) _signer.Dispose();
    }

    /// <summary>The coordinator's side of a peer's control link: the peer's session.</summary>
    private sealed record ControlRole(PeerSession Session) : LinkRole;

    private sealed class PeerSession(int id, string address, Link control)
    {
        public int Id { get; } = id;

        public string Address { get; } = address;

        /// <summary>Its control link; a peer that joins again while still listed gets a new one.</summary>
        public Link Control { get; set; } = control;

        public bool Attached { get; set; }

        /// <summary>The first chunk this peer holds: its join point (or the earliest it resumed at), so that a peer moved under it from further back fills the gap first.</summary>
        public long HeldFrom { get; init; }

        /// <summary>The protocol version its control link speaks.</summary>
        public ushort Version { get; set; }

        /// <summary>The token of its Join (0: none): a Join with the same one is this peer again.</summary>
        public ulong Token { get; init; }

        /// <summary>How many parents this peer has accused of lying.</summary>
        public int Accusations { get; set; }

        /// <summary>Children that could not connect to this peer even after a second attempt (see Coordinator.Reachability.cs).</summary>
        public HashSet<int> UnreachableBy { get; } = [];

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
}

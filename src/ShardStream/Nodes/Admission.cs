using Microsoft.Extensions.Logging;
using ShardStream.Collections;
using ShardStream.Topology;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A joiner's way in, from its Hello to its Welcome: the upload it may claim, a turn
/// (<see cref="JoinSlots"/>), a rejoin that keeps its place, the landmarks a latency-aware plan
/// wants measured first, the dial-back probe (<see cref="ReachabilityProbe"/>), then placement by
/// the planner, the start point from the <see cref="StreamSource"/> and the signed Welcome. It
/// owns the join tokens of joiners sent their candidate parents; the plan and the sessions are
/// the <see cref="Tracker"/>'s, changed under its gate.
/// </summary>
internal sealed class Admission(CoordinatorOptions options, Tracker tracker, StreamSource source, EvictionPolicy eviction,
    RepairService repair, RunSigner signer, JoinSlots slots, ReachabilityProbe probe, Relay relay, Admission.IHost host, ILogger log, TimeProvider time, CancellationToken stopping)
{
    /// <summary>What admission needs of the node that owns the links.</summary>
    internal interface IHost
    {
        /// <summary>Says goodbye with a reason and closes.</summary>
        Task RefuseAsync(Link link, GoodbyeCode code, string reason, bool warn);

        /// <summary>Says <paramref name="goodbye"/> and closes (the caller logged why).</summary>
        Task RefuseAsync(Link link, Goodbye goodbye);

        /// <summary>Starts reading a welcomed peer's control link (and measures its RTT when asked).</summary>
        void StartControl(Link link, ushort version, bool measureRtt);

        /// <summary>
        /// True once the run is over: the stream ended and the drain stopped waiting (every peer
        /// finished, or the drain timeout passed), so the node is about to stop. Set under the gate.
        /// </summary>
        bool Finished { get; }
    }

    /// <summary>
    /// Join tokens of joiners sent their candidate parents, with when (so the next Join of each is
    /// placed, on whatever connection it comes), oldest first. A token leaves when its joiner is
    /// placed, or after <see cref="CandidateTokenMemory"/>; never to make room: with
    /// <see cref="MaxCandidateTokens"/> remembered, a joiner is placed without a candidates round
    /// instead (a place measured less well, where a forgotten token cost a joiner its join: it was
    /// sent candidates again, a third Landmarks, which it does not follow). Under the gate.
    /// </summary>
    private readonly Dictionary<ulong, LinkedListNode<(ulong Token, long At)>> _candidatesSent = [];
    private readonly LinkedList<(ulong Token, long At)> _candidatesOrder = new();

    /// <summary>When <see cref="CoordinatorLog.CandidateTokensFull"/> was last logged (0: never), and the joiners placed without their candidates round since. Under the gate.</summary>
    private long _candidatesFullSaidAt;
    private int _candidatesSkipped;

    /// <summary>
    /// The most tokens remembered in <see cref="_candidatesSent"/>: a joiner's stay there is its
    /// measuring round (at most <see cref="PeerOptions.MeasureTimeout"/>, 1 s) and its next
    /// connect, so 16,384 are 8 s of joins at 2,000 a second. About 1.2 MB at most.
    /// </summary>
    internal const int MaxCandidateTokens = 16_384;

    /// <summary>How long a token of a joiner sent its candidates is kept for the joiner's placing Join (one that never came is let go).</summary>
    internal static readonly TimeSpan CandidateTokenMemory = TimeSpan.FromSeconds(30);

    /// <summary>Dial-backs started at landmark rounds and not yet taken: at most this many (the oldest forgotten first).</summary>
    private const int MaxEarlyProbes = 4096;

    /// <summary>
    /// Remembers that the joiner with <paramref name="token"/> was sent its candidates; false when
    /// <see cref="MaxCandidateTokens"/> younger than <see cref="CandidateTokenMemory"/> are
    /// remembered (then it is placed now instead). Under the gate.
    /// </summary>
    private bool RememberCandidatesSent(ulong token)
    {
        long now = time.GetTimestamp();
        while (_candidatesOrder.First is { } oldest && time.GetElapsedTime(oldest.Value.At, now) > CandidateTokenMemory)
        {
            _candidatesOrder.RemoveFirst();
            _candidatesSent.Remove(oldest.Value.Token);
        }
        if (_candidatesSent.Remove(token, out var again)) _candidatesOrder.Remove(again);
        if (_candidatesSent.Count >= MaxCandidateTokens)
        {
            // Full: said at the first joiner placed so, then at most once a memory span, with the count since.
            _candidatesSkipped++;
            if (_candidatesFullSaidAt == 0 || time.GetElapsedTime(_candidatesFullSaidAt, now) >= CandidateTokenMemory)
            {
                CoordinatorLog.CandidateTokensFull(log, _candidatesSent.Count, (int)CandidateTokenMemory.TotalSeconds, _candidatesSkipped);
                _candidatesFullSaidAt = now;
                _candidatesSkipped = 0;
            }
            return false;
        }
        _candidatesSent[token] = _candidatesOrder.AddLast((token, now));
        return true;
    }

    /// <summary>Forgets <paramref name="token"/>'s candidates (its joiner is placed). Under the gate.</summary>
    private void ForgetCandidatesSent(ulong token)
    {
        if (_candidatesSent.Remove(token, out var node)) _candidatesOrder.Remove(node);
    }

    /// <summary>
    /// How long a connection kept after Landmarks (version 10) waits for the joiner's next Join:
    /// a joiner measures one round within <see cref="PeerOptions.MeasureTimeout"/> (1 s, connects
    /// included) and fits its coordinate in well under a millisecond, so 3 s leave it 2 s for a
    /// loaded host; and it is less than a new connection's <see cref="NodeOptions.HelloTimeout"/>
    /// (5 s), so a kept connection holds its place in the hello gate no longer than a silent new one.
    /// A joiner whose kept connection was closed joins again on a new one (docs/protocol.md, section 17).
    /// </summary>
    public TimeSpan NextJoinTimeout => options.HelloTimeout < MaxNextJoinWait ? options.HelloTimeout : MaxNextJoinWait;

    private static readonly TimeSpan MaxNextJoinWait = TimeSpan.FromSeconds(3);

    /// <summary>
    /// Admits a joiner: returns its session, whose control link the caller then serves, or null
    /// when the joiner was refused, told to come back, or sent landmarks to measure first; then
    /// Measuring is true when the connection was kept for the joiner's next Join (version 10), which
    /// the caller reads and admits with <paramref name="round"/> one higher. <paramref name="round"/>:
    /// the Landmarks frames sent on this connection before.
    /// </summary>
    public async Task<(PeerSession? Session, bool Measuring)> JoinAsync(Link link, Hello hello, int round = 0)
    {
        // A joiner that names another stream would refuse its Welcome: it is refused first, before
        // a turn, a landmark round, a dial-back or the planner (nobody moves for it), and is no
        // join in the join-stage figures.
        if (hello.Stream is { } asked && !asked.AsSpan().SequenceEqual(signer.PublicKey.Bytes))
        {
            await RefuseOtherStreamAsync(link, hello, asked).ConfigureAwait(false);
            return default;
        }
        // A kept connection's next Join (round 1 or 2) was accepted once, at its first.
        if (round == 0) JoinStages.Record(time, JoinStages.Hello, link.AcceptedAt, link.HelloAt);
        int k = options.ShardCount;
        int declared = hello.UploadPercent == Hello.DefaultUpload ? k + 1 : Budgets.FromMultiple(hello.UploadPercent / 100.0, k);
        int budget = Math.Min(declared, UploadCap);
        // A peer listening on 0.0.0.0 or [::] is reached where its connection came from.
        string advertised = Endpoint.Advertised(hello.ListenAddress, link.RemoteAddress);
        if (advertised != hello.ListenAddress)
            CoordinatorLog.Advertised(log, link.Name, hello.ListenAddress, advertised);
        // A relay evicted as its uplink did not carry its children relays no more than it proved to.
        (int Carried, string Why)? proven;
        lock (tracker.Gate) proven = eviction.ProvenUpload(advertised, hello.PeerId);
        int uncapped = budget;
        if (proven is { } cap && budget > cap.Carried) budget = cap.Carried;
        else proven = null;
        // Near the process's open-file limit every join is told to come back: each takes a
        // descriptor for its control link and one for the dial-back probe.
        if (options.MaxConnectionsForJoins is { } most && TcpTransport.OpenConnections is var open && open >= most)
        {
            await host.RefuseAsync(link, GoodbyeCode.Busy, $"busy: {open} connections open, the most this coordinator takes near its open-file limit; try again in a moment", warn: false).ConfigureAwait(false);
            return default;
        }
        // At most so many joins at once; the rest wait a little or are told to come back (JoinSlots).
        var (entered, busy) = await slots.EnterAsync(link).ConfigureAwait(false);
        if (busy is not null) await host.RefuseAsync(link, GoodbyeCode.Busy, busy, warn: false).ConfigureAwait(false);
        using var turn = entered;
        if (turn is null) return default;
        // A peer stopped as too slow whose goodbye was lost behind its backlog: it hears it now.
        string? stopped;
        lock (tracker.Gate) stopped = eviction.StoppedSlow(hello.PeerId);
        if (stopped is not null)
        {
            await host.RefuseAsync(link, GoodbyeCode.TooSlow, stopped, warn: true).ConfigureAwait(false);
            return default;
        }
        // A peer the coordinator still lists, joining again: it keeps its place.
        if (TryRejoinInPlace(link, hello, advertised, turn) is { } rejoined) return (rejoined, false);
        // Refused whatever it measures: before a landmark round and a dial-back spent on it.
        Goodbye? refusal;
        lock (tracker.Gate) refusal = RefusalOf(hello, advertised);
        if (refusal is { } refused)
        {
            await host.RefuseAsync(link, refused.Code, refused.Reason, warn: true).ConfigureAwait(false);
            return default;
        }
        // A joiner older than version 16 shows its join token to whoever probes it, and whoever
        // learns it can join again in its place: it is placed as a leaf, unprobed, so that taking
        // its place disturbs nobody else's stream (docs/security.md).
        bool probed = budget > 0 && hello.MaxVersion >= Protocol.ProbeProofVersion;
        bool olderLeaf = budget > 0 && !probed;
        // A latency-aware plan first wants to know where the joiner is; the dial-back starts now,
        // while the joiner measures, and its placing Join takes the result.
        var landmarks = await SendLandmarksAsync(link, hello, round).ConfigureAwait(false);
        if (landmarks != LandmarksSent.None)
        {
            if (probed && landmarks != LandmarksSent.Refused) StartEarlyProbe(advertised, hello.PeerId);
            return (null, landmarks == LandmarksSent.Kept);
        }
        // Said at the Join that places the joiner, not at a landmark round's too.
        if (proven is { } capped)
            SlowChildLog.ProvenUploadCap(log, advertised, capped.Carried, uncapped, capped.Why);
        if (uncapped < declared)
            CoordinatorLog.UploadCapped(log, hello.ListenAddress, hello.UploadPercent == Hello.DefaultUpload ? (k + 1.0) / k : hello.UploadPercent / 100.0, options.MaxPeerUpload);
        // Before anyone is placed under the joiner: does it accept connections where others will be sent?
        long probeStart = time.GetTimestamp();
        var probeOutcome = probed ? await (TakeEarlyProbe(advertised, hello.PeerId) ?? probe.ProbeAsync(advertised, hello.PeerId)).ConfigureAwait(false) : default;
        string? unreachable = probeOutcome.Unreachable;
        long beforeLock = time.GetTimestamp();
        if (probed) JoinStages.Record(time, JoinStages.Probe, probeStart, beforeLock);
        // What the Notice(Leaf) after its Welcome says, when it relays nothing.
        string? leaf = unreachable is not null ? $"the coordinator could not connect to it at {advertised} ({unreachable}), so no peer is placed under it"
            : olderLeaf ? $"it speaks protocol version {hello.MaxVersion}, whose answer to a reachability probe shows its join token to whoever asks, and whoever learns it can take its place: no peer is placed under it (version {Protocol.ProbeProofVersion} proves the token without showing it)"
            : null;
        if (leaf is not null) budget = 0;
        Welcome welcome;
        PeerSession session;
        List<PeerSession> demote;
        long inLock, placed;
        lock (tracker.Gate)
        {
            inLock = time.GetTimestamp();
            var planner = tracker.Planner;
            // Checked again: the stream may have ended, or the address been cut off, while it was probed.
            if (RefusalOf(hello, advertised) is { } late)
            {
                host.RefuseAsync(link, late.Code, late.Reason, warn: true).Observe(log, $"{link.Name}: refusing");
                return default;
            }
            // A first join with the token of a listed peer: tried again after its Welcome was lost, or not the peer's latest.
            if (hello.Shards.Length == 0 && tracker.SessionOf(hello.PeerId) is { } earlier)
            {
                ForgetCandidatesSent(hello.PeerId);
                if (earlier.Control.AcceptedAt <= link.AcceptedAt && WelcomeAgain(link, hello, earlier, advertised)) return (earlier, false);
                RefuseListedToken(link, hello, earlier);
                return default;
            }
            int id;
            JoinCheck joinCheck;
            try
            {
                id = Place(budget, hello, link.HandshakeRtt, link.MeasuresHandshake, out joinCheck);
            }
            catch (PlacementException e)
            {
                string why = proven is { } p
                    ? $"no room in the overlay: {e.Message}; this coordinator takes this peer back relaying at most {p.Carried} shard-stream(s), as {p.Why}: join again with a lower --upload when viewers leave"
                    : $"no room in the overlay: {e.Message}";
                host.RefuseAsync(link, GoodbyeCode.Refused, why, warn: true).Observe(log, $"{link.Name}: refusing");
                return default;
            }
            // The join point: a little in the past (see JoinBacklog), always at a chunk boundary.
            // A peer that joins again resumes at its own next chunks, and is told the stream's head.
            var resume = ResumeSeqs(hello);
            var (startSeq, startOffset) = resume is not null ? (source.NextSeq, source.NextOffset) : source.JoinPoint();
            // A media stream: a new joiner starts at a keyframe, with the header to write first.
            var mediaHeader = resume is null ? source.MediaJoinPoint(ref startSeq, ref startOffset) : null;
            var entries = tracker.Assignments(id, startSeq, resume);
            welcome = new Welcome(Protocol.Negotiate(hello), (ulong)id, (byte)k, (ulong)startSeq, (ulong)startOffset, tracker.WithTickets(id, entries), Proof(hello, id), signer.RunId);
            source.WelcomedAtHead();
            // What it will hold: from its join point, or, joining again, from the earliest chunk it resumes at.
            session = new PeerSession(id, advertised, link)
            {
                Version = welcome.Version, Token = hello.PeerId, HeldFrom = resume?.Min() ?? startSeq, CoordinateDiscounted = joinCheck.CoordinateDiscounted,
                FirstWelcome = resume is null ? new FirstWelcome(startSeq, startOffset, mediaHeader, leaf, inLock) : null,
            };
            joinCheck.Log(log, id);
            tracker.List(session);
            if (probeOutcome.Rtt is { } probeRtt) probe.Record(advertised, id, probeRtt);
            tracker.RecordParents(session);
            demote = NoteUnreachableReports(id, hello);
            NoteUnmeasured(session, hello);
            ShardStreamMetrics.Joins.Add(1);
            for (int s = 0; s < k; s++) ShardStreamMetrics.Depth.Record(planner.DepthOf(id, s), ShardStreamMetrics.Shard(s));
            // A stronger joiner may take the place of weaker peers: they move under it.
            tracker.SendMoves(planner.LastJoinMoves.Where(m => m.Peer != id), repair: false);
            NameControl(link, session, advertised);
            // Welcome first, then the chunks of the shards served here: the link's queue keeps that order.
            session.SendWelcome(link, WelcomeFrames(welcome, startSeq, mediaHeader, leaf));
            host.StartControl(link, session.Version, measureRtt: true);
            Subscribe(link, entries);
            placed = time.GetTimestamp();
        }
        JoinStages.Record(time, JoinStages.Lock, beforeLock, inLock);
        JoinStages.Record(time, JoinStages.Placement, inLock, placed);
        JoinStages.Record(time, JoinStages.Welcome, link.AcceptedAt, placed);
        turn.Dispose();
        if (unreachable is not null) ReachabilityLog.ProbeFailed(log, session.Id, session.Address, unreachable);
        else if (olderLeaf) ReachabilityLog.OlderPeerLeaf(log, session.Id, session.Address, hello.MaxVersion, Protocol.ProbeProofVersion);
        // Peers this joiner could not connect to when it measured them (see NoteUnreachableReports).
        foreach (var other in demote) repair.DemoteUnreachable(other);
        CoordinatorLog.PeerJoined(log, session.Id, session.Address, welcome.StartOffset, budget,
            string.Join(", ", welcome.Shards.Select(e => $"shard {e.Shard} from {(e.Kind == AssignmentKind.Served ? "coordinator" : $"peer {e.ParentId}")}")));
        return (session, false);
    }

    /// <summary>
    /// A placement Welcome's frames: the Welcome, the Notice(Leaf) of a joiner placed as a leaf
    /// (<paramref name="leaf"/>: the coordinator could not connect to it, or it is older than
    /// version 16), and the signed stream header of its join point. Under the gate.
    /// </summary>
    private List<byte[]> WelcomeFrames(Welcome welcome, long startSeq, Media.MediaHeader? header, string? leaf)
    {
        var frames = new List<byte[]>(3) { FrameWriting.ToArray(welcome.Write) };
        if (leaf is not null) frames.Add(FrameWriting.ToArray(new Notice(NoticeCode.Leaf, leaf).Write));
        if (welcome.Version >= Protocol.StreamHeaderVersion) frames.Add(source.SignedHeaderFrame(startSeq, header));
        return frames;
    }

    /// <summary>
    /// A first join of a joiner placed already (its join token's session, <paramref name="session"/>),
    /// from a connection made after that session's control link: the peer got no Welcome there (it
    /// broke after the coordinator placed it, or the peer stopped waiting for it) and joins again
    /// as new. While the peer has sent nothing on that link (a joiner sends nothing before its
    /// Welcome) and it has not said it attached, it is the same peer, and this Join takes the
    /// session's place at once: the Welcome is sent again on the new connection (its id, its place
    /// in the plan as it is now, its join point and stream header, its leaf notice), the old link
    /// is closed, and nobody placed under it meanwhile is moved elsewhere. A join point its parents may no
    /// longer hold (<see cref="SurelyHeld"/>) is replaced by the one a first join gets now, with
    /// its header: else the joiner's output would begin with a gap; its children, sent to it from
    /// the old one, are moved to it again from the new one, with a fill. Placed anew, it would be a second
    /// session beside a ghost that stays listed (in the plan, counted, children under it) for the
    /// rejoin grace. False when the session has been heard from, or is not in the plan (it
    /// is being taken out): then this Join is refused (<see cref="RefuseListedToken"/>). Under the gate.
    /// </summary>
    private bool WelcomeAgain(Link link, Hello hello, PeerSession session, string advertised)
    {
        var old = session.Control;
        if (session.Attached || old.ReadFrame || session.FirstWelcome is not { } first || !tracker.Planner.Contains(session.Id)) return false;
        string moved = "";
        List<Reattachment> repoint = [];
        if (!SurelyHeld(first))
        {
            // Its parents' windows may have let that chunk go (its answers lost and its Busy retries
            // can take 30 s): it starts where a first join now does, and holds from there.
            var (seq, offset) = source.JoinPoint();
            var header = source.MediaJoinPoint(ref seq, ref offset);
            long firstSeq = first.StartSeq;
            first = new FirstWelcome(seq, offset, header, first.Leaf, time.GetTimestamp());
            session.FirstWelcome = first;
            session.HeldFrom = seq;
            // Its children were sent to it from its first join point (their Moves, and the Welcomes
            // of joiners placed under it since): it would serve them from its new one, the chunks
            // between lost. Each is moved to it again, from where it holds now, with a fill allowance.
            for (int s = 0; s < options.ShardCount; s++)
                repoint.AddRange(tracker.Planner.ChildrenOf(session.Id, s).Select(child => new Reattachment(child, s, session.Id)));
            moved = $"; its first join point (chunk {firstSeq}) may have left the replay windows, so it starts at chunk {seq}"
                + (repoint.Count == 0 ? "" : $", and its children ({string.Join(",", repoint.Select(r => r.Peer).Distinct())}) are moved to it again from there, the chunks before it from this coordinator");
        }
        var entries = tracker.Assignments(session.Id, first.StartSeq, null);
        var welcome = new Welcome(Protocol.Negotiate(hello), (ulong)session.Id, (byte)options.ShardCount, (ulong)first.StartSeq, (ulong)first.StartOffset, tracker.WithTickets(session.Id, entries), Proof(hello, session.Id), signer.RunId);
        session.Control = link;
        session.Version = welcome.Version;
        tracker.RecordParents(session);
        NameControl(link, session, session.Address);
        // Ahead of its Welcome: an attach a child made from the old point waits at the joiner for it,
        // and served once the joiner streams, it would give the child the new point first, the
        // chunks before it counted lost; the Move taken in first supersedes that attach.
        tracker.SendMoves(repoint, repair: false);
        session.SendWelcome(link, WelcomeFrames(welcome, first.StartSeq, first.Header, first.Leaf));
        host.StartControl(link, session.Version, measureRtt: true);
        Subscribe(link, entries);
        source.WelcomedAtHead();
        RejoinLog.WelcomedAgain(log, session.Id, session.Address, old.IsClosing ? "broken" : "still open here", (advertised == session.Address ? "" : $"; it came from {advertised}, and stays listed at {session.Address}") + moved);
        old.Abort($"peer {session.Id} joined again on a new connection before it read its Welcome");
        // Children that reported it lost while its link was silent were left to its failure: answered now.
        repair.OnRejoinedInPlace(session);
        return true;
    }

    /// <summary>
    /// Whether the parents of a joiner welcomed at <paramref name="first"/> surely still hold its
    /// join point: chosen <see cref="CoordinatorOptions.JoinBacklog"/> back at most, it is younger
    /// than half the replay window's age bound (the rule for a keyframe join point too). Under the gate.
    /// </summary>
    private bool SurelyHeld(FirstWelcome first) => time.GetElapsedTime(first.At) + options.JoinBacklog <= options.ReplayWindowAge / 2;

    /// <summary>
    /// A first join (no resume points) with the join token of listed peer <paramref name="session"/>
    /// that does not take its place (<see cref="WelcomeAgain"/>) is refused, so that a token is
    /// one listed session and a rejoin in place finds the peer's own. Either it is older than the
    /// connection that placed the peer (the peer gave up on it and joined again there; answered
    /// late, it would have placed a ghost of the peer), or the peer has read its Welcome (it
    /// joins again with resume points from then on): the Join is someone else's with that token,
    /// or the listed session is (a node that learned the token joined with it first, while the
    /// peer's own Join waited or was on its way). Goodbye(TokenTaken) has a joiner draw a token of
    /// its own and join again as new, so a token taken first is no dead end for its peer (a joiner
    /// that gave up on the connection reads nothing there; an older one takes the code as a
    /// refusal). Under the gate.
    /// </summary>
    private void RefuseListedToken(Link link, Hello hello, PeerSession session)
    {
        bool stale = session.Control.AcceptedAt > link.AcceptedAt;
        if (stale) RejoinLog.StaleJoin(log, link.Name, session.Id);
        host.RefuseAsync(link, GoodbyeCode.TokenTaken,
            stale ? $"this join token placed peer {session.Id} on a later connection"
            : $"join token {hello.PeerId:x} is listed peer {session.Id}'s, which read its Welcome: that peer joins again with its next chunks, and a new joiner draws a token of its own",
            warn: !stale).Observe(log, $"{link.Name}: refusing");
    }

    /// <summary>
    /// The goodbye that refuses this joiner whatever it measured; null when it is not refused.
    /// The caller holds the gate.
    /// </summary>
    private Goodbye? RefusalOf(Hello hello, string advertised) =>
        // A peer that joins again (it says where each shard goes on) still needs the tail and
        // the ends, which the windows hold: only new joiners are refused after the end, until the
        // drain is over.
        source.Ended && hello.Shards.Length == 0 ? new Goodbye(GoodbyeCode.Refused, "the stream has ended")
        // After it nobody is: a peer placed then (one evicted earlier, trying again as the last
        // viewer's goodbye freed its room) lost the coordinator as this node stopped, before its
        // tail came, and ended with that instead of why it was out. It is told that the run is
        // over as a peer still listed then is (Goodbye(ShuttingDown)): it does not try again.
        // Refused, it did, for its whole rejoin time (a control link that broke as the stream ended).
        : source.Ended && host.Finished ? new Goodbye(GoodbyeCode.ShuttingDown, Coordinator.WaitsNoLonger(source.BytesStreamed))
        : eviction.IsCutOff(advertised) ? new Goodbye(GoodbyeCode.Refused, $"{advertised} was cut off for sending its children what it may not send")
        : null;

    /// <summary>
    /// Why a kept connection's next hello (<paramref name="next"/>, after Landmarks on the Join
    /// <paramref name="first"/>) is not the same joiner's next Join; null when it is. The caller
    /// refuses it with Goodbye(ProtocolError) and this reason.
    /// </summary>
    public static string? NextJoinProblem(Hello first, Hello next) =>
        next.Role != HelloRole.Join ? $"sent a {next.Role} hello on the connection it was sent landmarks on; only its next Join may follow them"
        : next.PeerId != first.PeerId ? $"sent a Join with join token {next.PeerId:x} on the connection a Join with token {first.PeerId:x} was sent landmarks on; a joiner keeps its token"
        : null;

    /// <summary>
    /// Dial-backs started at a joiner's landmark round, by join token (<see cref="StartEarlyProbe"/>);
    /// bounded, oldest forgotten first. Under its own lock.
    /// </summary>
    private readonly RecentMap<ulong, (string Address, Task<ProbeOutcome> Result, long Started)> _earlyProbes = new(MaxEarlyProbes);

    /// <summary>How old an early dial-back's result may be when the placing Join takes it: else it probes again.</summary>
    private TimeSpan EarlyProbeFreshness => options.HeartbeatTimeout * 2;

    /// <summary>
    /// Starts the dial-back of a joiner that was just sent landmarks (or candidate parents): it
    /// measures them, then joins again, and the coordinator's connect, hello and read to its
    /// address overlap with that instead of adding to the wait for its Welcome (docs/performance.md,
    /// "Where a join's time goes"). One per join token; the check is the same, only earlier.
    /// </summary>
    private void StartEarlyProbe(string address, ulong token)
    {
        if (token == 0) return;
        // Taken before the probe starts: a joiner's two landmark rounds may get here at once, and
        // two probes to one address would be one too many (a listener may answer only one).
        var result = new TaskCompletionSource<ProbeOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
        // An IPv6 target by its /64, as one host (AddressShares).
        string? host = AddressShares.GroupOf(address);
        lock (_earlyProbes)
        {
            // An early dial-back outlives the Join that asked for it (the joiner's connection may be
            // closed, and it may join again with another token at once): at most so many run, in
            // all and to one host. Over either bound none is started now; the placing Join probes
            // then, as without landmarks (docs/security.md, "Limits an attacker cannot raise").
            if (_earlyProbesRunning >= MaxEarlyProbesRunning || _earlyProbesPerHost.IsFull(host)) return;
            if (!_earlyProbes.TryAdd(token, (address, result.Task, time.GetTimestamp()))) return;
            _earlyProbesRunning++;
            _earlyProbesPerHost.Take(host);
        }
        _ = ProbeIntoAsync(result, address, host, token);
    }

    /// <summary>Early dial-backs running now (<see cref="StartEarlyProbe"/>), in all and per host; under the lock of <see cref="_earlyProbes"/>.</summary>
    private int _earlyProbesRunning;
    private readonly AddressShares _earlyProbesPerHost = new(MaxEarlyProbesPerHost);

    /// <summary>Early dial-backs running at once, at most: each holds an outgoing connection for up to half the heartbeat timeout.</summary>
    internal const int MaxEarlyProbesRunning = 256;

    /// <summary>Early dial-backs running at once to one host, at most: what a stranger can aim at an address of its choosing.</summary>
    internal const int MaxEarlyProbesPerHost = 16;

    private async Task ProbeIntoAsync(TaskCompletionSource<ProbeOutcome> result, string address, string? host, ulong token)
    {
        try
        {
            result.TrySetResult(await probe.ProbeAsync(address, token).ConfigureAwait(false));
        }
        catch (Exception e)
        {
            // Stopping (cancelled), or what a probe made at placement would have thrown: the placing Join meets it.
            result.TrySetException(e);
        }
        finally
        {
            lock (_earlyProbes)
            {
                _earlyProbesRunning--;
                _earlyProbesPerHost.Release(host);
            }
        }
    }

    /// <summary>
    /// The early dial-back of this joiner (<see cref="StartEarlyProbe"/>), when it was made to the
    /// same address for the same token, lately; null when none was (the caller probes now).
    /// </summary>
    private Task<ProbeOutcome>? TakeEarlyProbe(string address, ulong token)
    {
        lock (_earlyProbes)
        {
            if (!_earlyProbes.Remove(token, out var early)) return null;
            return early.Address == address && time.GetElapsedTime(early.Started) <= EarlyProbeFreshness ? early.Result : null;
        }
    }

    /// <summary>
    /// Refuses a joiner that asked for stream <paramref name="asked"/>, not this one: one line here,
    /// and a Goodbye that proves which stream it reached (the key and a signature over its nonce,
    /// the stream it asked for and the run id), so that it can say so and stop.
    /// </summary>
    private Task RefuseOtherStreamAsync(Link link, Hello hello, byte[] asked)
    {
        string askedAddress = Convert.ToHexStringLower(asked);
        CoordinatorLog.OtherStreamRefused(log, link.RemoteAddress, askedAddress, signer.PublicKey.Address);
        byte[] nonce = hello.Nonce ?? new byte[Protocol.NonceLength];
        var goodbye = new Goodbye(GoodbyeCode.OtherStream, $"this coordinator streams {signer.PublicKey.Address}, not {askedAddress}: not placed",
            [.. signer.PublicKey.Bytes, .. signer.SignOtherStream(nonce, asked)], signer.RunId);
        return host.RefuseAsync(link, goodbye);
    }

    /// <summary>The proof that this coordinator holds the stream's key: the joiner checks it against its nonce (and the Welcome's run id).</summary>
    private byte[] Proof(Hello hello, int id) => [.. signer.PublicKey.Bytes, .. signer.SignJoin(hello.Nonce ?? new byte[Protocol.NonceLength], (ulong)id)];

    /// <summary>Names a welcomed peer's control link and gives it its role. Called under the gate.</summary>
    private void NameControl(Link link, PeerSession session, string advertised)
    {
        link.Name = $"peer {session.Id} ({advertised})";
        link.Role = new ControlRole(session);
        tracker.ControlHeartbeats.Offer(link);
    }

    /// <summary>The shards the coordinator serves itself go out on the control link.</summary>
    private void Subscribe(Link link, ShardAssignment[] entries)
    {
        foreach (var e in entries)
            if (e.Kind == AssignmentKind.Served) relay.Subscribe(link, e.Shard, (long)e.FromSeq);
    }

    /// <summary>
    /// A joiner's upload is what it says, up to <see cref="CoordinatorOptions.MaxPeerUpload"/>: a peer
    /// that claims more is placed as if it had said the cap, so a liar cannot buy a place near the root.
    /// </summary>
    private int UploadCap => Budgets.FromMultiple(options.MaxPeerUpload, options.ShardCount);

    /// <summary>
    /// Where each shard goes on for a peer that joins again: its own next chunk, when every one of
    /// them is a chunk of this run (a restarted coordinator numbers its chunks from 0 again, so a
    /// resume from its future is from another run); else null. Called under the gate.
    /// </summary>
    private long[]? ResumeSeqs(Hello hello)
    {
        int k = options.ShardCount;
        if (hello.Shards.Length != k) return null;
        var seqs = new long[k];
        var seen = new bool[k];
        foreach (var s in hello.Shards)
        {
            if (s.Shard >= k || seen[s.Shard] || s.FromSeq > (ulong)(source.NextSeq + k)) return null;
            seen[s.Shard] = true;
            seqs[s.Shard] = (long)s.FromSeq;
        }
        return seqs;
    }

    /// <summary>
    /// Rejoining (docs/protocol.md, section 6, "Rejoining"): a peer the coordinator still lists (the
    /// same join token) joins again, its control link broken or timed out on its side only, or
    /// still open (a report of its went unanswered). The new connection replaces the old one, and
    /// the peer keeps its id, its place in the plan and its listed address; its parent and child
    /// links go on as they were. The token is the peer (a random one drawn by the process at its
    /// first join), not the address: a peer listening on 0.0.0.0 is listed where its connection
    /// came from, which on a host with two addresses may be the other one now (taken for a new
    /// peer, it would be placed again with a new id beside its old session, and its children
    /// moved once it closed its old links).
    /// The listed address stays the one it was probed at and its children reach: this Join's
    /// was not probed. Null when this Join is not such a rejoin. <paramref name="turn"/>
    /// (admission control) is given back once the peer is welcomed.
    /// </summary>
    private PeerSession? TryRejoinInPlace(Link link, Hello hello, string advertised, IDisposable turn)
    {
        if (hello.PeerId == 0 || hello.Shards.Length == 0) return null;
        PeerSession? session;
        Link old;
        Welcome welcome;
        lock (tracker.Gate)
        {
            // The run is over (the drain stopped waiting for it): RefusalOf refuses it instead.
            if (host.Finished || ResumeSeqs(hello) is not { } resume) return null;
            session = tracker.SessionOf(hello.PeerId);
            if (session is null || !tracker.Planner.Contains(session.Id)) return null;
            old = session.Control;
            var entries = tracker.Assignments(session.Id, source.NextSeq, resume);
            // A fill a Move allowed may have broken off with the old link, asked or not: the peer
            // asks it again on this one. Only the fill the shard's last Move owes, to that parent,
            // and once per Move: never one no Move allowed, nor one more for each rejoin.
            foreach (var e in entries)
                if (e.Kind == AssignmentKind.Redirect && tracker.Peers.TryGetValue((int)e.ParentId, out var parent) && parent.HeldFrom > resume[e.Shard])
                    session.AllowFillAgain(e.Shard, (int)e.ParentId);
            // The stream's head: a peer checks it against its own position (same run, not a restart).
            welcome = new Welcome(Protocol.Negotiate(hello), (ulong)session.Id, (byte)options.ShardCount, (ulong)source.NextSeq, (ulong)source.NextOffset, tracker.WithTickets(session.Id, entries), Proof(hello, session.Id), signer.RunId);
            source.WelcomedAtHead();
            // Still counted as attached (it was, and its parents did not change): no second count.
            session.Control = link;
            session.Version = welcome.Version;
            tracker.RecordParents(session);
            NameControl(link, session, session.Address);
            session.SendWelcome(link, [FrameWriting.ToArray(welcome.Write)]);
            host.StartControl(link, session.Version, measureRtt: false);
            Subscribe(link, entries);
        }
        turn.Dispose();
        RejoinLog.InPlace(log, session.Id, session.Address, old.IsClosing ? "broken" : "still open here", advertised == session.Address ? "" : $"; it came from {advertised}, and stays listed at {session.Address}");
        old.Abort($"peer {session.Id} joined again on a new connection");
        // Its children that lost it while it was silent here were left to its failure: their reports are answered now.
        repair.OnRejoinedInPlace(session);
        return session;
    }

    /// <summary>What <see cref="SendLandmarksAsync"/> did.</summary>
    private enum LandmarksSent
    {
        /// <summary>None sent: the joiner is placed now.</summary>
        None,

        /// <summary>Sent, and the connection closed (a version-6 to -9 joiner joins again on a new one).</summary>
        Closed,

        /// <summary>Sent, and the connection kept for the joiner's next Join (version 10).</summary>
        Kept,

        /// <summary>The joiner asked for more rounds on one connection than a joiner follows: refused.</summary>
        Refused,
    }

    /// <summary>
    /// Before a version-6 joiner is placed by a latency-aware plan, it measures: a Join with no
    /// coordinate is answered with the landmarks (the coordinator first); a Join with a coordinate
    /// is answered once with the parents the plan would most likely give it (<see cref="Planner.ProbeCandidates"/>),
    /// up to <see cref="Coordinator.MaxPingsPerJoin"/> measurements in all. A version-10 joiner is
    /// told so in the frame, and the connection is kept for its next Join (at most
    /// <see cref="Protocol.MaxLandmarkRounds"/> frames on one connection: a Join that would get one more
    /// is a protocol error); an older one's connection is closed, and it joins again on a new one.
    /// </summary>
    private async Task<LandmarksSent> SendLandmarksAsync(Link link, Hello hello, int round)
    {
        if (!tracker.Planner.LatencyAware || hello.MaxVersion < Protocol.PingVersion || hello.Coordinate is not { } coordinate || hello.Shards.Length > 0) return LandmarksSent.None;
        // On one connection a joiner follows at most two frames: after them, a Join with a
        // coordinate is placed, and one with none (it measured nothing it was sent) is refused.
        if (round >= Protocol.MaxLandmarkRounds && !coordinate.IsUnknown) return LandmarksSent.None;
        if (round >= Protocol.MaxLandmarkRounds)
        {
            await host.RefuseAsync(link, GoodbyeCode.ProtocolError,
                $"a Join with no coordinate on a connection that was sent {round} Landmarks frames already; a joiner measures at most {Protocol.MaxLandmarkRounds} rounds, then joins with the coordinate they gave it", warn: true).ConfigureAwait(false);
            return LandmarksSent.Refused;
        }
        Landmark[] landmarks;
        lock (tracker.Gate)
        {
            if (coordinate.IsUnknown)
            {
                landmarks = [.. tracker.Planner.Landmarks(Coordinator.MaxLandmarks).Select(LandmarkOf).Where(l => l.Address is not null)];
            }
            else
            {
                // A joiner follows two Landmarks frames over all its connections, and the rounds of
                // this connection (1 on a kept one) do not say which came before: its landmarks may
                // have come on a connection closed before its next Join (a version-9 joiner's always
                // are), and its candidates on this one. Its token says whether it was sent them.
                if (hello.PeerId == 0 || _candidatesSent.ContainsKey(hello.PeerId)) return LandmarksSent.None;
                var measured = (hello.Measured ?? []).Select(m => m.NodeId).ToHashSet();
                int room = Coordinator.MaxPingsPerJoin - measured.Count;
                landmarks = room <= 0 ? [] : [.. tracker.Planner.ProbeCandidates(Node.FromWire(coordinate), room).Where(id => !measured.Contains((ulong)id)).Select(LandmarkOf).Where(l => l.Address is not null)];
                if (landmarks.Length == 0 || !RememberCandidatesSent(hello.PeerId)) return LandmarksSent.None;
            }
        }
        if (landmarks.Length == 0) return LandmarksSent.None;
        ushort version = Protocol.Negotiate(hello);
        bool keep = options.OneConnectionJoins && version >= Protocol.OneConnectionVersion;
        CoordinatorLog.SendingLandmarks(log, link.Name, landmarks.Length);
        await link.WriteNowAsync(new Landmarks(landmarks, keep ? version : (ushort)0).Write, stopping).ConfigureAwait(false);
        JoinStages.Record(time, JoinStages.Landmarks, link.HelloAt, time.GetTimestamp());
        if (keep) return LandmarksSent.Kept;
        await link.ShutdownAsync("landmarks sent").ConfigureAwait(false);
        await link.DisposeAsync().ConfigureAwait(false);
        return LandmarksSent.Closed;
    }

    /// <summary>Node <paramref name="id"/> as a landmark (the caller holds the gate); its address is null when it is not a live peer.</summary>
    private Landmark LandmarkOf(int id) =>
        id == Planner.Source ? new Landmark(0, "", Node.ToWire(Coordinator.Anchor))
        : tracker.Peers.TryGetValue(id, out var peer) ? new Landmark((ulong)id, peer.Address, Node.ToWire(tracker.Planner.CoordinateOf(id))) : default;

    /// <summary>
    /// The RTT (ms) the planner is given for a node the joiner could not connect to (an RTT of 0 in
    /// its Join): far worse than any real path, so that the node is its parent only if nothing else is left.
    /// </summary>
    private const double UnreachableRttMs = 60_000;

    /// <summary>
    /// Places a joiner by the coordinate and RTTs its Join carries (no coordinate: as a latency-blind
    /// plan would), both checked against <paramref name="handshakeRtt"/>, its connection's handshake
    /// RTT as measured below the process. That one sample is a lower bound on the joiner's RTT to
    /// the coordinator that a loaded host does not raise, as the least RTT of its control link is
    /// once it has <see cref="Coordinator.SourceRttSamples"/> samples; the same rule applies
    /// (<see cref="Coordinator.Agreement"/>): a coordinate that claims less than half of it, and by
    /// more than 10 ms, is placed with its height raised by the difference; an RTT to the
    /// coordinator the joiner says it measured, so low, is taken as the handshake's. No usable
    /// sample where the transport <paramref name="measuresHandshake"/> (a SYN-ACK sent again, which
    /// a joiner gets by dropping the first, or a SYN cookie): the joiner is placed as if it had
    /// claimed no coordinate, since nothing checks its claim. No handshake RTT from a transport
    /// that has none (TCP off Linux): the claim is taken as it is. The caller holds the gate.
    /// </summary>
    private int Place(int budget, Hello hello, TimeSpan? handshakeRtt, bool measuresHandshake, out JoinCheck check)
    {
        check = default;
        var planner = tracker.Planner;
        if (hello.Coordinate is not { IsUnknown: false } c) return planner.Join(budget);
        ForgetCandidatesSent(hello.PeerId);
        if (handshakeRtt is null && measuresHandshake)
        {
            check = new JoinCheck(double.NaN, false, double.NaN, false, double.NaN, Blind: true);
            return planner.Join(budget);
        }
        var measured = new Dictionary<int, double>();
        foreach (var m in hello.Measured ?? [])
            if (m.NodeId == 0 || (m.NodeId <= int.MaxValue && planner.Contains((int)m.NodeId)))
                measured[(int)m.NodeId] = m.RttMicros == 0 ? (m.NodeId == 0 ? measured.GetValueOrDefault(0) : UnreachableRttMs) : m.RttMicros / 1000.0;
        var coordinate = Node.FromWire(c);
        if (handshakeRtt is { } handshake)
        {
            double lower = handshake.TotalMilliseconds;
            coordinate = Coordinator.Agreement(coordinate, lower, out bool discounted, out double estimated);
            bool raised = measured.TryGetValue(Planner.Source, out double said) && Coordinator.Understates(said, lower);
            if (raised) measured[Planner.Source] = lower;
            check = new JoinCheck(lower, discounted, estimated, raised, said);
        }
        int id = planner.Join(budget, coordinate, measured);
        // The joiner's RTT to the coordinator is its Hello's wait for the Landmarks answer, which
        // includes the coordinator's own work (tens of ms on a loaded host): good enough to place the
        // joiner, too high to stand for it at the top of a tree, where a later joiner that measured
        // less would take its place for nothing. Its control link's least RTT stands for it once a
        // Pong came back (Coordinator.OnRemoteCoordinate).
        planner.SetSourceRtt(id, double.NaN);
        return id;
    }

    /// <summary>
    /// What <see cref="Place"/> made of a joiner's word against its handshake RTT (default: nothing
    /// checked). <paramref name="Blind"/>: no usable handshake sample, the claim not used.
    /// </summary>
    private readonly record struct JoinCheck(double HandshakeMs, bool CoordinateDiscounted, double EstimatedMs, bool RttRaised, double SaidMs, bool Blind = false)
    {
        public void Log(ILogger log, int id)
        {
            if (Blind) CoordinatorLog.JoinPlacedBlind(log, id);
            if (CoordinateDiscounted) CoordinatorLog.JoinCoordinateDiscounted(log, id, EstimatedMs, HandshakeMs);
            if (RttRaised) CoordinatorLog.JoinRttRaised(log, id, SaidMs, HandshakeMs);
        }
    }

    /// <summary>Keeps in the session the nodes its Join reported as not reached (RTT 0) or not answering (a round's whole time, 1 s or more), as the plan took them. The caller holds the gate.</summary>
    private static void NoteUnmeasured(PeerSession session, Hello hello)
    {
        foreach (var m in hello.Measured ?? [])
        {
            if (m.NodeId == 0 || m.NodeId > int.MaxValue || (m.RttMicros != 0 && m.RttMicros < UnansweredMicros)) continue;
            session.Unmeasured[(int)m.NodeId] = m.RttMicros == 0 ? UnreachableRttMs : m.RttMicros / 1000.0;
        }
    }

    /// <summary>A Join's RTT from which the node is taken as one that did not answer the joiner's probe: a joiner's round lasts 1 s (<see cref="PeerOptions.MeasureTimeout"/>).</summary>
    private const uint UnansweredMicros = 1_000_000;

    /// <summary>
    /// Joiner <paramref name="joiner"/> reports the peers it was asked to measure and could not
    /// connect to (RTT 0 in its Join). Such a report counts like a child that cannot connect
    /// (<see cref="RepairService.UnreachableChildrenBeforeLeaf"/> different peers make a relay a leaf, unless a
    /// child of it reaches it: <see cref="RepairService.MakesLeaf"/>), but only from a joiner that did reach
    /// another peer: one that reached nobody may be the one cut off.
    /// Returns the peers to make leaves now. The caller holds the gate.
    /// </summary>
    private List<PeerSession> NoteUnreachableReports(int joiner, Hello hello)
    {
        var demote = new List<PeerSession>();
        var measured = hello.Measured ?? [];
        if (!measured.Any(m => m.NodeId != 0 && m.RttMicros > 0)) return demote;
        foreach (var m in measured)
        {
            if (m.RttMicros != 0 || m.NodeId == 0 || m.NodeId > int.MaxValue || (int)m.NodeId == joiner) continue;
            if (!tracker.Peers.TryGetValue((int)m.NodeId, out var other) || !tracker.Planner.Contains(other.Id) || tracker.Planner.Budget(other.Id) == 0) continue;
            if (!other.UnreachableBy.Add(joiner)) continue;
            ReachabilityLog.MeasuredUnreachable(log, joiner, other.Id, other.Address, other.UnreachableBy.Count);
            if (repair.MakesLeaf(other)) demote.Add(other);
        }
        return demote;
    }
}

/// <summary>Log lines about peers that join again.</summary>
internal static partial class RejoinLog
{
    [LoggerMessage(EventId = 1401, EventName = "RejoinedInPlace", Level = LogLevel.Information,
        Message = "peer {Id} ({Address}) joined again on a new connection (its old one {Old}): same id and place in the overlay{From}")]
    public static partial void InPlace(ILogger logger, int id, string address, string old, string from);

    [LoggerMessage(EventId = 1405, EventName = "WelcomedAgain", Level = LogLevel.Information,
        Message = "peer {Id} ({Address}) joined again as new on a new connection before it read its Welcome (its old one {Old}): its Welcome sent again, same id and place in the overlay{From}")]
    public static partial void WelcomedAgain(ILogger logger, int id, string address, string old, string from);

    [LoggerMessage(EventId = 1406, EventName = "StaleJoinRefused", Level = LogLevel.Debug,
        Message = "{Link}: a join older than the connection its join token placed peer {Id} on (the joiner gave up on it): refused")]
    public static partial void StaleJoin(ILogger logger, string link, int id);

    [LoggerMessage(EventId = 1402, EventName = "WaitingForRejoin", Level = LogLevel.Information,
        Message = "peer {Id}: control link broken on its side ({Reason}); keeping its place for {Seconds:0} s for it to join again; it relays {Edges} shard-stream(s) to children in the plan")]
    public static partial void Waiting(ILogger logger, int id, string reason, double seconds, int edges);

    [LoggerMessage(EventId = 1403, EventName = "ParentLostWhileAway", Level = LogLevel.Information,
        Message = "peer {Id} lost parent {Parent}, whose control link is closed: taking it out of the overlay")]
    public static partial void LostWhileAway(ILogger logger, int id, int parent);

    [LoggerMessage(EventId = 1404, EventName = "ParentLostBeforeRejoin", Level = LogLevel.Information,
        Message = "peer {Id} lost parent {Parent} while its control link was silent, and it joined again in its place before it was taken out: the report is answered now")]
    public static partial void LostBeforeRejoin(ILogger logger, int id, int parent);
}

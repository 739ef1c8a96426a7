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
/// Owns the live stream and the overlay: the composition of the coordinator's parts, each with
/// the state it owns (docs/architecture.md). <see cref="StreamSource"/> reads, chunks, paces and
/// signs the source; <see cref="Admission"/> takes a joiner from its Hello through placement to
/// its Welcome; <see cref="RepairService"/> turns reports into planner operations and Moves;
/// <see cref="EvictionPolicy"/> decides who loses its place; <see cref="Tracker"/> holds the plan
/// and the peer sessions, and the one lock they share. This class owns the listener and the
/// links (through <see cref="Node"/>), serves each peer's control link, and wires the parts together.
/// </summary>
public sealed partial class Coordinator : Node, Admission.IHost
{
    private readonly CoordinatorOptions _options;
    private readonly TaskCompletionSource _enoughPeers = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly StreamSigner _signer;
    private readonly RunSigner _run;
    private readonly bool _ephemeralKey;
    private readonly Tracker _tracker;
    private readonly StreamSource _source;
    private readonly EvictionPolicy _eviction;
    private readonly RepairService _repair;
    private readonly ReachabilityProbe _probe;
    private readonly JoinSlots _joinSlots;
    private readonly Admission _admission;

    /// <summary>Creates a coordinator; <see cref="StartAsync"/> binds it.</summary>
    public Coordinator(CoordinatorOptions options, ITransport? transport = null, ILoggerFactory? loggerFactory = null, TimeProvider? time = null)
        : base(options, transport ?? TcpTransport.Instance, (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("coordinator"), time ?? TimeProvider.System)
    {
        options.Validate();
        _options = options;
        Coordinate = Anchor;
        Relay = new Relay(options.ShardCount, options.ReplayWindowBytes, options.ReplayWindowAge, Time);
        _ephemeralKey = options.Signer is null;
        _signer = options.Signer ?? StreamSigner.CreateEphemeral();
        // A new run at every start, even with the same key: nothing signed in an earlier run verifies in this one.
        _run = _signer.ForRun(StreamRun.NewId());
        _tracker = new Tracker(options, _run, Log, Time, () => ListenAddress, Forgotten);
        _source = new StreamSource(options, _tracker.Gate, Relay, _run, Log, Time);
        _eviction = new EvictionPolicy(options, _tracker, _source, Log, Time);
        _probe = new ReachabilityProbe(options, Transport, NewLink, () => ListenAddress, Log, Time, Stopping);
        _repair = new RepairService(options, _tracker, _source, _eviction, Log, Time, () => ListenAddress, Feeds, Relay.HeldFor, Stopping);
        _eviction.Evict = _repair.EvictStarving;
        _joinSlots = new JoinSlots(options, Log, Stopping);
        _admission = new Admission(options, _tracker, _source, _eviction, _repair, _run, _joinSlots, _probe, Relay, this, Log, Time, Stopping);
        if (options.MinPeers == 0) _enoughPeers.TrySetResult();
    }

    /// <summary>
    /// A peer left the tracker's list, however it left (a leave, a failure, an eviction): what the
    /// probe and the eviction policy keep about it goes too. Called under the gate, only once the
    /// constructor has set both.
    /// </summary>
    private void Forgotten(PeerSession session)
    {
        _probe.Forget(session.Address, session.Id);
        _eviction.Forget(session.Id);
    }

    private protected override int ShardCount => _options.ShardCount;

    private protected override StreamRun? AdmissionRun => _run.Run;

    private protected override ulong NodeId => 0;

    /// <summary>The stream's identity: viewers pass its <see cref="StreamKey.Address"/> with <c>--stream</c>.</summary>
    public StreamKey StreamKey => _signer.PublicKey;

    /// <summary>This run of the stream: the key and the run id drawn at start.</summary>
    public StreamRun Run => _run.Run;

    /// <summary>Stream bytes read from the source so far.</summary>
    public long BytesStreamed => _source.BytesStreamed;

    /// <summary>The offset a new joiner would start at now (for tests).</summary>
    internal long JoinPointOffset
    {
        get
        {
            lock (_tracker.Gate) return _source.JoinPoint().Offset;
        }
    }

    /// <summary>The format of the source, once its first bytes were read.</summary>
    public MediaFormat? Format => _source.Format;

    /// <summary>Chunks cut from the source so far (for tests and the bench).</summary>
    internal long ChunksCut => _source.ChunksCut;

    /// <summary>The source has ended and its End is out (<see cref="ChunksCut"/> is final then); for tests.</summary>
    internal bool SourceEnded => _source.Ended;

    /// <summary>Hash lists signed so far, and how long chunks were held for them (see <see cref="SigningQueue.HoldHistogram"/>); for the bench.</summary>
    internal (long ListsSigned, long[] HoldHistogram) SigningStats() => _source.SigningStats();

    /// <summary>Streams a raw byte source (see <see cref="RunAsync(MediaReader, CancellationToken)"/>).</summary>
    public Task RunAsync(Stream source, CancellationToken cancellationToken) => RunAsync(new MediaReader(source, MediaFormat.Raw), cancellationToken);

    /// <summary>Binds the listener and starts accepting peers.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        ShardStreamMetrics.Announce(_options.ShardCount);
        await ListenAsync(cancellationToken).ConfigureAwait(false);
        Background.Run(ImproveLatencyAsync, Log, "latency moves");
        Background.Run(RepromoteAsync, Log, "re-promotions");
        CoordinatorLog.Listening(Log, ListenAddress, _options.ShardCount, _options.EffectiveTopology.ToString().ToLowerInvariant(), _options.SourceBudget);
        var (dial, hint) = Endpoint.ForViewers(ListenAddress);
        CoordinatorLog.StreamAddress(Log, StreamKey.Address, _ephemeralKey ? " (an ephemeral key, made for this run: give --key FILE to keep the address across runs)" : "", Run.IdText, dial, StreamKey.Address, hint);
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
        // The snapshot is taken under the gate that publishes the End: a peer's leave after the end
        // cannot be taken before it (taken after the gate was released, a fast peer's leave could).
        // From then on no leave evicts anyone: the peers leave one after another as they finish,
        // each taking its upload with it, and an orphan no peer has room for any more is served
        // the rest of the stream (the tail, from the window) by this coordinator beyond its budget,
        // not told "evicted: no upload capacity is left" when it has the whole stream or nearly.
        var (seq, offset) = await _source.RunAsync(source, cancellationToken, () =>
        {
            _tracker.Planner.SourceTakesStranded = true;
            OverlayAtSourceEnd = Snapshot();
        }).ConfigureAwait(false);
        CoordinatorLog.SourceEnded(Log, offset, seq);
        await DrainPeersAsync(cancellationToken).ConfigureAwait(false);
        CoordinatorLog.Done(Log);
    }

    /// <summary>
    /// Waits, up to the drain timeout, until no peer is listed: every peer has finished (its goodbye
    /// took it out) or failed. That includes a peer whose control link broke near the end and that
    /// is kept for its rejoin (<see cref="RejoinGrace"/>), and one that joined again after the end:
    /// the tail comes from this coordinator's window when it was its parent, so the run (and the
    /// CLI's process) must not end before. Waiting only for the control links listed at the end
    /// left out the new link of a peer that joined again later, and the viewer lost the tail.
    /// Then, or when cut short, the run is over: no join is admitted any more
    /// (<see cref="Admission.IHost.Finished"/>).
    /// </summary>
    private async Task DrainPeersAsync(CancellationToken cancellationToken)
    {
        long since = Time.GetTimestamp();
        List<Link> behind;
        while (true)
        {
            var left = _options.DrainTimeout - Time.GetElapsedTime(since);
            List<Task> wake;
            lock (_tracker.Gate)
            {
                // Decided under the gate that admission holds: no peer is placed after it.
                if (_tracker.Peers.Count == 0 || left <= TimeSpan.Zero || cancellationToken.IsCancellationRequested)
                {
                    _finished = true;
                    behind = [.. _tracker.Peers.Values.Select(p => p.Control).Where(c => !c.IsClosing)];
                    break;
                }
                wake = [.. _tracker.Peers.Values.Select(p => p.Control.Closed).Where(c => !c.IsCompleted)];
            }
            // A closed link leaves the list a moment later (its watch removes the peer), and a peer
            // waited for has no open link: looked at again at least every RejoinPoll.
            wake.Add(Task.Delay(left < RejoinPoll ? left : RejoinPoll, Time, cancellationToken));
            await Task.WhenAny(wake).ConfigureAwait(false);
        }
        if (behind.Count == 0) return;
        // Peers still behind (or cut short: the CLI's bound after Ctrl-C, or a second signal) are
        // told that the coordinator stops, ahead of what is still queued for them, so that they
        // take what their peer parents still send and stop, instead of joining again for their
        // rejoin time against a stream that has ended (reset by the exit, they did).
        string said = WaitsNoLonger(_source.BytesStreamed);
        CoordinatorLog.StoppingWithPeersBehind(Log, behind.Count, said);
        var closing = Task.WhenAll(behind.Select(c => c.CloseAsync(GoodbyeCode.ShuttingDown, said, routine: true, dropQueued: true)));
        // Also when cut short: the CLI's 15 s bound after a signal is a cancellation too, and
        // without the wait its exit reset the links before the goodbyes went out.
        await Task.WhenAny(closing, Task.Delay(ShuttingDownWait, Time)).ConfigureAwait(false);
    }

    /// <summary>What a peer is told once the drain is over (Goodbye(ShuttingDown)): on its control link, or as the answer to its rejoin.</summary>
    internal static string WaitsNoLonger(long bytes) => $"the stream ended at {bytes} bytes and the coordinator waits no longer";

    /// <summary>How long the end of the drain waits for the goodbyes of peers still behind to be sent (the CLI's bound is 20 s after a signal, the drain 15 s): the send under way on a slow link goes first.</summary>
    private static readonly TimeSpan ShuttingDownWait = TimeSpan.FromSeconds(3);

    /// <summary>
    /// A joiner: admitted (Hello, placement, Welcome), then its control link is served until it
    /// closes. A version-10 joiner sent Landmarks measures and sends its next Join on the same
    /// connection, which waits for it in the hello gate meanwhile (<see cref="Admission.NextJoinTimeout"/>).
    /// </summary>
    private protected override async Task OnJoinAsync(Link link, Hello hello)
    {
        var first = hello;
        for (int round = 0; ; round++)
        {
            var (session, measuring) = await _admission.JoinAsync(link, hello, round).ConfigureAwait(false);
            if (session is not null)
            {
                await WatchControlAsync(link, session).ConfigureAwait(false);
                return;
            }
            if (!measuring) return;
            long waiting = Time.GetTimestamp();
            if (await ReadNextHelloAsync(link, _admission.NextJoinTimeout).ConfigureAwait(false) is not { } next)
            {
                Interlocked.Increment(ref _keptConnectionsClosed);
                if (Time.GetElapsedTime(waiting) < _admission.NextJoinTimeout - KeptWaitGrain) Interlocked.Increment(ref _keptConnectionsClosedEarly);
                return;
            }
            JoinStages.Record(Time, JoinStages.Measuring, waiting, link.HelloAt);
            if (Admission.NextJoinProblem(first, next) is { } problem)
            {
                await RefuseAsync(link, GoodbyeCode.ProtocolError, problem).ConfigureAwait(false);
                return;
            }
            hello = next;
        }
    }

    private long _keptConnectionsClosed;
    private long _keptConnectionsClosedEarly;

    /// <summary>
    /// Connections kept after Landmarks that were closed with no next Join read (none came within
    /// <see cref="NextJoinTimeout"/>, the joiner closed it, it was dropped from the hello gate, its
    /// hello was malformed, or this node stopped; a next Join read and then refused is not counted):
    /// such a joiner, if it still joins, does so on a new connection.
    /// </summary>
    internal long KeptConnectionsClosed => Interlocked.Read(ref _keptConnectionsClosed);

    /// <summary>Of <see cref="KeptConnectionsClosed"/>, those closed before <see cref="NextJoinTimeout"/> was up (less a timer's grain): not for lack of a Join in time.</summary>
    internal long KeptConnectionsClosedEarly => Interlocked.Read(ref _keptConnectionsClosedEarly);

    /// <summary>How much earlier than its timeout a wait may be seen to end (timers and clocks of different grain).</summary>
    private static readonly TimeSpan KeptWaitGrain = TimeSpan.FromMilliseconds(50);

    private bool _finished;

    bool Admission.IHost.Finished => _finished;

    /// <summary>How long a connection kept after Landmarks waits for the joiner's next Join (<see cref="Admission.NextJoinTimeout"/>).</summary>
    internal TimeSpan NextJoinTimeout => _admission.NextJoinTimeout;

    Task Admission.IHost.RefuseAsync(Link link, GoodbyeCode code, string reason, bool warn) => RefuseAsync(link, code, reason, warn);

    Task Admission.IHost.RefuseAsync(Link link, Goodbye goodbye) => RefuseAsync(link, goodbye, warn: false);

    void Admission.IHost.StartControl(Link link, ushort version, bool measureRtt)
    {
        if (measureRtt) MeasureRtt(link, version);
        // A peer that rejoined in place keeps its measured RTT to the source (no new pings) but
        // reports its parents' RTTs on the new control link as on the old one.
        if (version >= Protocol.ParentRttVersion) link.ParentRttsHeard = OnParentRtts;
        // Its heartbeats tell the peer how far the source is: a parent that sends nothing of what the source made is found out.
        if (version >= Protocol.StreamHeadVersion) link.StreamHead = () => _source.NextSeq;
        // A joiner may read its welcome late on a loaded machine: its new control link is not
        // taken for dead at the 5 s floor before it has said anything (Link.LenientUntilHeard).
        link.LenientUntilHeard = true;
        link.Start(OnPeerFrame);
    }

    /// <summary>
    /// How long a peer whose control link broke on its side (no goodbye, and not taken for dead by
    /// the coordinator's own failure detector) keeps its place, waiting for it to join again: the
    /// longest silence a link is allowed (4 heartbeat timeouts), unless
    /// <see cref="CoordinatorOptions.RejoinGrace"/> says otherwise. A child that reports it lost
    /// ends the wait at once; a peer without children costs nothing meanwhile.
    /// </summary>
    private TimeSpan RejoinGrace => _options.RejoinGrace ?? _options.HeartbeatTimeout * 4;

    /// <summary>How often a peer's kept place is checked during <see cref="RejoinGrace"/>.</summary>
    private static readonly TimeSpan RejoinPoll = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Serves a peer's control link until it closes, then takes the peer out of the overlay, unless
    /// the peer joined again on a new connection meanwhile. A link that broke on the peer's side
    /// (no goodbye, heard from lately: the peer lives, and will join again) keeps the peer's place
    /// for <see cref="RejoinGrace"/>; one this coordinator closed for a violation does not.
    /// </summary>
    private async Task WatchControlAsync(Link link, PeerSession session)
    {
        var closed = await link.Closed.ConfigureAwait(false);
        string reason = closed.Text;
        Relay!.Unsubscribe(link);
        if (session.Control != link) return;
        // Not a link this coordinator closed itself as too slow, nor one it cut off for breaking the
        // protocol or sending bad data (the peer did not lose its link: it was put out, and keeping
        // its place held the drain after the end for the whole grace): that peer is out (a join
        // again is told why).
        if (link.ReceivedGoodbye is null && closed.Code is not (CloseCode.TimedOut or CloseCode.TooSlow) && !closed.IsViolation && !Stopping.IsCancellationRequested)
        {
            bool listed;
            int edges = 0;
            // A peer its children lost just before (their reports came first, and it was made a
            // leaf: no child is left to report it while it is waited for) is gone, not away.
            // Nor one this coordinator stopped as too slow whose link ended otherwise than by that
            // close (the peer reset it while the goodbye waited behind its backlog: the close then
            // reads "connection lost"): it keeps no place for a peer it stopped.
            lock (_tracker.Gate)
            {
                listed = _tracker.Peers.TryGetValue(session.Id, out var current) && current == session
                    && (session.LostByChildAt == 0 || Time.GetElapsedTime(session.LostByChildAt) > _options.HeartbeatTimeout)
                    && _eviction.StoppedSlow(session.Token) is null;
                // Said with the wait: a peer with children in the plan is waited for only until one
                // of them reports it lost; one without (a leaf) is waited for the whole grace, unless
                // a repair places a child under it meanwhile and that child reports it.
                if (listed && _tracker.Planner.Contains(session.Id)) edges = _tracker.Planner.UsedUnits(session.Id);
            }
            if (listed)
            {
                RejoinLog.Waiting(Log, session.Id, reason, RejoinGrace.TotalSeconds, edges);
                // Until it is back or the grace is over. Also after the end: a peer whose link broke
                // just before it may still need the tail (from this coordinator, when it served the
                // peer shards on that link), and comes back for it (the drain waits for it meanwhile).
                long since = Time.GetTimestamp();
                try
                {
                    while (session.Control == link && Time.GetElapsedTime(since) < RejoinGrace)
                        await Task.Delay(RejoinPoll, Time, Stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                if (session.Control != link) return;
            }
        }
        // The looks at session.Control above are outside the gate: the removal looks again under it.
        bool gone = true;
        if (GoneRemoval is { } hold) hold(session.Id, () => gone = _repair.OnPeerGone(session, link, reason));
        else gone = _repair.OnPeerGone(session, link, reason);
        if (!gone) return;
        // A peer that is out of the overlay gets nothing more from us on any connection.
        foreach (var other in ChildLinksOf(session.Id)) other.Abort($"peer {session.Id} is out of the overlay");
    }

    /// <summary>
    /// Called by a closed control link's watch with the peer's id and its removal, which it must
    /// call, instead of removing the peer itself (tests hold the removal there); null: removed at once.
    /// </summary>
    internal Action<int, Action>? GoneRemoval { get; set; }

    /// <summary>
    /// Called with the reporter's id and each ParentLost read from a peer, before it is handled;
    /// false drops it unanswered (tests stand for a path on which the coordinator sends no Move).
    /// </summary>
    internal Func<int, ParentLost, bool>? ParentLostRead { get; set; }

    /// <summary>Awaited with the reporter's id when a delayed Move (events 9301, 9302) is due, before it is looked at (tests change the plan meanwhile).</summary>
    internal Func<int, Task>? MoveLaterDue
    {
        get => _repair.MoveLaterDue;
        set => _repair.MoveLaterDue = value;
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
                lock (_tracker.Gate)
                {
                    _tracker.MarkAttached(session);
                    session.ReportedAttached(link);
                    enough = _tracker.AttachedPeers >= _options.MinPeers;
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
                _repair.RemovePeer(session, "leaving on purpose", graceful: true);
                break;
            case FrameType.ParentLost:
                if (!ParentLost.TryRead(ref reader, out var lost)) throw new ProtocolException("malformed parent-lost frame");
                if (ParentLostRead is { } read && !read(session.Id, lost)) break;
                if (!_repair.TakeReport(session)) break;
                if (lost.Violation is { Length: > 0 }) _repair.OnParentAccused(session, (int)lost.ParentId, lost.Shards, lost.Violation);
                else _repair.OnParentLost(session, (int)lost.ParentId, lost.Shards, lost.Cause == LossCause.Lag);
                break;
            case FrameType.SlowChild when session.Version >= Protocol.SlowChildVersion:
                if (!SlowChild.TryRead(ref reader, out var slow)) throw new ProtocolException("malformed slow-child frame");
                _eviction.OnSlowChildReport(session, slow);
                break;
            case FrameType.Goodbye:
                break;
            default:
                throw new ProtocolException($"unexpected {type} frame from a peer");
        }
    }

    /// <summary>
    /// A peer moved under a parent that holds the stream only from a later chunk asks for the
    /// chunks in between on its control link: they are replayed from this coordinator's window
    /// (a bounded subscription, <see cref="Relay.Subscribe"/>), then the peer attaches to its new
    /// parent. A fill replaces any earlier one of the same shard on this link. A fill a rejoin in
    /// place gave back starts no earlier than the Move's first ask, and one asked again after it
    /// was taken gets nothing (<see cref="PeerSession.AllowFillAgain"/>).
    /// </summary>
    private void OnFill(Link link, PeerSession session, Fill fill)
    {
        foreach (var s in fill.Shards)
        {
            if (s.Shard >= _options.ShardCount) throw new ProtocolException($"a fill of shard {s.Shard}, the stream has {_options.ShardCount}");
            var taken = session.TryTakeFill(s.Shard, s.FromSeq, fill.UntilSeq, out long from);
            if (taken == PeerSession.FillTaken.Never)
                throw new ProtocolException($"a fill of shard {s.Shard} up to chunk {fill.UntilSeq} that no move asked for");
            if (taken == PeerSession.FillTaken.Spent)
            {
                RepairLog.FillSpent(Log, session.Id, s.Shard, (long)fill.UntilSeq);
                continue;
            }
            if ((ulong)from >= fill.UntilSeq) continue;
            Relay!.Unsubscribe(link, s.Shard);
            long first = Relay.Subscribe(link, s.Shard, from, (long)Math.Min(fill.UntilSeq, long.MaxValue - 1));
            RepairLog.Filling(Log, session.Id, s.Shard, from, (long)fill.UntilSeq, first);
        }
    }

    /// <summary>A direct child of the coordinator is slow: demote it to a leaf (or stop it, when it is a leaf behind for long; see <see cref="EvictionPolicy.OnSlow"/>).</summary>
    private protected override void OnSlowChild(SlowChildren.Finding finding)
    {
        int id = ChildIdOf(finding.Link);
        if (id > 0) _eviction.OnSlow(id, Planner.Source, $"its oldest queued chunk at the coordinator waited {finding.QueueAge.TotalSeconds:0.0} s, {finding.TookText}", (finding.DownloadMbps, finding.StreamMbps), finding.QueueAge);
    }

    /// <summary>A direct child still slow after the grace: judged like a report from a peer (a peer child's link is closed here).</summary>
    private protected override bool CoordinatorDecides(Link child) => ChildIdOf(child) > 0;

    /// <summary>A direct child stopped as too slow: a join with its token is answered with the same goodbye.</summary>
    private protected override void OnStoppingSlowChild(Link child, string reason)
    {
        if (child.Role is not ControlRole control) return;
        lock (_tracker.Gate) _eviction.NoteStoppedSlow(control.Session, reason);
    }

    private protected override int ChildIdOf(Link link) => link.Role is ControlRole control ? control.Session.Id : base.ChildIdOf(link);

    private protected override IEnumerable<System.Diagnostics.Metrics.Measurement<long>> OverlayPeerCount
    {
        get
        {
            lock (_tracker.Gate) return [new(_tracker.Peers.Count)];
        }
    }

    private protected override IEnumerable<System.Diagnostics.Metrics.Measurement<long>> OverlayLatencyRebuilds => [new(LatencyRebuilds)];

    /// <summary>
    /// The heartbeat interval asked for on quiet control links now (chosen from the number of
    /// peers, or pinned), and how many of the peers' control links the coordinator heartbeats at
    /// that interval (those whose peer said it follows), of how many.
    /// </summary>
    internal (TimeSpan Interval, int Following, int Peers) ControlHeartbeatState()
    {
        lock (_tracker.Gate)
        {
            var interval = _tracker.ControlHeartbeats.Interval;
            return (interval, _tracker.Peers.Values.Count(p => p.Control.HeartbeatInterval == interval), _tracker.Peers.Count);
        }
    }

    /// <summary>The round trip of the reachability probe to a peer's address, where one was made and answered.</summary>
    public TimeSpan? ProbeRoundTrip(string address) => _probe.RoundTrip(address);

    /// <summary>Whether the eviction policy still keeps slow findings about peer <paramref name="id"/> (nothing once it is out); for tests.</summary>
    internal bool RemembersSlowFindings(int id)
    {
        lock (_tracker.Gate) return _eviction.Remembers(id);
    }

    /// <summary>
    /// True when this coordinator sends peer <paramref name="id"/> every one of <paramref name="shards"/>
    /// on a link that keeps up (open, nothing queued for it a heartbeat timeout or longer): that
    /// peer has them, whatever it says. An attach link, or its control link, where a peer placed
    /// under the coordinator at its join is served until it attaches elsewhere. Not a fill, which ends.
    /// Internal for tests.
    /// </summary>
    internal bool Feeds(int id, int[] shards) =>
        Relay is { } relay && shards.All(s => relay.SubscribersOf(s, live: true).Exists(l => IsOf(l, id) && l.KeepsUp(_options.HeartbeatTimeout)));

    /// <summary>True when <paramref name="link"/> is peer <paramref name="id"/>'s attach link or control link.</summary>
    private static bool IsOf(Link link, int id) => link.Role switch
    {
        ChildRole child => child.PeerId == id,
        ControlRole control => control.Session.Id == id,
        _ => false,
    };

    /// <summary>Whether this coordinator's failure detector suspects peer <paramref name="id"/>'s control link (a child's report of it lost then aborts that link); for tests.</summary>
    internal bool ControlSuspected(int id)
    {
        lock (_tracker.Gate) return _tracker.Peers.TryGetValue(id, out var session) && session.Control.Suspected;
    }

    /// <summary>When peer <paramref name="id"/>'s last repair of <paramref name="shard"/> began (a timestamp; 0: never, or no such peer); for tests.</summary>
    internal long RepairBegan(int id, int shard)
    {
        lock (_tracker.Gate) return _tracker.Peers.TryGetValue(id, out var session) ? session.RepairedAt([shard]) : 0;
    }

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
            lock (_tracker.Gate) return (_tracker.Planner.Version, _tracker.Peers.Count);
        }
    }

    /// <summary>The overlay as the planner sees it now: who receives which shard from whom.</summary>
    public OverlaySnapshot Snapshot() => _tracker.Snapshot();

    /// <summary>
    /// The overlay when the source ended (null before): the one that carried the stream. Once the
    /// run is over every peer has finished and left, and <see cref="Snapshot"/> holds the
    /// coordinator alone; the CLI printed that as the overlay at the end of every stream.
    /// </summary>
    public OverlaySnapshot? OverlayAtSourceEnd { get; private set; }

    /// <summary>
    /// The coordinator's coordinate: the origin, with a small error so that joiners fit themselves
    /// around it. It never moves, so "the delay from the source" keeps one meaning.
    /// </summary>
    internal static readonly NetworkCoordinate Anchor = new(0, 0, Vivaldi.MinHeight, 0.2);

    /// <summary>Nodes (the coordinator and landmark peers) a joiner measures before it joins: at most this many (the simulator's joiner likewise; the rest of its 16 pings go to candidate parents).</summary>
    public const int MaxLandmarks = 12;

    private protected override bool FixedCoordinate => true;

    /// <summary>The smoothed RTT (RFC 6298) of peer <paramref name="id"/>'s control link, once measured (version 6).</summary>
    public TimeSpan? ControlRtt(int id)
    {
        Link control;
        lock (_tracker.Gate)
        {
            if (!_tracker.Peers.TryGetValue(id, out var session)) return null;
            control = session.Control;
        }
        return control.SmoothedRtt;
    }

    /// <summary>
    /// The smoothed RTT of every peer's control link that has one: the links taken in one pass under
    /// the coordinator's lock (not one lock a peer, as <see cref="ControlRtt"/> for each would), for the page.
    /// </summary>
    public Dictionary<int, TimeSpan> ControlRtts()
    {
        List<(int Id, Link Control)> links;
        lock (_tracker.Gate)
        {
            links = new List<(int, Link)>(_tracker.Peers.Count);
            foreach (var (id, session) in _tracker.Peers) links.Add((id, session.Control));
        }
        var rtts = new Dictionary<int, TimeSpan>(links.Count);
        foreach (var (id, control) in links)
            if (control.SmoothedRtt is { } rtt) rtts[id] = rtt;
        return rtts;
    }

    /// <summary>The plan places by latency (<see cref="CoordinatorOptions.LatencyAware"/>).</summary>
    public bool LatencyAware => _tracker.Planner.LatencyAware;

    private protected override void OnRemoteCoordinate(Link link, WireCoordinate remote)
    {
        if (link.Role is not ControlRole { Session: var session } || session.Control != link) return;
        var rtt = link.RttSnapshot();
        lock (_tracker.Gate)
            if (_tracker.Peers.ContainsKey(session.Id) && _tracker.Planner.Contains(session.Id))
            {
                var coordinate = FromWire(remote);
                double checkedMs = double.NaN;
                // The least RTT of the control link, once it has a few samples: what the near-source
                // exchange compares a joiner's own measurement with. A first sample can be far too
                // high (a process starting up on a loaded host: hundreds of ms on loopback), and on
                // a starved host every early one can: the handshake's RTT, measured below both
                // processes, bounds it until the link has HandshakeBoundSamples (SourceRtt).
                if (rtt is { Samples: >= SourceRttSamples } measured)
                {
                    checkedMs = SourceRtt(measured.Min, measured.Samples, link.HandshakeRtt);
                    _tracker.Planner.SetSourceRtt(session.Id, checkedMs);
                    coordinate = Agreeing(session, coordinate, checkedMs);
                }
                // Until then, the handshake's RTT as measured below the process, which the join checked too (Admission).
                else if (link.HandshakeRtt is { } handshake)
                {
                    checkedMs = handshake.TotalMilliseconds;
                    coordinate = Agreeing(session, coordinate, checkedMs);
                }
                // A handshake measured with no usable sample (the joiner was placed latency-blind):
                // nothing to check the claim by until the link has its own samples, so it waits.
                else if (link.MeasuresHandshake)
                {
                    return;
                }
                (session.Claim, session.ClaimCheckedMs) = (coordinate, checkedMs);
                _tracker.Planner.SetCoordinate(session.Id, Witnessed(session));
            }
    }

    /// <summary>
    /// What the coordinator takes for a peer's RTT to it (ms) once the control link has
    /// <see cref="SourceRttSamples"/> samples: the least of the <paramref name="samples"/>, or,
    /// until there are <see cref="HandshakeBoundSamples"/>, the handshake's RTT when that is less.
    /// A sample holds every stall of either process while its ping was out: in CI runs (ci127,
    /// ci128, ci130: two overlays of 100 peers side by side on 2 cores) the least of the first four
    /// samples of a 146 ms path was 473 ms, and an honest peer that claimed about its path's RTT
    /// was discounted as claiming less than half (event 1681). The kernel measures the handshake,
    /// with no process stall in it. But it measures the TCP connection, which ends where the
    /// peer's side of it does: a peer behind a TCP relay near the coordinator has a handshake of
    /// the relay's RTT while its pings cross the whole path. So the handshake bounds only the
    /// early samples, which start-up stalls inflate, and the least sample stands alone after.
    /// </summary>
    internal static double SourceRtt(TimeSpan leastSample, int samples, TimeSpan? handshake) =>
        samples < HandshakeBoundSamples && handshake is { } h && h < leastSample ? h.TotalMilliseconds : leastSample.TotalMilliseconds;

    /// <summary>Samples of a control link after which its least sample alone is the peer's RTT to the coordinator (<see cref="SourceRtt"/>): about a minute at the CLI's pings (4 a second apart, then one each 5 s).</summary>
    internal const int HandshakeBoundSamples = 16;

    /// <summary>Least gap (ms) between the RTT the coordinator measured to a peer and the one its coordinate claims, for <see cref="Agreeing"/> to discount the coordinate.</summary>
    internal const double CoordinateSlackMs = 10;

    /// <summary>
    /// The coordinate the plan holds for <paramref name="session"/>'s peer, which claims
    /// <paramref name="claimed"/> and whose control link's least RTT is <paramref name="measuredMs"/>.
    /// A peer's coordinate is its own word, and it says how far the peer is from everyone,
    /// the coordinator (the source) too; the coordinator can check that one distance. A claim
    /// that puts the peer nearer than half the least RTT measured, and by more than
    /// <see cref="CoordinateSlackMs"/>, is held with a height raised by the difference: as far
    /// from the coordinator as measured, and that much farther from every other node (an access
    /// link longer than claimed). Every round trip measured is at least the path's (a peer can
    /// delay its pongs, not hasten them; <see cref="Link"/> bounds its claimed hold), so a peer
    /// is never held nearer the source than it is by more than that. A claim that agrees is held
    /// as it is; one that puts the peer farther costs only the peer. Under the coordinator's lock.
    /// </summary>
    private NetworkCoordinate Agreeing(PeerSession session, NetworkCoordinate claimed, double measuredMs)
    {
        var held = Agreement(claimed, measuredMs, out bool discount, out double estimated);
        if (discount != session.CoordinateDiscounted)
        {
            session.CoordinateDiscounted = discount;
            if (discount) CoordinatorLog.CoordinateDiscounted(Log, session.Id, estimated, measuredMs);
            else CoordinatorLog.CoordinateAgrees(Log, session.Id, estimated, measuredMs);
        }
        return held;
    }

    /// <summary>
    /// The rule of <see cref="Agreeing"/>, alone: the coordinate held for a peer that claims
    /// <paramref name="claimed"/> and was measured at least <paramref name="measuredMs"/> (RTT) from
    /// the coordinator; <paramref name="discounted"/> when it was raised, <paramref name="estimatedMs"/>
    /// the RTT to the coordinator the claim gives. A joiner's is checked at its placement (Admission).
    /// </summary>
    internal static NetworkCoordinate Agreement(NetworkCoordinate claimed, double measuredMs, out bool discounted, out double estimatedMs)
    {
        estimatedMs = claimed.EstimateRtt(Anchor);
        discounted = Understates(estimatedMs, measuredMs);
        return discounted ? claimed with { Height = claimed.Height + (measuredMs - estimatedMs) } : claimed;
    }

    /// <summary>
    /// True when a peer's word that it is <paramref name="claimedMs"/> (RTT) from the coordinator
    /// puts it grossly nearer than the <paramref name="measuredMs"/> measured: less than half, and by
    /// more than <see cref="CoordinateSlackMs"/>.
    /// </summary>
    internal static bool Understates(double claimedMs, double measuredMs) => claimedMs < measuredMs / 2 && measuredMs - claimedMs > CoordinateSlackMs;

    /// <summary>The coordinate the plan holds for peer <paramref name="id"/> (<see cref="NetworkCoordinate.Unknown"/> if none): what it places others by and hands joiners as a landmark.</summary>
    internal NetworkCoordinate PlannedCoordinate(int id)
    {
        lock (_tracker.Gate) return _tracker.Planner.Contains(id) ? _tracker.Planner.CoordinateOf(id) : NetworkCoordinate.Unknown;
    }

    /// <summary>
    /// A peer's heartbeat reported the RTTs it measured to its parents (version 11): kept for
    /// <see cref="ImproveLatencyAsync"/>, but only about nodes that were its parents in the plan
    /// (<see cref="PeerSession.Report"/>); the others are dropped, and said so at debug level when
    /// they differ from the last report's (a peer that repeats a claim every heartbeat logs it once).
    /// </summary>
    private void OnParentRtts(Link link, ParentRtt[] parents)
    {
        if (link.Role is not ControlRole { Session: var session } || session.Control != link) return;
        var ignored = session.Report(parents);
        NoteWitnesses(session, parents);
        if (ignored.Length == 0 || ignored.AsSpan().SequenceEqual(session.LastIgnored)) return;
        session.LastIgnored = ignored;
        CoordinatorLog.ParentRttIgnored(Log, session.Id, string.Join(", ", ignored));
    }

    /// <summary>What <paramref name="peer"/> last reported of its parents' RTTs (empty if nothing, or no such peer): for tests.</summary>
    internal Wire.ParentRtt[] ReportedParentRtts(int peer)
    {
        lock (_tracker.Gate) return _tracker.Peers.TryGetValue(peer, out var session) ? session.ParentRtts : [];
    }

    /// <summary>What <paramref name="peer"/> last reported it measured to <paramref name="parent"/> (a parent it has or had); null if nothing (the caller holds the tracker's gate).</summary>
    private MeasuredEdgeRtt? ReportedRtt(int peer, int parent)
    {
        if (!_tracker.Peers.TryGetValue(peer, out var session)) return null;
        foreach (var r in session.ParentRtts)
            if (r.NodeId == (ulong)parent) return new MeasuredEdgeRtt(r.SmoothedMicros / 1000.0, r.MinMicros / 1000.0, r.Samples);
        return null;
    }

    /// <summary>
    /// For latency moves: <see cref="ReportedRtt"/>, else, for a node <paramref name="peer"/>'s Join
    /// reported as not answering or not reached, that figure, as sure as a move needs
    /// (<see cref="PeerSession.Unmeasured"/>). Not for a rebuild's fit of local coordinates, where
    /// such a figure would stand for a link's RTT (the caller holds the tracker's gate).
    /// </summary>
    private MeasuredEdgeRtt? ReportedOrUnmeasuredRtt(int peer, int parent) =>
        ReportedRtt(peer, parent) ?? (_tracker.Peers.TryGetValue(peer, out var session) && session.Unmeasured.TryGetValue(parent, out double ms)
            ? new MeasuredEdgeRtt(ms, ms, Planner.ImproveMinSamples) : null);

    /// <summary>RTT samples of a peer's control link before its least RTT stands for the peer's RTT to the coordinator in the plan.</summary>
    internal const int SourceRttSamples = 4;

    /// <summary>Most RTTs a joiner measures before it is placed (landmarks and candidate parents together).</summary>
    public const int MaxPingsPerJoin = 16;

    /// <summary>
    /// What event 1683 says a plan's fate is: carried out, deeper than its trees' depth bound (each
    /// planned tree's depth against its bound: declined whatever its estimated gain), or not
    /// worth carrying out by its estimated gain.
    /// </summary>
    private static string Verdict(RebuildPlan plan) =>
        plan.WorthCarryingOut ? "carrying it out"
        : plan.DeeperThanBound ? $"not carried out: deeper than the trees' depth bound (planned depths {string.Join(" ", plan.PlannedDepth)}, bounds {string.Join(" ", plan.DepthBound)})"
        : "not worth carrying out";

    /// <summary>
    /// Once a second (<see cref="CoordinatorOptions.LatencyMoveInterval"/>), moves up to <see cref="CoordinatorOptions.LatencyMovesPerSecond"/> peers
    /// (with the rebuild, <see cref="CoordinatorOptions.LatencyMovesShare"/> of them when that is more) whose
    /// estimated delay from the source is much worse than a free slot elsewhere offers
    /// (<see cref="Planner.ImproveLatency"/>): coordinates sharpen with every ping after a join, and
    /// later joiners bring free slots near earlier ones. A move must also be borne out by what the
    /// leaf measured to its parent (its heartbeats report it): estimates alone move nobody. With
    /// <see cref="CoordinatorOptions.LatencyRebuild"/>, a rebuild by regions goes first under the
    /// same cap: when one is due the plan's lock is held only to copy what planning reads
    /// (<see cref="Planner.TakeRebuildSnapshot"/>), the planning runs outside it while joins and
    /// leaves go on, and its moves are carried out under the lock again, where those that no longer
    /// fit are skipped (<see cref="Planner.AdoptRebuild"/>, <see cref="Planner.CarryOutRebuild"/>).
    /// This loop is the only one that plans, one planning at a time. A planning that throws (a bug)
    /// is logged (event 1687) and its snapshot handed back as one that gave no plan, which ends
    /// the series of rebuilds; the loop goes on. Stopping cancels a planning under way (it looks at
    /// the token between its steps). Each move goes out as a Move frame.
    /// </summary>
    private async Task ImproveLatencyAsync()
    {
        int cap = _options.LatencyMovesPerSecond;
        if (!_tracker.Planner.LatencyAware || cap <= 0) return;
        try
        {
            while (!Stopping.IsCancellationRequested)
            {
                await Task.Delay(_options.LatencyMoveInterval, Time, Stopping).ConfigureAwait(false);
                RebuildSnapshot? snapshot = null;
                TimeSpan copyTime = default;
                lock (_tracker.Gate)
                {
                    if (_source.Ended) return; // none after the end (set under this gate): the peers take in the tail
                    _reportedRtt ??= ReportedRtt;
                    _movesRtt ??= ReportedOrUnmeasuredRtt;
                    long copying = Time.GetTimestamp();
                    if (_options.LatencyRebuild && !_tracker.Planner.RebuildInProgress) snapshot = _tracker.Planner.TakeRebuildSnapshot(_reportedRtt);
                    copyTime = Time.GetElapsedTime(copying);
                }
                RebuildPlan? planned = null;
                if (snapshot is not null)
                {
                    long started = Time.GetTimestamp();
                    var plan = RebuildPlanning ?? ((s, token) => s.Plan(token));
                    try
                    {
                        planned = await Task.Run(() => plan(snapshot, Stopping), Stopping).ConfigureAwait(false);
                        CoordinatorLog.RebuildPlanned(Log, snapshot.PeerCount, Time.GetElapsedTime(started).TotalMilliseconds, copyTime.TotalMilliseconds,
                            planned is null ? "no valid plan within the caps" : $"estimated mean delay {planned.EstimatedBeforeMs:F1} -> {planned.EstimatedAfterMs:F1} ms, with the measured RTTs {planned.MeasuredBeforeMs:F1} -> {planned.MeasuredAfterMs:F1} ms, " + Verdict(planned));
                    }
                    catch (OperationCanceledException) when (Stopping.IsCancellationRequested)
                    {
                        lock (_tracker.Gate) _tracker.Planner.AdoptRebuild(snapshot, null);
                        return;
                    }
                    catch (Exception e)
                    {
                        // A bug: handed back below as a planning that gave no plan (the series
                        // ends), and the leaf moves go on.
                        CoordinatorLog.RebuildPlanningFailed(Log, snapshot.PeerCount, Time.GetElapsedTime(started).TotalMilliseconds, $"{e.GetType().Name}: {e.Message}", e);
                    }
                }
                List<Reattachment> moves;
                long round;
                lock (_tracker.Gate)
                {
                    if (snapshot is not null) _tracker.Planner.AdoptRebuild(snapshot, planned);
                    if (_source.Ended) return;
                    // With the rebuild on, a share of the peers (the CLI's 1%) when that is more than the cap.
                    int roundCap = _options.LatencyRebuild ? Planner.MovesCap(cap, _options.LatencyMovesShare, _tracker.Planner.PeerCount, _options.LatencyRebuildMinPeers, _tracker.Planner.RebuildInProgress) : cap;
                    moves = _options.LatencyRebuild ? [.. _tracker.Planner.CarryOutRebuild(roundCap)] : [];
                    if (moves.Count == 0 && !_tracker.Planner.RebuildInProgress) moves = [.. _tracker.Planner.ImproveLatency(roundCap, _movesRtt)];
                    round = ++_latencyMoveRounds;
                    if (moves.Count > 0) _tracker.SendMoves(moves, repair: false);
                }
                if (moves.Count > 0)
                {
                    Interlocked.Add(ref _latencyMoves, moves.Count);
                    CoordinatorLog.LatencyMoves(Log, round, moves.Count, string.Join(", ", moves.Select(m => $"peer {m.Peer} shard {m.Shard} -> {m.NewParent}")));
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }

    /// <summary>
    /// Gives demoted peers that kept up their budget back (<see cref="EvictionPolicy.CheckRepromotions"/>),
    /// every second until the source ends (after it nothing is queued, so nobody is found slow).
    /// </summary>
    private async Task RepromoteAsync()
    {
        try
        {
            while (!Stopping.IsCancellationRequested && !_source.Ended)
            {
                await Task.Delay(EvictionPolicy.RepromotionCheckInterval, Time, Stopping).ConfigureAwait(false);
                _eviction.CheckRepromotions();
            }
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }

    /// <summary>
    /// Plans a rebuild on the thread pool in place of <see cref="RebuildSnapshot.Plan"/>, given the
    /// snapshot and the coordinator's stop token (tests make a planning throw there, or hold it
    /// until the coordinator stops); null: <c>snapshot.Plan(token)</c>.
    /// </summary>
    internal Func<RebuildSnapshot, CancellationToken, RebuildPlan?>? RebuildPlanning { get; set; }

    /// <summary>True while a rebuild's snapshot is out for planning (for tests).</summary>
    internal bool RebuildBeingPlanned
    {
        get
        {
            lock (_tracker.Gate) return _tracker.Planner.RebuildBeingPlanned;
        }
    }

    private long _latencyMoves;
    private long _latencyMoveRounds;
    private Func<int, int, MeasuredEdgeRtt?>? _reportedRtt;

    private Func<int, int, MeasuredEdgeRtt?>? _movesRtt;

    /// <summary>Times the coordinator looked for latency moves so far (once a second while moves are on: <see cref="CoordinatorOptions.LatencyMoveInterval"/>).</summary>
    public long LatencyMoveRounds
    {
        get
        {
            lock (_tracker.Gate) return _latencyMoveRounds;
        }
    }

    /// <summary>(Peer, shard) edges moved so far for a lower delay from the source (<see cref="CoordinatorOptions.LatencyMovesPerSecond"/>).</summary>
    public long LatencyMoves => Interlocked.Read(ref _latencyMoves);

    /// <summary>Rebuilds by regions carried out to their end so far (<see cref="CoordinatorOptions.LatencyRebuild"/>).</summary>
    public int LatencyRebuilds
    {
        get
        {
            lock (_tracker.Gate) return _tracker.Planner.RebuildsDone;
        }
    }

    /// <summary>Joins told that the coordinator was busy, so far.</summary>
    public long JoinsRefusedBusy => _joinSlots.RefusedBusy;

    /// <summary>A ticket for a test's hand-made child: attach to <paramref name="parentId"/> as <paramref name="childId"/> for these shards.</summary>
    internal byte[] IssueTicket(int parentId, int childId, params int[] shards) => _tracker.IssueTicket(parentId, childId, shards);

    /// <inheritdoc />
    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync().ConfigureAwait(false);
        _source.Clear();
        if (_ephemeralKey) _signer.Dispose();
    }
}

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
    private readonly TaskCompletionSource _enoughPeers = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly StreamSigner _signer;
    private readonly bool _ephemeralKey;
    private readonly Tracker _tracker;
    private readonly StreamSource _source;
    private readonly EvictionPolicy _eviction;
    private readonly RepairService _repair;

    // The tracker's gate, plan and sessions, for the admission code still in this class's partial files.
    private readonly object _gate;
    private readonly Planner _planner;
    private readonly Dictionary<int, PeerSession> _peers;

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
        _tracker = new Tracker(options, _signer, Log, () => ListenAddress);
        (_gate, _planner, _peers) = (_tracker.Gate, _tracker.Planner, _tracker.Peers);
        _source = new StreamSource(options, _gate, Relay, _signer, Log, Time);
        _eviction = new EvictionPolicy(options, _tracker, Log, Time);
        _repair = new RepairService(options, _tracker, _source, _eviction, Log, Time, () => ListenAddress, session => _probeRtts.TryRemove(session.Address, out _), Stopping);
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
        _ = Task.Run(ImproveLatencyAsync, CancellationToken.None);
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
            if (_eviction.IsCutOff(advertised))
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
            var entries = _tracker.Assignments(id, startSeq, resume);
            // The proof that this coordinator holds the stream's key: the joiner checks it against its nonce.
            byte[] proof = [.. StreamKey.Bytes, .. _signer.SignJoin(hello.Nonce ?? new byte[Protocol.NonceLength], (ulong)id)];
            welcome = new Welcome(Protocol.Negotiate(hello), (ulong)id, (byte)k, (ulong)startSeq, (ulong)startOffset, _tracker.WithTickets(id, entries), proof);
            _source.WelcomedAtHead();
            // What it will hold: from its join point, or, joining again, from the earliest chunk it resumes at.
            session = new PeerSession(id, advertised, link) { Version = welcome.Version, Token = hello.PeerId, HeldFrom = resume?.Min() ?? startSeq };
            _peers[id] = session;
            demote = NoteUnreachableReports(id, hello);
            ShardStreamMetrics.Joins.Add(1);
            for (int s = 0; s < k; s++) ShardStreamMetrics.Depth.Record(_planner.DepthOf(id, s), ShardStreamMetrics.Shard(s));
            // A stronger joiner may take the place of weaker peers: they move under it.
            _tracker.SendMoves(_planner.LastJoinMoves.Where(m => m.Peer != id));
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
        foreach (var other in demote) _repair.DemoteUnreachable(other);
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
                    _tracker.MarkAttached(session);
                    session.AttachedOn = link;
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
                if (lost.Violation is { Length: > 0 }) _repair.OnParentAccused(session, (int)lost.ParentId, lost.Shards, lost.Violation);
                else _repair.OnParentLost(session, (int)lost.ParentId, lost.Shards);
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

    /// <summary>A direct child of the coordinator is slow: demote it to a leaf.</summary>
    private protected override void OnSlowChild(Link child, TimeSpan queueAge)
    {
        int id = ChildIdOf(child);
        if (id > 0) _eviction.Demote(id, $"its oldest queued chunk at the coordinator waited {queueAge.TotalSeconds:0.0} s");
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
    public OverlaySnapshot Snapshot() => _tracker.Snapshot();

    /// <inheritdoc />
    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync().ConfigureAwait(false);
        _source.Clear();
        if (_ephemeralKey) _signer.Dispose();
    }
}

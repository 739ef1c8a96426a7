using System.Buffers;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A viewer that relays: finds its place by following redirects from any node of the overlay,
/// receives every shard from its parents, writes the stream's bytes in order from its join point,
/// and serves its own children within its budget.
/// </summary>
public sealed partial class Peer : Node
{
    private readonly PeerOptions _options;
    private readonly Channel<Chunk> _output = Channel.CreateUnbounded<Chunk>(new UnboundedChannelOptions { SingleReader = true });
    private long _outputBacklog;
    private readonly object _gate = new();
    private readonly TaskCompletionSource<string> _failed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Dictionary<int, Link> _parentOfShard = [];
    private readonly Channel<Move> _moves = Channel.CreateUnbounded<Move>(new UnboundedChannelOptions { SingleReader = true });
    private Reassembler? _reassembler;
    private StreamVerifier? _verifier;
    private Link? _control;

    /// <summary>The longest heartbeat interval a peer follows when its coordinator asks for rarer heartbeats on the control link.</summary>
    public static readonly TimeSpan MaxControlHeartbeat = TimeSpan.FromSeconds(60);
    private string _coordinatorAddress = "";
    private int _shardCount;
    private ushort _version;
    private long _bytesWritten;
    private readonly TaskCompletionSource<StreamHeader> _header = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Creates a peer; <see cref="StartAsync"/> binds it and joins.</summary>
    public Peer(PeerOptions options, ITransport? transport = null, ILoggerFactory? loggerFactory = null, TimeProvider? time = null)
        : base(options, transport ?? TcpTransport.Instance, (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("peer"), time ?? TimeProvider.System)
    {
        if (options.Upload is < 0) throw new ArgumentException("upload cannot be negative");
        if (options.AdvertiseAddress is { } advertise && Endpoint.Parse(advertise).Port == 0)
            throw new ArgumentException($"the advertised address '{advertise}' needs the port other peers connect to, not 0");
        _options = options;
    }

    /// <summary>The id the coordinator gave this peer.</summary>
    public int Id { get; private set; }

    /// <summary>The stream offset of the first byte this peer writes.</summary>
    public long StartOffset { get; private set; }

    /// <summary>Bytes written to the output so far.</summary>
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    private protected override int ShardCount => _shardCount;

    private protected override StreamKey? AdmissionKey => _verifier?.Key;

    private protected override ulong NodeId => (ulong)Id;

    /// <summary>Binds the listener and joins the overlay: follows redirects, then attaches to a parent for every shard.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await ListenAsync(cancellationToken).ConfigureAwait(false);
        // A coordinator with too many joins in progress says so (admission control): join again
        // after a backoff with jitter, for up to the rejoin time.
        long since = Time.GetTimestamp();
        var wait = FirstRejoinBackoff;
        while (true)
        {
            try
            {
                await JoinViaAsync(_options.JoinAddress, [], cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (e is CoordinatorBusyException or JoinInterruptedException && Time.GetElapsedTime(since) < _options.RejoinFor)
            {
                // Busy, or it took the connection and then dropped it or did not answer (a loaded
                // machine: a coordinator that heard nothing from a starved joiner for its heartbeat
                // timeout closes the link before the joiner read its welcome). Either way it is
                // there: try again. A refusal with a reason, or no connection at all, ends the peer.
                var delay = wait * (0.5 + Random.Shared.NextDouble());
                if (e is CoordinatorBusyException) RejoinLog.Busy(Log, e.Message, delay.TotalSeconds);
                else RejoinLog.JoinInterrupted(Log, e.Message, delay.TotalSeconds, _options.RejoinFor.TotalSeconds);
                await Task.Delay(delay, Time, cancellationToken).ConfigureAwait(false);
                wait = Min(wait * 2, MaxRejoinBackoff);
            }
        }
    }

    /// <summary>Joins through <paramref name="address"/>, following redirects; <paramref name="resume"/> (a rejoin): where each shard goes on.</summary>
    private async Task JoinViaAsync(string address, ShardStart[] resume, CancellationToken cancellationToken)
    {
        int measured = 0;
        for (int hop = 0; ; hop++)
        {
            if (hop > _options.MaxRedirects) throw new ConnectionFailedException($"gave up after {_options.MaxRedirects} redirects");
            // A rejoin waits longer for the connection: on a loaded machine the coordinator's answers run late.
            var within = _reassembler is null ? _options.ConnectTimeout : Max(_options.ConnectTimeout, _options.HeartbeatTimeout * 2);
            var link = NewLink(await ConnectWithinAsync(address, within, cancellationToken).ConfigureAwait(false), $"coordinator {address}");
            ushort upload = _options.Upload is { } x ? (ushort)Math.Clamp(Math.Round(x * 100), 0, ushort.MaxValue - 1) : Hello.DefaultUpload;
            byte[] nonce = System.Security.Cryptography.RandomNumberGenerator.GetBytes(Protocol.NonceLength);
            Welcome welcome;
            try
            {
                long sent = Time.GetTimestamp();
                await link.WriteNowAsync(new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, _joinToken, upload, resume, AdvertisedAddress, nonce, null, ToWire(Coordinate), MeasuredRtts()).Write, cancellationToken).ConfigureAwait(false);
                // The coordinator may first check that this peer accepts connections (up to half its heartbeat timeout).
                var (answer, landmarks) = await ReadAnswerAsync(link, address, _options.HeartbeatTimeout * 2, landmarksAllowed: measured < MaxMeasuringRounds, cancellationToken).ConfigureAwait(false);
                if (landmarks is { } nodes)
                {
                    // A latency-aware coordinator wants a coordinate first (Peer.Landmarks.cs): measure, and join again.
                    var rtt = Time.GetElapsedTime(sent);
                    await link.DisposeAsync().ConfigureAwait(false);
                    await MeasureLandmarksAsync(nodes, rtt, cancellationToken).ConfigureAwait(false);
                    measured++;
                    hop--;
                    continue;
                }
                welcome = answer;
                if (welcome.PeerId != 0)
                {
                    var key = CheckProof(address, welcome, nonce);
                    if (_verifier is not null && !_verifier.Key.SameAs(key))
                        throw new ConnectionFailedException($"{address} now streams {key.Address}, not {_verifier.Key.Address}");
                    _verifier ??= new StreamVerifier(key, welcome.ShardCount);
                }
            }
            catch
            {
                // A join that failed (a rejoin tries again) leaves no connection behind.
                await link.DisposeAsync().ConfigureAwait(false);
                throw;
            }
            if (welcome.PeerId == 0)
            {
                // Not the coordinator: it told us where to ask.
                string next = welcome.Shards.FirstOrDefault().Address;
                PeerLog.Redirected(Log, address, next);
                await link.DisposeAsync().ConfigureAwait(false);
                if (string.IsNullOrEmpty(next)) throw new ProtocolException($"{address} sent a redirect without an address");
                address = next;
                continue;
            }
            await JoinAsync(link, address, welcome, resume, cancellationToken).ConfigureAwait(false);
            return;
        }
    }

    /// <summary>The stream's key, once the coordinator proved it holds it (and it is the one asked for, if any).</summary>
    public StreamKey? StreamKey => _verifier?.Key;

    /// <summary>
    /// The coordinator's placement must carry its public key and its signature over our nonce: a
    /// node that answers in its place cannot make one. With <see cref="PeerOptions.Stream"/> the
    /// key must be that one; without, it is pinned for the rest of the run and logged.
    /// </summary>
    private StreamKey CheckProof(string address, Welcome welcome, byte[] nonce)
    {
        if (welcome.Proof is not { Length: Welcome.ProofLength } proof)
            throw new ProtocolException($"{address} placed this peer without proving it holds the stream's key");
        StreamKey key;
        try
        {
            key = Trust.StreamKey.FromBytes(proof.AsSpan(0, Protocol.KeyLength));
        }
        catch (ArgumentException)
        {
            throw new ProtocolException($"{address} sent a stream key that is not an Ed25519 public key");
        }
        if (!key.VerifyJoin(nonce, welcome.PeerId, proof.AsSpan(Protocol.KeyLength)))
            throw new ProtocolException($"{address} did not prove it holds the key of stream {key.Address}: its signature over this peer's nonce is wrong");
        if (_options.Stream is { } wanted)
        {
            if (!wanted.SameAs(key))
                throw new ConnectionFailedException($"{address} streams {key.Address}, not the stream asked for ({wanted.Address})");
            PeerLog.KeyProved(Log, key.Address);
        }
        else
        {
            PeerLog.KeyPinned(Log, key.Address, key.Address);
        }
        return key;
    }

    private async Task<Welcome> ReadWelcomeAsync(Link link, string address, TimeSpan within, CancellationToken cancellationToken) =>
        (await ReadAnswerAsync(link, address, within, landmarksAllowed: false, cancellationToken).ConfigureAwait(false)).Welcome;

    /// <summary>The welcome <paramref name="address"/> answers with, or (a join, <paramref name="landmarksAllowed"/>) the landmarks to measure first.</summary>
    private async Task<(Welcome Welcome, Landmarks? Landmarks)> ReadAnswerAsync(Link link, string address, TimeSpan within, bool landmarksAllowed, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(within);
        (FrameType Type, byte[] Body) frame;
        try
        {
            frame = await link.ReadOneAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new JoinInterruptedException($"{address} did not answer within {within.TotalSeconds:0.#} s");
        }
        catch (IOException e)
        {
            throw new JoinInterruptedException($"{address} closed the connection: {e.Message}", e);
        }
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(frame.Body));
        if (frame.Type == FrameType.Goodbye)
        {
            string reason = Goodbye.TryRead(ref reader, out var bye) ? bye.Reason : "no reason given";
            if (bye.Code == GoodbyeCode.Busy) throw new CoordinatorBusyException($"{address} is busy: {reason}");
            throw new ConnectionFailedException($"{address} refused: {reason}");
        }
        if (frame.Type == FrameType.Landmarks && landmarksAllowed)
        {
            if (!Landmarks.TryRead(ref reader, out var landmarks)) throw new ProtocolException($"{address} sent a malformed landmarks frame");
            return (default, landmarks);
        }
        if (frame.Type != FrameType.Welcome || !Welcome.TryRead(ref reader, out var welcome))
            throw new ProtocolException($"{address} answered with a {frame.Type} frame instead of a welcome");
        if (welcome.Version is < Protocol.MinVersion or > Protocol.Version)
            throw new ProtocolException($"{address} chose protocol version {welcome.Version}, this peer speaks {Protocol.MinVersion}..{Protocol.Version}");
        return (welcome, null);
    }

    private async Task JoinAsync(Link control, string address, Welcome welcome, ShardStart[] resume, CancellationToken cancellationToken)
    {
        _version = welcome.Version;
        // A rejoin (Peer.Rejoin.cs): in the same place, as a new peer that resumes, or into a new run.
        var how = _reassembler is null ? Rejoin.First : PrepareRejoin(control, address, welcome, resume);
        Id = (int)welcome.PeerId;
        if (how == Rejoin.First)
        {
            _shardCount = welcome.ShardCount;
            ShardStreamMetrics.Announce(_shardCount);
            _coordinatorAddress = address;
            StartOffset = (long)welcome.StartOffset;
            StartRun(welcome);
            // A version-5 coordinator sends the stream header right after the Welcome; an older one none.
            if (_version < Protocol.StreamHeaderVersion) _header.TrySetResult(default);
            Background.Run(ApplyMovesAsync, Log, "applying moves");
        }
        _control = control;
        control.Name = "coordinator";
        control.Role = new CoordinatorRole();
        // The coordinator may ask for rarer heartbeats on this link (it has many peers to hear from).
        control.AcceptLongerHeartbeats(MaxControlHeartbeat);
        MeasureRtt(control, welcome.Version);
        List<(Link Old, byte[] Shards)> released;
        lock (_gate)
        {
            var served = welcome.Shards.Where(e => e.Kind == AssignmentKind.Served).Select(e => e.Shard).ToList();
            released = served.Select(s => (Shard: s, Old: _parentOfShard.GetValueOrDefault(s))).Where(x => x.Old is not null && x.Old != control)
                .GroupBy(x => x.Old!).Select(g => (g.Key, g.Select(x => x.Shard).ToArray())).ToList();
            foreach (var s in served) SetParent(s, control);
        }
        control.Start(OnParentFrame);
        control.Closed.ContinueWith(t => OnControlClosed(control, t.Result), TaskScheduler.Default).Observe(Log, "coordinator link closed");
        foreach (var (old, shards) in released) ReleaseOldParent(old, shards);

        LogJoined(how, welcome);

        // Every parent at once: one that does not answer delays only its own shards. A move that
        // arrives meanwhile wins over the welcome's plan. A peer that joins again in its place
        // keeps the parents it still has.
        long[] generations;
        lock (_gate) generations = (long[])_moveGeneration.Clone();
        await Task.WhenAll(welcome.Shards.Where(e => e.Kind == AssignmentKind.Redirect && !(how == Rejoin.InPlace && HasParent(e))).GroupBy(e => (e.Address, e.ParentId)).Select(async group =>
        {
            // A peer that joins again asks for each shard from its own next chunk.
            var starts = group.Select(e => new ShardStart(e.Shard, how is Rejoin.InPlace or Rejoin.Resume ? (ulong)_reassembler!.NextSeqOf(e.Shard) : welcome.StartSeq)).ToArray();
            try
            {
                await AttachAsync(group.Key.Address, group.Key.ParentId, starts, group.First().Ticket, cancellationToken, generations).ConfigureAwait(false);
            }
            catch (Exception e) when (e is ConnectionFailedException or ProtocolException or IOException)
            {
                // The parent went away between the coordinator's answer and our attach: the
                // coordinator repairs it like any lost parent, and a move follows.
                PeerLog.AttachFailed(Log, group.Key.Address, e.Message);
                var still = Current(starts, generations);
                if (still.Length > 0) control.Send(new ParentLost(group.Key.ParentId, still).Write);
            }
        })).ConfigureAwait(false);
        control.Send(new Attached(welcome.PeerId).Write);
    }

    /// <summary>Sent in the Join; a reachability probe must answer with it (see <see cref="Node.JoinToken"/>).</summary>
    private readonly ulong _joinToken = (ulong)Random.Shared.NextInt64(1, long.MaxValue);

    private protected override ulong JoinToken => _joinToken;

    /// <summary>What this peer tells others its listen address is: <see cref="PeerOptions.AdvertiseAddress"/>, else the bound listen address.</summary>
    private string AdvertisedAddress => _options.AdvertiseAddress ?? ListenAddress;

    /// <summary>Connects to a parent and asks it for some shards from given sequence numbers.</summary>
    private async Task AttachAsync(string address, ulong parentId, ShardStart[] starts, byte[]? ticket, CancellationToken cancellationToken, long[]? generations = null)
    {
        // The coordinator as a parent is reached where this peer reached it when it joined: the
        // address in a Move is its listen address, which may be 0.0.0.0 or a name only it knows.
        if (parentId == 0) address = _coordinatorAddress;
        var link = NewLink(await ConnectWithinAsync(address, _options.ConnectTimeout, cancellationToken).ConfigureAwait(false), $"parent {parentId} ({address})");
        await link.WriteNowAsync(new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Attach, (ulong)Id, 0, starts, AdvertisedAddress, null, ticket).Write, cancellationToken).ConfigureAwait(false);
        var welcome = await ReadWelcomeAsync(link, address, _options.HeartbeatTimeout, cancellationToken).ConfigureAwait(false);
        if (welcome.ShardCount != _shardCount) throw new ProtocolException($"{address} streams {welcome.ShardCount} shards, the coordinator said {_shardCount}");
        link.Role = new ParentRole((int)parentId);
        List<(Link Old, byte[] Shards)> replaced;
        byte[] superseded;
        string? unwanted = null;
        lock (_gate)
        {
            // A leave or the end of the stream may have come while this attach was under way:
            // they close the parent links they see under this lock, so a link installed after
            // them would stay open, and the parent would wait its whole drain timeout for it.
            if (_leaving) unwanted = "leaving";
            else if (_parentsClosed) unwanted = "stream complete";
            // A later move of some of these shards (applied meanwhile or still connecting) wins.
            var current = Current(starts, generations);
            superseded = starts.Where(s => !current.Contains(s)).Select(s => s.Shard).ToArray();
            starts = current;
            if (starts.Length == 0) unwanted ??= "superseded by a later move";
            var previous = starts.Select(s => (Shard: s.Shard, Old: _parentOfShard.GetValueOrDefault(s.Shard))).Where(x => x.Old is not null && x.Old != link).ToList();
            if (unwanted is null) foreach (var s in starts) SetParent(s.Shard, link);
            replaced = previous.GroupBy(x => x.Old!).Select(g => (g.Key, g.Select(x => x.Shard).ToArray())).ToList();
        }
        if (unwanted is not null)
        {
            await link.CloseAsync(GoodbyeCode.Normal, unwanted).ConfigureAwait(false);
            return;
        }
        MeasureRtt(link, welcome.Version);
        link.Start(OnParentFrame);
        if (superseded.Length > 0) link.Send(new Detach(superseded).Write);
        link.Closed.ContinueWith(t => OnParentClosed(link, parentId, t.Result), TaskScheduler.Default).Observe(Log, $"parent {parentId} link closed");
        foreach (var (old, shards) in replaced) ReleaseOldParent(old, shards);
    }

    /// <summary>
    /// Connects, giving up after <paramref name="within"/>: a parent whose packets are dropped (a
    /// NAT, a firewall) would otherwise keep the attach waiting for the kernel's SYN retries, minutes.
    /// </summary>
    private async Task<IConnection> ConnectWithinAsync(string address, TimeSpan within, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(within);
        try
        {
            return await Transport.ConnectAsync(address, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new ConnectionFailedException($"cannot connect to {address}: no answer within {within.TotalSeconds:0.#} s");
        }
    }

    /// <summary>The shards moved away from <paramref name="old"/>: tell it to stop, or close it when it serves nothing any more.</summary>
    private void ReleaseOldParent(Link old, byte[] shards)
    {
        bool stillServes;
        lock (_gate) stillServes = _parentOfShard.ContainsValue(old);
        if (stillServes || old == _control) old.Send(new Detach(shards).Write);
        else old.CloseAsync(GoodbyeCode.Normal, "moved to another parent").Observe(Log, $"{old.Name}: closing");
    }

    /// <summary>Per shard, the id of the node this peer receives it from now (0 = the coordinator, -1 = none).</summary>
    internal int[] ParentIds()
    {
        lock (_gate)
            return Enumerable.Range(0, _shardCount).Select(s => _parentOfShard.TryGetValue(s, out var l) ? ParentIdOf(l) : -1).ToArray();
    }

    /// <summary>The next chunk of <paramref name="shard"/> this peer wants (for tests).</summary>
    internal long NextSeqOf(int shard) => _reassembler?.NextSeqOf(shard) ?? 0;

    /// <summary>The most memory chunks waiting for another shard have kept alive (see <see cref="PeerOptions.MaxReassemblyBytes"/>).</summary>
    internal long PeakReassemblyBytes => _reassembler?.PeakHeldBytes ?? 0;

    /// <summary>Bytes skipped because they were older than every replay window that could have served them.</summary>
    public long LostBytes => _lostBefore + (_reassembler?.LostBytes ?? 0);

    /// <summary>What this peer is doing now, for its status line and <c>/api/peer</c> (read-only).</summary>
    public PeerStatus Status()
    {
        var relay = Relay;
        return new PeerStatus(Id, _shardCount, StartOffset, BytesWritten, _stalls.ReceivedBytes, _stalls.NewestEnd, LostBytes,
            Interlocked.Read(ref _outputBacklog), _shardCount == 0 ? [] : ParentIds(), ChildIds(), relay?.WindowBytes ?? 0, _options.ReplayWindowBytes,
            _stalls.StalledShards, _reassembler?.IsComplete ?? false);
    }

    private readonly List<Chunk> _ready = [];

    private readonly ShardStalls _stalls = new();

    private void OnParentFrame(Link link, FrameType type, ReadOnlySequence<byte> body)
    {
        switch (type)
        {
            case FrameType.Chunk:
                if (!ChunkHeader.TryRead(body, out var header, out var payload)) throw new ProtocolException("malformed chunk frame");
                if (header.Shard >= _shardCount) throw new ProtocolException($"chunk of shard {header.Shard}, the stream has {_shardCount}");
                // One chunk of a shard at a time, from the check to the relay: during a move the old
                // parent's chunk in flight and the new parent's replay of it arrive on two links at
                // once, and the second must find the first kept (a duplicate), not its hash taken
                // (an honest parent accused) or a later chunk kept before it (a gap).
                lock (_shardIntake[header.Shard]) OnChunk(link, header, body, payload);
                break;
            case FrameType.End:
                var reader = new SequenceReader<byte>(body);
                if (!End.TryRead(ref reader, out var end)) throw new ProtocolException("malformed end frame");
                if (end.Shard >= _shardCount) throw new ProtocolException($"end of shard {end.Shard}, the stream has {_shardCount}");
                lock (_shardIntake[end.Shard])
                {
                    lock (_gate)
                    {
                        // Only the shard's current parent can say it has sent everything.
                        if (!_parentOfShard.TryGetValue(end.Shard, out var current) || current != link) return;
                    }
                    // A parent cut off for room had chunks of the shard refused: its End would skip them.
                    if (link.IsClosing) return;
                    _verifier!.VerifyEnd(end);
                    // An End while chunks of the shard are missing: see RefuseShortEnd.
                    if (RefuseShortEnd(link, end)) return;
                    Relay!.PublishEnd(end);
                    lock (_ready)
                    {
                        _reassembler!.SetEnd((long)end.FinalSeq, (long)end.FinalOffset, _ready, end.Shard);
                        FlushReady();
                    }
                }
                break;
            case FrameType.Hashes:
                var hashReader = new SequenceReader<byte>(body);
                if (!HashList.TryRead(ref hashReader, out var list)) throw new ProtocolException("malformed hash list frame");
                if (list.Shard >= _shardCount) throw new ProtocolException($"hash list of shard {list.Shard}, the stream has {_shardCount}");
                lock (_shardIntake[list.Shard])
                {
                    lock (_gate)
                    {
                        if (!_parentOfShard.TryGetValue(list.Shard, out var current) || current != link) return;
                    }
                    _verifier!.AddHashList(list, _reassembler!.NextSeqOf(list.Shard));
                    // Forwarded as it came (TryRead accepts only the one encoding): no second encoding per list.
                    Relay!.PublishHashList(list, FrameWriting.FromBody(FrameType.Hashes, body));
                }
                break;
            case FrameType.Move:
                // Only the coordinator moves peers: a parent that sends a Move is lying.
                if (link != _control) throw new InvalidDataException("a Move from a parent: only the coordinator's control link may carry one");
                var moveReader = new SequenceReader<byte>(body);
                if (!Move.TryRead(ref moveReader, out var move)) throw new ProtocolException("malformed move frame");
                // Moves are applied one at a time, in the order the coordinator sent them: the last one wins.
                _moves.Writer.TryWrite(move);
                break;
            case FrameType.StreamHeader when link == _control && _version >= Protocol.StreamHeaderVersion:
                var headerReader = new SequenceReader<byte>(body);
                if (!StreamHeader.TryRead(ref headerReader, out var streamHeader)) throw new ProtocolException("malformed stream header frame");
                if (!_verifier!.Key.VerifyHeader(streamHeader)) throw new InvalidDataException("a stream header with a bad signature");
                _header.TrySetResult(streamHeader);
                break;
            case FrameType.Notice when link == _control:
                var noticeReader = new SequenceReader<byte>(body);
                if (!Notice.TryRead(ref noticeReader, out var notice)) throw new ProtocolException("malformed notice frame");
                OnNotice(notice);
                break;
            case FrameType.Goodbye:
                break;
            default:
                throw new ProtocolException($"unexpected {type} frame from a parent");
        }
    }

    /// <summary>When each shard's parent link was installed (a move or a join).</summary>
    private readonly long[] _parentSince = new long[Protocol.MaxShards];

    /// <summary>Makes <paramref name="link"/> the parent of <paramref name="shard"/>. Called under the gate.</summary>
    private void SetParent(int shard, Link link)
    {
        _parentOfShard[shard] = link;
        _parentSince[shard] = Time.GetTimestamp();
    }

    /// <summary>How many times each shard's End came from a parent while chunks of the shard were missing (see <see cref="RefuseShortEnd"/>).</summary>
    private readonly int[] _shortEnds = new int[Protocol.MaxShards];

    /// <summary>A peer takes a parent's End over chunks it never received only after this many parents ended the shard short.</summary>
    internal const int ShortEndsBeforeGap = 3;

    /// <summary>
    /// A parent ended a shard while chunks of it below the end never came from it: it withheld
    /// them, or its own window or upstream lost them. Taken at its word, the child would skip those
    /// chunks as lost for good, while another node's window may still hold them. So the End is
    /// neither applied nor forwarded; the link is closed with the reason, the coordinator hears of
    /// a lost parent and repairs it (the same parent once more, then another one), and the shard
    /// resumes at its next chunk. The gap is taken (and counted in <see cref="LostBytes"/>) only
    /// when <see cref="ShortEndsBeforeGap"/> parents ended it short, or when the coordinator did
    /// (the source: what it no longer holds, no one is owed).
    /// </summary>
    private bool RefuseShortEnd(Link link, End end)
    {
        long next = _reassembler!.NextSeqOf(end.Shard);
        if (next >= (long)end.FinalSeq || _reassembler.IsComplete || IsCoordinator(link)) return false;
        int times = Interlocked.Increment(ref _shortEnds[end.Shard]);
        if (times >= ShortEndsBeforeGap) return false;
        RepairLog.ShortEnd(Log, link.Name, end.Shard, (long)end.FinalSeq, next, times);
        link.CloseAsync(GoodbyeCode.Normal, $"ended shard {end.Shard} at chunk {end.FinalSeq} without sending chunks from {next} on").Observe(Log, $"{link.Name}: closing");
        return true;
    }

    /// <summary>One slot per shard: chunks, hash lists and ends of a shard are taken in one at a time (see <see cref="OnParentFrame"/>).</summary>
    private readonly object[] _shardIntake = Enumerable.Range(0, Protocol.MaxShards).Select(_ => new object()).ToArray();

    /// <summary>Called for a parent's chunk that is due (no duplicate), just before its check (tests hold a chunk there).</summary>
    internal Action<Link, long>? ChunkDue { get; set; }

    /// <summary>A chunk from a parent, under its shard's intake lock: checked, kept, written in order and forwarded.</summary>
    private void OnChunk(Link link, in ChunkHeader header, ReadOnlySequence<byte> body, ReadOnlySequence<byte> payload)
    {
        lock (_gate)
        {
            // After a move the old parent may still have chunks of the shard in flight: not ours any more.
            if (!_parentOfShard.TryGetValue(header.Shard, out var expected) || expected != link) return;
        }
        // Cut off for room (below): nothing more of it, so each shard stays in order.
        if (link.IsClosing) return;
        // A duplicate (a new parent replays what the old one sent) is dropped unchecked: it
        // is neither written nor forwarded. Anything else is checked before either.
        if ((long)header.Seq < _reassembler!.NextSeqOf(header.Shard)) return;
        ChunkDue?.Invoke(link, (long)header.Seq);
        _verifier!.VerifyChunk(header, body);
        var chunk = Chunk.FromReceived(header.Shard, (long)header.Seq, (long)header.Offset, payload);
        Volatile.Write(ref _lastProgress, Time.GetTimestamp());
        _stalls.Received(header.Shard, chunk.Length, chunk.Offset + chunk.Length);
        // Kept before it is forwarded: a chunk refused for room is not forwarded either, so
        // the children of a relay that lacks a shard are not pushed past their own bound.
        chunk.Retain();
        lock (_ready)
        {
            try
            {
                // The coordinator is trusted: its chunks are kept past the bound, and only the lagging parent is cut off.
                _reassembler!.Add(chunk, _ready, _options.MaxReassemblyBytes, trusted: IsCoordinator(link));
                if (_reassembler.Full is { } kept)
                {
                    _reassembler.Full = null;
                    CutOffForRoom(link, kept);
                }
            }
            catch (ReassemblyFullException full)
            {
                chunk.Release();
                CutOffForRoom(link, full);
                return;
            }
            FlushReady();
        }
        Relay!.Publish(chunk);
        chunk.Release();
    }

    /// <summary>The coordinator as a parent (the control link, or a link attached to parent 0): it is trusted, never cut off for room.</summary>
    private bool IsCoordinator(Link link) => link == _control || ParentIdOf(link) == CoordinatorRole.ParentId;

    /// <summary>The id of the node <paramref name="link"/> brings shards from (0 = the coordinator), -1 for a link that is no parent.</summary>
    private static int ParentIdOf(Link link) => link.Role switch
    {
        CoordinatorRole => CoordinatorRole.ParentId,
        ParentRole parent => parent.ParentId,
        _ => -1,
    };

    /// <summary>
    /// A chunk was refused at the reassembler's bound: chunks of the other shards wait for the
    /// lagging shard's next chunk. That shard's parent holds the stream back (it withholds the
    /// shard, or is too slow for this peer), and the sender of the refused chunk may send nothing
    /// more that this peer can take in order. Both links close with the reason (no accusation:
    /// slowness is no proof of a lie); the coordinator hears of lost parents and repairs them,
    /// and each shard resumes from its next chunk. The coordinator is never cut off (it sends what
    /// its source reads, and its control link is this peer's place in the overlay).
    /// </summary>
    private void CutOffForRoom(Link sender, ReassemblyFullException full)
    {
        Link? lagging;
        long since;
        lock (_gate)
        {
            lagging = _parentOfShard.GetValueOrDefault(full.LaggingShard);
            since = _parentSince[full.LaggingShard];
        }
        // A parent that took the lagging shard over lately is replaying it from its window: it is
        // not the one holding the stream back (cutting it made every repair after a withholding
        // relay undo the next one, docs/resilience.md "Orphans").
        bool replaying = Time.GetElapsedTime(since) < _options.HeartbeatTimeout;
        if (lagging is not null && lagging != sender && !lagging.IsClosing && !IsCoordinator(lagging) && !replaying)
        {
            BoundsLog.ShardHeldBack(Log, lagging.Name, full.LaggingShard, full.Message);
            lagging.CloseAsync(GoodbyeCode.Normal, $"shard {full.LaggingShard} is too far behind the others: {full.Message}").Observe(Log, $"{lagging.Name}: closing");
        }
        if (full.Kept || sender.IsClosing) return;
        BoundsLog.ReassemblyFull(Log, sender.Name, full.Message);
        lock (_gate) _cutForRoom[sender] = (full.LaggingShard, _reassembler!.NextSeqOf(full.LaggingShard));
        sender.CloseAsync(GoodbyeCode.Normal, $"shard {full.RefusedShard} is too far ahead of shard {full.LaggingShard}: {full.Message}").Observe(Log, $"{sender.Name}: closing");
    }

    private void OnNotice(Notice notice)
    {
        if (notice.Code == NoticeCode.Leaf) ReachabilityLog.RelaysNothing(Log, notice.Text, AdvertisedAddress);
        else ReachabilityLog.UnknownNotice(Log, (ushort)notice.Code, notice.Text);
    }

    private void FlushReady()
    {
        foreach (var c in _ready)
        {
            long waiting = Interlocked.Add(ref _outputBacklog, c.Length);
            _output.Writer.TryWrite(c);
            // A viewer whose output (stdout, a pipe to a player) is slower than the stream would
            // grow without bound: it stops with the reason instead (it costs only itself).
            if (waiting > _options.MaxOutputBacklogBytes)
                _failed.TrySetResult($"the output is slower than the stream: {waiting} bytes are waiting to be written, the limit is {_options.MaxOutputBacklogBytes}");
        }
        _ready.Clear();
        if (_reassembler!.IsComplete) _output.Writer.TryComplete();
    }

    /// <summary>Per shard, how many moves of it have been taken in: an attach made for an older one is superseded.</summary>
    private readonly long[] _moveGeneration = new long[Protocol.MaxShards];

    /// <summary>
    /// Takes moves in the order the coordinator sent them and applies each without waiting for
    /// the ones before: a parent that does not answer (a black-holed address, a frozen node) delays
    /// only the shards sent to it, by at most the connect timeout and the welcome timeout, never
    /// the repairs behind it. For a shard moved twice the later move wins, even when the earlier
    /// attach completes last: each move's attaches carry the move generation of its shards.
    /// </summary>
    private async Task ApplyMovesAsync()
    {
        try
        {
            await foreach (var move in _moves.Reader.ReadAllAsync(Stopping).ConfigureAwait(false))
            {
                long[] generations;
                lock (_gate)
                {
                    foreach (var e in move.Shards)
                        if (e.Shard < _moveGeneration.Length) _moveGeneration[e.Shard]++;
                    generations = (long[])_moveGeneration.Clone();
                }
                MoveAsync(move, generations).Observe(Log, "applying a move");
            }
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }
    }

    private async Task MoveAsync(Move move, long[] generations)
    {
        if (_leaving || _reassembler!.IsComplete) return;
        await Task.WhenAll(move.Shards.GroupBy(e => (e.Address, e.ParentId)).Select(async group =>
        {
            // A new parent that holds the shards only from a later chunk: the chunks before it come from the coordinator first (Peer.Fill.cs).
            await FillBeforeAttachAsync(group.Select(e => e.Shard), group.Key.ParentId, group.Max(e => e.FromSeq), generations).ConfigureAwait(false);
            var starts = group.Select(e => new ShardStart(e.Shard, (ulong)_reassembler!.NextSeqOf(e.Shard))).ToArray();
            PeerLog.Moving(Log, string.Join(",", starts.Select(s => $"{s.Shard}@{s.FromSeq}")), group.Key.ParentId, group.Key.Address);
            try
            {
                await AttachAsync(group.Key.Address, group.Key.ParentId, starts, group.First().Ticket, Stopping, generations).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException || !Stopping.IsCancellationRequested)
            {
                // Whatever went wrong, the coordinator hears of it (for the shards no later move took over).
                var still = Current(starts, generations);
                PeerLog.AttachFailed(Log, group.Key.Address, e.Message);
                if (still.Length > 0) _control?.Send(new ParentLost(group.Key.ParentId, still).Write);
            }
        })).ConfigureAwait(false);
        _control?.Send(new Attached((ulong)Id).Write);
    }

    /// <summary>The shards of <paramref name="starts"/> that no move newer than <paramref name="generations"/> has taken over.</summary>
    private ShardStart[] Current(ShardStart[] starts, long[]? generations)
    {
        if (generations is null) return starts;
        lock (_gate) return starts.Where(s => s.Shard >= _moveGeneration.Length || _moveGeneration[s.Shard] == generations[s.Shard]).ToArray();
    }

    private void OnParentClosed(Link link, ulong parentId, CloseReason closed)
    {
        string reason = closed.Text;
        if (_reassembler!.IsComplete || Stopping.IsCancellationRequested || _leaving) return;
        ShardStart[] lost;
        lock (_gate)
        {
            lost = _parentOfShard.Where(kv => kv.Value == link).Select(kv => new ShardStart((byte)kv.Key, (ulong)_reassembler.NextSeqOf(kv.Key))).ToArray();
            foreach (var s in lost) _parentOfShard.Remove(s.Shard);
        }
        if (lost.Length == 0) return;
        if (link.ReceivedGoodbye == GoodbyeCode.TooSlow)
        {
            // The parent is fine; this peer could not keep up. Say so and stop, rather than
            // hang without a parent; the coordinator then moves this peer's own children.
            _failed.TrySetResult(link.ReceivedGoodbyeReason is { Length: > 0 } why ? why : $"parent {parentId} cut this peer off: {reason}");
            return;
        }
        foreach (var s in lost) _stalls.Stalled(s.Shard);
        if (closed.IsViolation)
        {
            string violation = closed.Text;
            // Nothing it sent after its last good chunk was written or forwarded; the coordinator
            // hears why, moves this peer and the liar's other children, and refuses the liar.
            PeerLog.ParentCutOff(Log, parentId, string.Join(",", lost.Select(s => s.Shard)), violation);
            _control?.Send(new ParentLost(parentId, lost, violation).Write);
            return;
        }
        (int Shard, long NextSeq) lagging;
        bool forRoom;
        lock (_gate) forRoom = _cutForRoom.Remove(link, out lagging);
        if (forRoom && !lost.Any(s => s.Shard == lagging.Shard))
        {
            ReportWhenRoomAsync(parentId, lost.Select(s => s.Shard).ToArray(), lagging, reason).Observe(Log, $"parent {parentId}: reporting it lost");
            return;
        }
        PeerLog.ParentLost(Log, parentId, string.Join(",", lost.Select(s => s.Shard)), reason);
        _control?.Send(new ParentLost(parentId, lost).Write);
    }

    /// <summary>Parent links this peer cut off because a chunk they sent had no room, with the lagging shard and its next chunk then.</summary>
    private readonly Dictionary<Link, (int Shard, long NextSeq)> _cutForRoom = [];

    /// <summary>
    /// A parent cut off for room (it sent a chunk of a shard that ran too far ahead) is reported
    /// lost once the lagging shard has moved on, or after a heartbeat timeout: reported at once,
    /// the coordinator would send this peer back to it, it would send the same chunk, which would
    /// find no room again, and the second report would take an honest edge out of the plan as
    /// "cannot connect". Shards a move gave another parent meanwhile are not reported.
    /// </summary>
    private async Task ReportWhenRoomAsync(ulong parentId, byte[] shards, (int Shard, long NextSeq) lagging, string reason)
    {
        long start = Time.GetTimestamp();
        try
        {
            while (_reassembler!.NextSeqOf(lagging.Shard) <= lagging.NextSeq && !_reassembler.IsComplete && Time.GetElapsedTime(start) < _options.HeartbeatTimeout)
                await Task.Delay(TimeSpan.FromMilliseconds(50), Time, Stopping).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        if (_reassembler.IsComplete || _leaving) return;
        ShardStart[] lost;
        lock (_gate) lost = shards.Where(s => !_parentOfShard.ContainsKey(s)).Select(s => new ShardStart(s, (ulong)_reassembler.NextSeqOf(s))).ToArray();
        if (lost.Length == 0) return;
        PeerLog.ParentLost(Log, parentId, string.Join(",", lost.Select(s => s.Shard)), reason);
        _control?.Send(new ParentLost(parentId, lost).Write);
    }

    /// <summary>A child this peer serves is slow: ask the coordinator to demote it (protocol version 2 on).</summary>
    private protected override void OnSlowChild(Link child, TimeSpan queueAge)
    {
        int id = ChildIdOf(child);
        if (id <= 0 || _version < Protocol.SlowChildVersion) return;
        _control?.Send(new SlowChild((ulong)id, (uint)Math.Min(queueAge.TotalMilliseconds, uint.MaxValue)).Write);
    }

    private protected override Task OnJoinAsync(Link link, Hello hello)
    {
        // Only the coordinator places peers: send the joiner there.
        var redirect = new Welcome(Protocol.Negotiate(hello), 0, (byte)Math.Max(1, _shardCount), 0, 0,
            [new ShardAssignment(0, AssignmentKind.Redirect, 0, 0, _coordinatorAddress)]);
        return RefuseWithRedirectAsync(link, redirect);
    }

    private async Task RefuseWithRedirectAsync(Link link, Welcome redirect)
    {
        await link.WriteNowAsync(redirect.Write, Stopping).ConfigureAwait(false);
        await link.ShutdownAsync("redirected to the coordinator").ConfigureAwait(false);
        await link.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Leaves on purpose without a stall for anyone: asks the coordinator to move this peer's
    /// children to other parents, waits until they have (their links close), then closes.
    /// </summary>
    public async Task LeaveAsync(TimeSpan timeout)
    {
        var control = _control;
        if (control is null || control.IsClosing) return;
        lock (_gate) _leaving = true;
        PeerLog.Leaving(Log);
        control.Send(new Leave((ulong)Id).Write);
        var children = Relay?.Subscribers() ?? [];
        await Task.WhenAny(Task.WhenAll(children.Select(c => c.Closed)), Task.Delay(timeout, Time)).ConfigureAwait(false);
        int left = children.Count(c => !c.Closed.IsCompleted);
        if (left > 0) PeerLog.LeftChildrenOpen(Log, left, timeout.TotalSeconds);
        List<Link> parents;
        lock (_gate) parents = _parentOfShard.Values.Append(control).Distinct().ToList();
        await Task.WhenAll(parents.Select(p => p.CloseAsync(GoodbyeCode.Normal, "leaving"))).ConfigureAwait(false);
        // Anything still open (a child that never moved, a late attach) ends now: this peer is gone.
        CloseAllLinks("left the overlay");
        _failed.TrySetResult("left the overlay before the end of the stream");
    }

    /// <inheritdoc />
    public override async ValueTask DisposeAsync()
    {
        _failed.TrySetResult("the peer was stopped");
        await base.DisposeAsync().ConfigureAwait(false);
    }

    private volatile bool _leaving;

    /// <summary>Set under <see cref="_gate"/> when the stream is complete and the parent links are being closed: no new parent link is installed after.</summary>
    private bool _parentsClosed;

    /// <summary>
    /// Writes the stream to <paramref name="output"/> in order until its end, flushes, lets the
    /// children finish, and closes. Throws <see cref="StreamInterruptedException"/> when the stream
    /// cannot be completed (the coordinator was lost).
    /// </summary>
    public async Task RunAsync(Stream output, CancellationToken cancellationToken)
    {
        var reader = _output.Reader;
        var writing = Task.Run(async () =>
        {
            // A media stream joined after its start: its header first (docs/media.md).
            var header = await _header.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            if (header.Bytes is { Length: > 0 } headerBytes)
            {
                Nodes.MediaLog.WritingHeader(Log, header.Format == 1 ? "FLV" : "MPEG-TS", headerBytes.Length, StartOffset);
                await output.WriteAsync(headerBytes, cancellationToken).ConfigureAwait(false);
            }
            while (await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                while (reader.TryRead(out var chunk))
                {
                    try
                    {
                        await output.WriteAsync(chunk.Memory, cancellationToken).ConfigureAwait(false);
                        Interlocked.Add(ref _bytesWritten, chunk.Length);
                        Interlocked.Add(ref _outputBacklog, -chunk.Length);
                    }
                    finally
                    {
                        chunk.Release();
                    }
                }
                // Flush when caught up, so a live viewer sees bytes at once.
                await output.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
            await output.FlushAsync(cancellationToken).ConfigureAwait(false);
        }, cancellationToken);
        var first = await Task.WhenAny(writing, _failed.Task).ConfigureAwait(false);
        if (first == _failed.Task) throw new StreamInterruptedException(_failed.Task.Result);
        await writing.ConfigureAwait(false);
        if (LostBytes > 0) PeerLog.CompleteWithLoss(Log, LostBytes, BytesWritten, StartOffset);
        else PeerLog.Complete(Log, BytesWritten, StartOffset);

        // Parents first, children after: in striped trees a peer's child in one shard can be its
        // parent in another, so waiting for children before closing parents could wait in a circle.
        List<Link> parents;
        lock (_gate)
        {
            _parentsClosed = true;
            parents = _parentOfShard.Values.Append(_control!).Distinct().ToList();
        }
        await Task.WhenAll(parents.Select(p => p.CloseAsync(GoodbyeCode.Normal, "stream complete"))).ConfigureAwait(false);
        await DrainChildrenAsync(cancellationToken).ConfigureAwait(false);
    }

}

/// <summary>The coordinator has too many joins in progress (Goodbye code Busy): join again after a backoff.</summary>
public sealed class CoordinatorBusyException(string message) : Exception(message);

/// <summary>The coordinator accepted the join's connection, then closed it or did not answer in time: worth another try.</summary>
public sealed class JoinInterruptedException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>The stream could not be completed; the message says why.</summary>
public sealed class StreamInterruptedException(string message) : Exception(message);

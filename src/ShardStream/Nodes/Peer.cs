using System.Buffers;
using System.Globalization;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Collections;
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
public sealed partial class Peer : Node, IPeerParents
{
    private readonly PeerOptions _options;
    private readonly PeerIntake _intake;
    private readonly ParentLossReporter _lossReporter;
    private readonly object _gate = new();
    private readonly TaskCompletionSource<string> _failed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Dictionary<int, Link> _parentOfShard = [];
    private readonly Channel<(Move Move, Link From)> _moves = Channel.CreateUnbounded<(Move, Link)>(new UnboundedChannelOptions { SingleReader = true });
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
        _intakeMeter = new IntakeMeter(Time);
        _lossReporter = new ParentLossReporter(options, this, _stalls, Log, Time, Stopping);
        _intake = new PeerIntake(options, this, _lossReporter, _stalls, Log, Time);
    }

    /// <summary>The id the coordinator gave this peer.</summary>
    public int Id { get; private set; }

    /// <summary>The stream offset of the first byte this peer writes.</summary>
    public long StartOffset { get; private set; }

    /// <summary>Bytes written to the output so far.</summary>
    public long BytesWritten => Interlocked.Read(ref _bytesWritten);

    private protected override int ShardCount => _shardCount;

    private protected override StreamRun? AdmissionRun => _verifier?.Run;

    private protected override ulong NodeId => (ulong)Id;

    /// <summary>Binds the listener and joins the overlay: follows redirects, then attaches to a parent for every shard.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await ListenAsync(cancellationToken).ConfigureAwait(false);
        PeerLog.Listening(Log, ListenAddress, ToldOthers());
        // A coordinator with too many joins in progress says so (admission control): join again
        // after a backoff with jitter, for up to the rejoin time. That time counts from the first
        // failure, not from the start: a first attempt that alone outlasted it (its answer waited
        // for, 2 heartbeat timeouts, on a loaded machine) would otherwise get no second one.
        long? since = null;
        var wait = FirstRejoinBackoff;
        while (true)
        {
            try
            {
                await JoinViaAsync(_options.JoinAddress, [], cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (e is CoordinatorBusyException or JoinInterruptedException or JoinTokenTakenException)
            {
                since ??= Time.GetTimestamp();
                if (Time.GetElapsedTime(since.Value) >= _options.RejoinFor) throw;
                // Another node joined first with this peer's token (it learned it: docs/security.md,
                // "A peer's join token in other hands"), and the coordinator lists it under it: this
                // peer is a new joiner to it with a token of its own.
                if (e is JoinTokenTakenException) NewJoinToken();
                // Busy, or it took the connection and then dropped it or did not answer (a loaded
                // machine: a coordinator that heard nothing from a starved joiner for its heartbeat
                // timeout closes the link before the joiner read its welcome). Either way it is
                // there: try again. A refusal with a reason, or no connection at all (refused, unanswered), ends the peer.
                var delay = wait * (0.5 + Random.Shared.NextDouble());
                if (e is CoordinatorBusyException) RejoinLog.Busy(Log, e.Message, delay.TotalSeconds);
                else if (e is JoinTokenTakenException) RejoinLog.TokenTaken(Log, e.Message, delay.TotalSeconds);
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
        // A version-10 coordinator keeps the connection it sent Landmarks on: the next Join goes there.
        Link? kept = null;
        // Version 13: the Join names the stream this peer will accept (--stream, or the key pinned at
        // its first join), so a coordinator of another stream refuses it before placing it. A node
        // older than 13 takes that for a malformed hello: then this join goes on without it.
        byte[]? stream = _options.MaxVersion >= Protocol.StreamCheckVersion ? (_options.Stream ?? _verifier?.Key)?.Bytes : null;
        // The node that sent this join to address, if one did: named when address cannot be reached.
        string? redirectedBy = null;
        for (int hop = 0; ; hop++)
        {
            if (hop > _options.MaxRedirects) throw new ConnectionFailedException($"gave up after {_options.MaxRedirects} redirects");
            // A rejoin waits longer for the connection: on a loaded machine the coordinator's answers run late.
            var within = _reassembler is null ? _options.ConnectTimeout : Max(_options.ConnectTimeout, _options.HeartbeatTimeout * 2);
            Link link;
            try
            {
                link = kept ?? NewLink(await ConnectWithinAsync(address, within, cancellationToken).ConfigureAwait(false), $"coordinator {address}");
            }
            catch (ConnectionFailedException e) when (e.Reset)
            {
                // The coordinator took the connection and reset it (its hello gate dropped it, or its
                // hello deadline passed) before this peer's loaded process saw the connect complete:
                // it is there, so this is tried again like a join dropped before its welcome.
                throw new JoinInterruptedException($"{address} reset the connection as it was made: {e.InnerException!.Message}", e);
            }
            catch (ConnectionFailedException e) when (redirectedBy is not null)
            {
                // Not the address the user gave: say where it came from (a dual-stack peer that
                // reached the coordinator over IPv4 sends an IPv6-only joiner to that IPv4 address).
                throw new ConnectionFailedException($"{e.Message} (where {redirectedBy} redirected the join)", e.InnerException ?? e);
            }
            bool reused = kept is not null;
            kept = null;
            ushort upload = _options.Upload is { } x ? (ushort)Math.Clamp(Math.Round(x * 100), 0, ushort.MaxValue - 1) : Hello.DefaultUpload;
            byte[] nonce = System.Security.Cryptography.RandomNumberGenerator.GetBytes(Protocol.NonceLength);
            Welcome welcome;
            try
            {
                long sent = Time.GetTimestamp();
                (Welcome Welcome, Landmarks? Landmarks) answered;
                try
                {
                    try
                    {
                        await link.WriteNowAsync(new Hello(Protocol.MinVersion, _options.MaxVersion, HelloRole.Join, _joinToken, upload, resume, AdvertisedAddress, nonce, null, ToWire(Coordinate), MeasuredRtts(), stream).Write, cancellationToken).ConfigureAwait(false);
                    }
                    catch (IOException e) when (!reused && !cancellationToken.IsCancellationRequested)
                    {
                        // The coordinator took the connection and reset it before this peer's hello
                        // (a joiner starved between its connect and its hello on a loaded machine
                        // passes the coordinator's hello deadline): it is there, so this is tried
                        // again like a join dropped before its welcome, not the end of the peer.
                        throw new JoinInterruptedException($"{address} closed the connection before this peer's hello: {e.Message}", e);
                    }
                    // The coordinator may first check that this peer accepts connections (up to half its heartbeat timeout).
                    answered = await JoinAnswer.ReadAsync(link, address, _options.HeartbeatTimeout * 2, landmarksAllowed: measured < Protocol.MaxLandmarkRounds, cancellationToken,
                        // A rejoin answered Goodbye(ShuttingDown): the run is over (the coordinator's wait after the end).
                        bye => bye.Code == GoodbyeCode.ShuttingDown && resume.Length > 0 ? new CoordinatorStoppedException(bye.Reason)
                            : stream is null ? null
                            : bye.Code == GoodbyeCode.OtherStream ? JoinAnswer.CheckOtherStream(address, bye, nonce, stream, _options.Stream, _verifier?.Key)
                            : bye.Code == GoodbyeCode.ProtocolError && bye.Reason.StartsWith("malformed hello frame", StringComparison.Ordinal) ? new StreamNotReadException()
                            : null).ConfigureAwait(false);
                }
                catch (StreamNotReadException)
                {
                    // A node older than version 13 (the coordinator, or a peer that redirects): the
                    // same Join without the stream, on a new connection; the Welcome's proof is checked as before.
                    PeerLog.StreamNotRead(Log, address);
                    stream = null;
                    await link.DisposeAsync().ConfigureAwait(false);
                    hop--;
                    continue;
                }
                catch (Exception e) when (reused && e is IOException or InvalidOperationException && e is not JoinInterruptedException { Unanswered: true } && !cancellationToken.IsCancellationRequested)
                {
                    // The kept connection was closed while this peer measured (it took longer than the
                    // coordinator waits, or the coordinator needed the room): the Join goes on a new one.
                    // One left open but unanswered is not: that goes to the caller's backoff, as on a new connection.
                    PeerLog.KeptConnectionLost(Log, address, e.Message);
                    await link.DisposeAsync().ConfigureAwait(false);
                    hop--;
                    continue;
                }
                var (answer, landmarks) = answered;
                if (answer.Shards is { } entries) answer = answer with { Shards = AsReached(link, entries) };
                if (landmarks is { } named) landmarks = named with { Nodes = [.. named.Nodes.Select(n => n with { Address = AsReached(link, n.Address) })] };
                if (landmarks is { } nodes)
                {
                    // A latency-aware coordinator wants a coordinate first (Peer.Landmarks.cs): measure, and join again.
                    var rtt = Time.GetElapsedTime(sent);
                    if (nodes.Version >= Protocol.OneConnectionVersion)
                    {
                        // Version 10: the coordinator waits for the next Join on this connection.
                        kept = link;
                    }
                    else
                    {
                        // Closed in order (the coordinator closed its side after the landmarks): a
                        // reset would cost the coordinator an exception per round (docs/performance.md).
                        await link.ShutdownAsync("landmarks read").ConfigureAwait(false);
                        await link.DisposeAsync().ConfigureAwait(false);
                    }
                    await MeasureLandmarksAsync(nodes, rtt, cancellationToken).ConfigureAwait(false);
                    measured++;
                    hop--;
                    continue;
                }
                welcome = answer;
                if (welcome.PeerId != 0)
                {
                    StreamRun run;
                    try
                    {
                        run = JoinAnswer.CheckProof(address, welcome, nonce, _options.Stream, _verifier?.Key, Log);
                    }
                    catch (Exception e) when (e is ConnectionFailedException or ProtocolException)
                    {
                        // Placed in a stream this peer will not watch: it says so, or the coordinator
                        // would keep its place for the rejoin grace, and its drain after the end wait for it.
                        await RefuseAsync(link, GoodbyeCode.Refused, e.Message, warn: false).ConfigureAwait(false);
                        throw;
                    }
                    // A rejoin into another run takes that run's verifier in PrepareRejoin.
                    _verifier ??= new StreamVerifier(run, welcome.ShardCount);
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
                redirectedBy = address;
                address = next;
                continue;
            }
            await JoinAsync(link, address, welcome, resume, cancellationToken).ConfigureAwait(false);
            return;
        }
    }

    /// <summary>
    /// <paramref name="address"/>, a node that the node at the other end of <paramref name="link"/>
    /// (the coordinator, or a peer that redirects) named, as this peer reaches it. The coordinator
    /// lists a node that joined it over loopback with an unspecified listen address (a viewer on
    /// the coordinator's machine: <c>-c 127.0.0.1:1234 -l 0.0.0.0:1235</c>) at the address its
    /// connection came from, <c>127.0.0.1:1235</c>: from another machine that is this machine, and
    /// the node is on the host this peer reached the coordinator's machine at
    /// (<see cref="Endpoint.AsReachedFrom"/>, with that host). Unchanged when this peer is on that
    /// machine itself (loopback reaches it, and may be all that does), or for any other address.
    /// </summary>
    private string AsReached(Link link, string address)
    {
        string reached = Endpoint.AsReachedFrom(address, link.RemoteAddress);
        if (reached == address) return address;
        _machineAddresses ??= [.. Endpoint.MachineAddresses(int.MaxValue)];
        return _machineAddresses.Contains(Endpoint.HostOf(link.RemoteAddress)) ? address : reached;
    }

    private ShardAssignment[] AsReached(Link link, ShardAssignment[] entries) =>
        [.. entries.Select(e => e.Kind == AssignmentKind.Redirect ? e with { Address = AsReached(link, e.Address) } : e)];

    /// <summary>This machine's addresses, read once when first needed (<see cref="AsReached(Link, string)"/>).</summary>
    private HashSet<string>? _machineAddresses;

    /// <summary>A node older than version 13 refused this peer's Join as malformed: it names its stream.</summary>
    private sealed class StreamNotReadException : Exception;

    /// <summary>The stream's key, once the coordinator proved it holds it (and it is the one asked for, if any).</summary>
    public StreamKey? StreamKey => _verifier?.Key;

    /// <summary>The run of the stream this peer watches now (the key and the run id of the Welcome that placed it).</summary>
    public StreamRun? Run => _verifier?.Run;

    private async Task<Welcome> ReadWelcomeAsync(Link link, string address, TimeSpan within, CancellationToken cancellationToken) =>
        (await JoinAnswer.ReadAsync(link, address, within, landmarksAllowed: false, cancellationToken).ConfigureAwait(false)).Welcome;

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
            Volatile.Write(ref _coordinatorAddress, address);
            StartOffset = (long)welcome.StartOffset;
            StartRun(welcome);
            // A version-5 coordinator sends the stream header right after the Welcome; an older one none.
            if (_version < Protocol.StreamHeaderVersion) _header.TrySetResult(default);
            Background.Run(ApplyMovesAsync, Log, "applying moves");
        }
        _control = control;
        control.Name = "coordinator";
        control.Role = new CoordinatorRole();
        // The coordinator may ask for rarer heartbeats on this link (it has many peers to hear
        // from), and for more frequent ones again when it holds fewer.
        control.FollowHeartbeatRequests(MaxControlHeartbeat);
        MeasureRtt(control, welcome.Version);
        // Version 11: its heartbeats tell the coordinator what this peer measured to its parents.
        if (welcome.Version >= Protocol.ParentRttVersion) control.ParentRttReport = ParentRttsToSend;
        // Version 14: its heartbeats say how far the source is (a parent that withholds a shard is found out).
        if (welcome.Version >= Protocol.StreamHeadVersion) control.StreamHeadHeard = OnStreamHead;
        List<(Link Old, byte[] Shards)> released;
        lock (_gate)
        {
            var served = welcome.Shards.Where(e => e.Kind == AssignmentKind.Served).Select(e => e.Shard).ToList();
            released = served.Select(s => (Shard: s, Old: _parentOfShard.GetValueOrDefault(s))).Where(x => x.Old is not null && x.Old != control)
                .GroupBy(x => x.Old!).Select(g => (g.Key, g.Select(x => x.Shard).ToArray())).ToList();
            foreach (var s in served) SetParent(s, control);
        }
        // The welcome's attaches are of the moves taken in so far: a Move read on this link (it
        // can come right behind the Welcome) is later, and wins. Taken once the read loop has
        // started, a Move read meanwhile counted as older: both attaches were current, the one
        // that completed last won, and the plan had the peer under the other parent.
        // A rejoin's Welcome is later than every Move of the link it replaces: the plan may have
        // changed since one of them (a later Move lost with that link), and the Welcome says where
        // the plan has the peer now. Their attaches still under way are superseded, else the one
        // that completed last kept the peer under a parent the plan no longer has it under.
        long[] generations;
        lock (_gate)
        {
            if (how != Rejoin.First)
                for (int s = 0; s < _moveGeneration.Length; s++) _moveGeneration[s]++;
            generations = (long[])_moveGeneration.Clone();
        }
        control.Start(OnParentFrame, NoteCutOff);
        control.Closed.ContinueWith(t => OnControlClosed(control, t.Result), TaskScheduler.Default).Observe(Log, "coordinator link closed");
        foreach (var (old, shards) in released) ReleaseOldParent(old, shards);

        LogJoined(how, welcome);

        // Every parent at once: one that does not answer delays only its own shards. A move that
        // arrives meanwhile wins over the welcome's plan. A peer that joins again in its place
        // keeps the parents it still has.
        // A fill that broke off with the old control link goes on on this one when the peer keeps its place (the same session, which the coordinator allows it again).
        if (how != Rejoin.InPlace) ForgetPendingFills();
        await Task.WhenAll(welcome.Shards.Where(e => e.Kind == AssignmentKind.Redirect && !(how == Rejoin.InPlace && HasParent(e))).GroupBy(e => (e.Address, e.ParentId)).Select(async group =>
        {
            byte[] brokenOff = [];
            if (how == Rejoin.InPlace && TakePendingFill(group) is { } pending)
                brokenOff = await FillBeforeAttachAsync(control, pending.Shards, group.Key.ParentId, pending.HeldFrom, generations).ConfigureAwait(false);
            // A peer that joins again asks for each shard from its own next chunk.
            var starts = group.Where(e => !brokenOff.Contains(e.Shard)).Select(e => new ShardStart(e.Shard, how is Rejoin.InPlace or Rejoin.Resume ? (ulong)_reassembler!.NextSeqOf(e.Shard) : welcome.StartSeq)).ToArray();
            if (starts.Length == 0) return;
            try
            {
                await AttachAsync(group.Key.Address, group.Key.ParentId, starts, group.First().Ticket, cancellationToken, generations).ConfigureAwait(false);
            }
            catch (Exception e) when (e is ConnectionFailedException or ProtocolException or IOException)
            {
                // The parent went away between the coordinator's answer and our attach: the
                // coordinator repairs it like any lost parent, and a move follows.
                PeerLog.AttachFailed(Log, group.Key.Address, e.Message);
                _lossReporter.AttachFailed(control, group.Key.ParentId, Current(starts, generations));
            }
        })).ConfigureAwait(false);
        control.Send(new Attached(welcome.PeerId).Write);
    }

    /// <summary>
    /// Sent in the Join; a reachability probe is answered with a proof of it, never with it (see <see cref="Node.JoinToken"/>).
    /// Drawn again only when a first join finds it taken (<see cref="NewJoinToken"/>), before the next Join.
    /// </summary>
    private ulong _joinToken = (ulong)Random.Shared.NextInt64(1, long.MaxValue);

    private protected override ulong JoinToken => Volatile.Read(ref _joinToken);

    /// <summary>This peer's join token, for tests that join with it from elsewhere.</summary>
    internal ulong Token => Volatile.Read(ref _joinToken);

    /// <summary>A first join found this peer's token listed for another node: the next Join carries a new one (and probes are answered with a proof of it).</summary>
    private void NewJoinToken()
    {
        ulong token;
        do token = (ulong)Random.Shared.NextInt64(1, long.MaxValue);
        while (token == _joinToken);
        Volatile.Write(ref _joinToken, token);
    }

    /// <summary>What other peers are told of where this one listens, in words for its start-up log line.</summary>
    private string ToldOthers()
    {
        if (_options.AdvertiseAddress is { } advertise) return $"{advertise} (--advertise)";
        try
        {
            var (host, port) = Endpoint.Parse(ListenAddress);
            if (Endpoint.IsUnspecified(host))
                return $"the address the coordinator sees this peer's connection come from, port {port} (--advertise HOST:PORT names another)";
        }
        catch (FormatException)
        {
            // A transport whose addresses are not HOST:PORT (the tests' virtual network): told as it is.
        }
        return ListenAddress;
    }

    /// <summary>
    /// What to do so that other peers can connect to this one, for the warning that it relays
    /// nothing. A listener on loopback (a peer without -l) cannot be reached from another machine
    /// whatever is forwarded or advertised: it must listen on the machine's addresses first.
    /// </summary>
    private string RelayAdvice()
    {
        // An older coordinator checks a probe by the join token in clear, which this peer never shows.
        if (_version < Protocol.ProbeProofVersion && _options.MaxVersion >= Protocol.ProbeProofVersion)
            return $"run a coordinator of protocol version {Protocol.ProbeProofVersion} or later: this one speaks {_version}, and takes this peer's answer to its reachability probe (a proof of the join token, not the token) for another node's";
        try
        {
            var (host, port) = Endpoint.Parse(ListenAddress);
            bool loopback = host == "localhost" || (System.Net.IPAddress.TryParse(host, out var ip) && System.Net.IPAddress.IsLoopback(ip));
            if (loopback && _options.AdvertiseAddress is null)
                return $"it must listen on an address other machines reach: it listens on {ListenAddress}, this machine only; run it with -l 0.0.0.0:PORT (every address of this machine), and forward that TCP port on your router or firewall if it is behind one";
            if (_options.AdvertiseAddress is { } advertised) port = Endpoint.Parse(advertised).Port;
            return $"other peers must be able to connect to it: forward TCP port {port} on your router or firewall to this machine, or run with --advertise HOST:PORT naming an address and port that reach it";
        }
        catch (FormatException)
        {
            // A transport whose addresses are not HOST:PORT (the tests' virtual network).
            return $"other peers must be able to connect to it at {AdvertisedAddress}";
        }
    }

    /// <summary>What this peer tells others its listen address is: <see cref="PeerOptions.AdvertiseAddress"/>, else the bound listen address.</summary>
    private string AdvertisedAddress => _options.AdvertiseAddress ?? ListenAddress;

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
            _intake.OutputBacklog, _shardCount == 0 ? [] : ParentIds(), ChildIds(), relay?.WindowBytes ?? 0, _options.ReplayWindowBytes,
            _stalls.StalledShards, _reassembler?.IsComplete ?? false);
    }

    private readonly ShardStalls _stalls = new();
    private readonly IntakeMeter _intakeMeter;

    /// <summary>What a stop as too slow adds about this peer's own download now (empty without a window); for tests.</summary>
    internal string IntakeSaid => _intakeMeter.Said();

    /// <summary>
    /// A frame from a parent or the control link: the stream's to the intake, the rest handled
    /// here; throws on a violation. The read loop then notes the shards the link is the parent of
    /// (<see cref="NoteCutOff"/>, as for a violation it finds itself: a bad frame header, a
    /// malformed ping) and closes it with the reason.
    /// </summary>
    private void OnParentFrame(Link link, FrameType type, ReadOnlySequence<byte> body)
    {
        // The stream itself (chunks, hash lists, ends) goes to the intake; the rest is the peer's.
        if (_intake.OnFrame(link, type, body, _shardCount)) return;
        switch (type)
        {
            case FrameType.Move:
                // Only the coordinator moves peers: a parent that sends a Move is lying.
                if (link != _control) throw new InvalidDataException("a Move from a parent: only the coordinator's control link may carry one");
                var moveReader = new SequenceReader<byte>(body);
                if (!Move.TryRead(ref moveReader, out var move)) throw new ProtocolException("malformed move frame");
                move = new Move(AsReached(link, move.Shards));
                // Moves are applied one at a time, in the order the coordinator sent them: the last one wins.
                _moves.Writer.TryWrite((move, link));
                break;
            case FrameType.StreamHeader when link == _control && _version >= Protocol.StreamHeaderVersion:
                var headerReader = new SequenceReader<byte>(body);
                if (!StreamHeader.TryRead(ref headerReader, out var streamHeader)) throw new ProtocolException("malformed stream header frame");
                if (!_verifier!.Run.VerifyHeader(streamHeader)) throw new InvalidDataException("a stream header with a bad signature");
                _header.TrySetResult(streamHeader);
                break;
            case FrameType.Notice when link == _control:
                var noticeReader = new SequenceReader<byte>(body);
                if (!Notice.TryRead(ref noticeReader, out var notice)) throw new ProtocolException("malformed notice frame");
                OnNotice(notice);
                break;
            case FrameType.DropChild when link == _control && _version >= Protocol.DropChildVersion:
                var dropReader = new SequenceReader<byte>(body);
                if (!DropChild.TryRead(ref dropReader, out var drop)) throw new ProtocolException("malformed drop-child frame");
                OnDropChild(drop);
                break;
            case FrameType.Goodbye:
                break;
            default:
                throw new ProtocolException($"unexpected {type} frame from a parent");
        }
    }

    /// <summary>Called for a parent's chunk that is due (no duplicate), just before its check (tests hold a chunk there).</summary>
    internal Action<Link, long>? ChunkDue
    {
        get => _intake.ChunkDue;
        set => _intake.ChunkDue = value;
    }

    /// <summary>Called when a parent link's close is handled, before anything else (tests hold it there).</summary>
    internal Action<Link>? ParentClosedHandling
    {
        get => _lossReporter.ClosedHandling;
        set => _lossReporter.ClosedHandling = value;
    }

    /// <summary>The rejoin under way holds it (tests take it to keep one under way).</summary>
    internal SemaphoreSlim RejoinUnderWay => _rejoining;

    /// <summary>How long a ParentLost report waits for a Move before this peer joins again for it (<see cref="ParentLossReporter.UnansweredAfter"/>).</summary>
    internal TimeSpan UnansweredAfter => _lossReporter.UnansweredAfter;

    /// <summary>Called on each tick of the parent checks, once the unanswered reports were looked at (tests count ticks).</summary>
    internal Action? UnansweredChecked { get; set; }

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
    /// The coordinator took a child of this peer out of the overlay (it failed as far as the
    /// coordinator can tell, or was evicted) and gave its slot to another peer: every link that
    /// serves it is closed, with the reason. A child that joins again gets a new id, so its new links
    /// are not these. An id this peer does not serve (the child moved away already) closes nothing.
    /// </summary>
    private void OnDropChild(DropChild drop)
    {
        if (drop.ChildId > int.MaxValue) return;
        lock (_dropped)
        {
            _dropped.Add(drop.ChildId);
        }
        int closed = 0;
        foreach (var child in ChildLinksOf((int)drop.ChildId))
        {
            Relay?.Unsubscribe(child);
            // The coordinator decided and logged why; this parent's line is 9307, below. What is
            // queued for it is dropped: the goodbye goes next, and the coordinator's own goodbye to
            // a peer it stopped as too slow no longer waits behind this backlog on its slow link.
            child.CloseAsync(GoodbyeCode.Refused, "the coordinator took this peer out of the overlay", routine: true, dropQueued: true).Observe(Log, $"{child.Name}: closing");
            closed++;
        }
        RepairLog.ChildDropped(Log, (int)drop.ChildId, closed);
    }

    /// <summary>
    /// Children the coordinator took out of the overlay (<see cref="OnDropChild"/>), refused if they
    /// attach again: a move the coordinator sent the child before it stopped it (as too slow, its
    /// goodbye still crossing its slow link) arrives after the drop, and its ticket is good. Across
    /// network namespaces a viewer stopped as too slow attached to a parent 0.4 s after that parent
    /// dropped it, and was found slow there 12 s later (event 900 about a peer no longer in the
    /// overlay). A peer that joins again gets a new id; a new run of the coordinator forgets them
    /// (<see cref="ForgetDroppedChildren"/>). Bounded; under its own lock.
    /// </summary>
    private readonly RecentSet<ulong> _dropped = new(MaxDroppedRemembered);
    private const int MaxDroppedRemembered = 4096;

    /// <summary>Forgets the children dropped so far: a restarted coordinator's new run numbers its peers from 1 again.</summary>
    private void ForgetDroppedChildren()
    {
        lock (_dropped)
        {
            _dropped.Clear();
        }
    }

    private protected override string? DroppedChild(ulong peerId)
    {
        lock (_dropped)
            return _dropped.Contains(peerId) ? $"the coordinator took peer {peerId} out of the overlay" : null;
    }

    private void OnNotice(Notice notice)
    {
        if (notice.Code == NoticeCode.Leaf) ReachabilityLog.RelaysNothing(Log, notice.Text, RelayAdvice());
        else if (notice.Code == NoticeCode.Demoted) SlowChildLog.DemotedHere(Log, notice.Text);
        else ReachabilityLog.UnknownNotice(Log, (ushort)notice.Code, notice.Text);
    }

    /// <summary>A child this peer serves is slow: ask the coordinator to demote it (protocol version 2 on), with the figures (version 8 on).</summary>
    private protected override void OnSlowChild(SlowChildren.Finding finding)
    {
        int id = ChildIdOf(finding.Link);
        if (id <= 0 || _version < Protocol.SlowChildVersion) return;
        (uint, uint)? rates = _version >= Protocol.SlowChildRatesVersion ? (Kbps(finding.DownloadMbps), Kbps(finding.StreamMbps)) : null;
        _control?.Send(new SlowChild((ulong)id, (uint)Math.Min(finding.QueueAge.TotalMilliseconds, uint.MaxValue), rates).Write);

        // A rate above zero is 1 kbit/s at least: the coordinator says "took nothing" for 0.
        static uint Kbps(double mbps) => mbps > 0 ? (uint)Math.Clamp(Math.Round(mbps * 1000), 1, uint.MaxValue) : 0;
    }

    /// <summary>A peer demotes nobody: it reports the child to the coordinator (whose line says what it decided), or, where <see cref="CoordinatorDecides"/> says it cannot, closes it here if still slow after the grace.</summary>
    private protected override string SlowChildAction(Link child) =>
        CoordinatorDecides(child) ? "reported to the coordinator, which decides"
            : string.Create(CultureInfo.InvariantCulture, $"not reported ({(ChildIdOf(child) <= 0 ? "its peer id is not known here" : "no link to the coordinator now")}): closed here if still slow {NodeOptionsBase.SlowChildGrace.TotalSeconds:0.#} s on");

    /// <summary>
    /// A child still slow after the grace is reported again (version 8 on, where the report has the
    /// figures): the coordinator stops it when it is a leaf behind for that long, with the source's
    /// rate in its message, or demotes it when it still relays. Older coordinators: closed here.
    /// </summary>
    private protected override bool CoordinatorDecides(Link child) =>
        ChildIdOf(child) > 0 && _version >= Protocol.SlowChildRatesVersion && _control is not null;

    private protected override Task OnJoinAsync(Link link, Hello hello)
    {
        // Only the coordinator places peers: send the joiner there. This peer listens before its own
        // join is answered: until then, the joiner goes on to where this peer joins (its -c). An
        // address of this machine only (this peer reached it at 127.0.0.1:1234) is given as other
        // machines reach this one: the host of --advertise (behind a NAT, the host the joiner
        // connected to is the private one the port forward delivered to), else that host.
        string coordinator = Volatile.Read(ref _coordinatorAddress);
        if (coordinator.Length == 0) coordinator = _options.JoinAddress;
        var redirect = new Welcome(Protocol.Negotiate(hello), 0, (byte)Math.Max(1, _shardCount), 0, 0,
            [new ShardAssignment(0, AssignmentKind.Redirect, 0, 0, Endpoint.AsReachedFrom(coordinator, link.LocalAddress, _options.AdvertiseAddress))]);
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
        _stopped = true;
        _failed.TrySetResult("the peer was stopped");
        await base.DisposeAsync().ConfigureAwait(false);
    }

    private volatile bool _leaving;

    /// <summary>Set when the peer is disposed: a run that fails for it does not leave first.</summary>
    private volatile bool _stopped;

    /// <summary>Set under <see cref="_gate"/> when the stream is complete and the parent links are being closed: no new parent link is installed after.</summary>
    private bool _parentsClosed;

    /// <summary>The reports of parent links not yet closed (<see cref="ParentLossReporter.OnParentClosed"/>), under <c>_gate</c>.</summary>
    private readonly List<(Link Link, Task Report)> _lossReports = [];

    /// <summary>
    /// Writes the stream to <paramref name="output"/> in order until its end, flushes, lets the
    /// children finish, and closes. Throws <see cref="StreamInterruptedException"/> when the stream
    /// cannot be completed (the coordinator was lost).
    /// </summary>
    public async Task RunAsync(Stream output, CancellationToken cancellationToken)
    {
        var reader = _intake.Output;
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
                        _intake.Written(chunk.Length);
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
        if (first == _failed.Task)
        {
            // Stopped by what it was told (a parent cut it off as too slow, say) while its control
            // link is open: it leaves as on purpose, so that the coordinator moves its children now
            // and keeps no place for it. It stayed in the plan, heartbeating with no stream coming,
            // until its process exited; then the link ended as lost, and its place was kept for the
            // rejoin grace (the drain after the end waited for it).
            if (!_leaving && !_stopped) await LeaveAsync(_options.HeartbeatTimeout * 2).ConfigureAwait(false);
            throw new StreamInterruptedException(_failed.Task.Result);
        }
        await writing.ConfigureAwait(false);
        if (LostBytes > 0) PeerLog.CompleteWithLoss(Log, LostBytes, BytesWritten, StartOffset);
        else PeerLog.Complete(Log, BytesWritten, StartOffset);

        // Parents first, children after: in striped trees a peer's child in one shard can be its
        // parent in another, so waiting for children before closing parents could wait in a circle.
        // The control link last: while it is open the coordinator keeps this peer in the plan. A
        // goodbye on it before the children have the tail made the coordinator move them, and a
        // moved child drops what this peer still sends it; when the new parent's window no longer
        // holds that, it is lost (RejoinTests' gap test, AfterTheEndTests).
        List<Link> parents;
        Link control;
        lock (_gate)
        {
            _parentsClosed = true;
            control = _control!;
            parents = _parentOfShard.Values.Where(l => l != control).Distinct().ToList();
        }
        await Task.WhenAll(parents.Select(p => p.CloseAsync(GoodbyeCode.Normal, "stream complete"))).ConfigureAwait(false);
        try
        {
            // A parent cut off for what it sent is reported on the control link: before it closes
            // (bounded: a parent link closes within its close timeout, the heartbeat timeout).
            Task[] reports;
            lock (_gate) reports = [.. _lossReports.Where(r => r.Link != control).Select(r => r.Report)];
            // A report that failed was logged where it ran (Observe); only its end matters here.
            await Task.WhenAny(Task.WhenAll(reports), Task.Delay(_options.HeartbeatTimeout, Time, cancellationToken)).ConfigureAwait(false);
            await DrainChildrenAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await control.CloseAsync(GoodbyeCode.Normal, "stream complete").ConfigureAwait(false);
        }
    }

}

/// <summary>The coordinator has too many joins in progress (Goodbye code Busy): join again after a backoff.</summary>
public sealed class CoordinatorBusyException(string message) : Exception(message);

/// <summary>The coordinator lists another node under this peer's join token (Goodbye code TokenTaken): draw a new token and join again as new.</summary>
public sealed class JoinTokenTakenException(string message) : Exception(message);

/// <summary>The coordinator answered a rejoin with Goodbye(ShuttingDown): its run is over, nothing to join again; the message is its words.</summary>
internal sealed class CoordinatorStoppedException(string message) : Exception(message);

/// <summary>The coordinator accepted the join's connection, then closed it or did not answer in time: worth another try.</summary>
public sealed class JoinInterruptedException(string message, Exception? inner = null) : IOException(message, inner)
{
    /// <summary>The connection stayed open and no answer came in time (else the coordinator closed it).</summary>
    public bool Unanswered { get; init; }
}

/// <summary>The stream could not be completed; the message says why.</summary>
public sealed class StreamInterruptedException(string message) : Exception(message);

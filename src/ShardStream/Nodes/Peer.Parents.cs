using System.Buffers;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// The peer's parent links: attaching to a parent for some shards, applying the coordinator's
/// Moves (the later move of a shard wins), releasing a parent that serves nothing any more, and
/// what the peer's parts (<see cref="PeerIntake"/>, <see cref="ParentLossReporter"/>) see of
/// them through <see cref="IPeerParents"/>. The parent of each shard is kept under the peer's gate.
/// </summary>
public sealed partial class Peer
{
    /// <summary>When each shard's parent link was installed (a move or a join).</summary>
    private readonly long[] _parentSince = new long[Protocol.MaxShards];

    /// <summary>Makes <paramref name="link"/> the parent of <paramref name="shard"/>. Called under the gate.</summary>
    private void SetParent(int shard, Link link)
    {
        _parentOfShard[shard] = link;
        _parentSince[shard] = Time.GetTimestamp();
    }

    /// <summary>Connects to a parent and asks it for some shards from given sequence numbers.</summary>
    private async Task AttachAsync(string address, ulong parentId, ShardStart[] starts, byte[]? ticket, CancellationToken cancellationToken, long[]? generations = null)
    {
        // The coordinator as a parent is reached where this peer reached it when it joined: the
        // address in a Move is its listen address, which may be 0.0.0.0 or a name only it knows.
        if (parentId == 0) address = _coordinatorAddress;
        var link = NewLink(await ConnectWithinAsync(address, _options.ConnectTimeout, cancellationToken).ConfigureAwait(false), $"parent {parentId} ({address})");
        Welcome welcome;
        try
        {
            await link.WriteNowAsync(new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Attach, (ulong)Id, 0, starts, AdvertisedAddress, null, ticket).Write, cancellationToken).ConfigureAwait(false);
            welcome = await ReadWelcomeAsync(link, address, _options.HeartbeatTimeout, cancellationToken).ConfigureAwait(false);
            if (welcome.ShardCount != _shardCount) throw new ProtocolException($"{address} streams {welcome.ShardCount} shards, the coordinator said {_shardCount}");
        }
        catch
        {
            // An attach given up leaves no connection behind. Its parent may still read the hello
            // (its welcome was only late) and serve the link; nobody here reads it, so its queue
            // there grew with nothing taken, and that parent found this peer slow at 0.0 Mbit/s
            // (docs/resilience.md, "An attach given up").
            await link.DisposeAsync().ConfigureAwait(false);
            throw;
        }
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
            if (unwanted is null)
            {
                foreach (var s in starts) SetParent(s.Shard, link);
                // Registered with the link, under the same lock: a completion that sees the link sees its report.
                var report = link.Closed.ContinueWith(t => _lossReporter.OnParentClosed(link, parentId, t.Result), TaskScheduler.Default);
                report.Observe(Log, $"parent {parentId} link closed");
                _lossReports.RemoveAll(r => r.Report.IsCompleted);
                _lossReports.Add((link, report));
            }
            replaced = previous.GroupBy(x => x.Old!).Select(g => (g.Key, g.Select(x => x.Shard).ToArray())).ToList();
        }
        if (unwanted is not null)
        {
            await link.CloseAsync(GoodbyeCode.Normal, unwanted).ConfigureAwait(false);
            return;
        }
        MeasureRtt(link, welcome.Version);
        link.Start(OnParentFrame, NoteCutOff);
        if (superseded.Length > 0) link.Send(new Detach(superseded).Write);
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
            await foreach (var (move, from) in _moves.Reader.ReadAllAsync(Stopping).ConfigureAwait(false))
            {
                if (MoveTaken is { } hold) await hold().ConfigureAwait(false);
                long[] generations;
                lock (_gate)
                {
                    // A Move read on a control link that a rejoin replaced since is not taken in: the
                    // Welcome on the new link is later, and says where the plan has this peer now.
                    // After a rejoin as a new peer it was made for another session (its tickets
                    // name the old id, and a fill it asked for on the new link no Move there
                    // allowed: the coordinator cut the peer off for it). The rejoin sets _control
                    // before it bumps the generations under this lock, so a Move taken in here
                    // before it is superseded by it.
                    if (from != _control)
                    {
                        PeerLog.MoveFromReplacedControl(Log, string.Join(",", move.Shards.Select(e => e.Shard)));
                        continue;
                    }
                    foreach (var e in move.Shards)
                        if (e.Shard < _moveGeneration.Length) _moveGeneration[e.Shard]++;
                    generations = (long[])_moveGeneration.Clone();
                }
                MoveAsync(move, from, generations).Observe(Log, "applying a move");
            }
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }
    }

    /// <summary>Awaited for each Move taken from the queue, before it is taken in (tests hold a Move there).</summary>
    internal Func<Task>? MoveTaken { get; set; }

    private async Task MoveAsync(Move move, Link from, long[] generations)
    {
        if (_leaving || _reassembler!.IsComplete) return;
        ForgetPendingFills(move.Shards.Select(e => e.Shard));
        await Task.WhenAll(move.Shards.GroupBy(e => (e.Address, e.ParentId)).Select(async group =>
        {
            // A new parent that holds the shards only from a later chunk: the chunks before it come from the coordinator first (Peer.Fill.cs).
            var brokenOff = await FillBeforeAttachAsync(from, group.Select(e => e.Shard), group.Key.ParentId, group.Max(e => e.FromSeq), generations).ConfigureAwait(false);
            var starts = group.Where(e => !brokenOff.Contains(e.Shard)).Select(e => new ShardStart(e.Shard, (ulong)_reassembler!.NextSeqOf(e.Shard))).ToArray();
            if (starts.Length == 0) return;
            // Named as the join line names it, at the address AttachAsync connects to: a Move gives
            // the coordinator's listen address, which may be 0.0.0.0 ("to peer 0 (0.0.0.0:1234)" before).
            PeerLog.Moving(Log, string.Join(",", starts.Select(s => $"{s.Shard}@{s.FromSeq}")),
                group.Key.ParentId == 0 ? "coordinator" : $"peer {group.Key.ParentId}", group.Key.ParentId == 0 ? _coordinatorAddress : group.Key.Address);
            try
            {
                await AttachAsync(group.Key.Address, group.Key.ParentId, starts, group.First().Ticket, Stopping, generations).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException || !Stopping.IsCancellationRequested)
            {
                // Whatever went wrong, the coordinator hears of it (for the shards no later move took
                // over), on the link the Move came on: a later session has a Welcome of its own.
                PeerLog.AttachFailed(Log, group.Key.Address, e.Message);
                _lossReporter.AttachFailed(from, group.Key.ParentId, Current(starts, generations));
            }
        })).ConfigureAwait(false);
        // Reported on the control link the Move came on, never on a later one: the coordinator
        // counts the reports of each link against the Moves it sent there (PeerSession.SendMove),
        // and one that counted on the new link let a Move pass another still queued there. That
        // link gone, the rejoin's Welcome (later than this Move) has its own report.
        string shards = string.Join(",", move.Shards.Select(e => e.Shard));
        if (from == _control)
        {
            from.Send(new Attached((ulong)Id).Write);
            PeerLog.MoveApplied(Log, shards, "reported on the control link it came on");
        }
        else PeerLog.MoveApplied(Log, shards, "its control link was replaced since: not reported on the new one");
    }

    /// <summary>The shards of <paramref name="starts"/> that no move newer than <paramref name="generations"/> has taken over.</summary>
    private ShardStart[] Current(ShardStart[] starts, long[]? generations)
    {
        if (generations is null) return starts;
        lock (_gate) return starts.Where(s => s.Shard >= _moveGeneration.Length || _moveGeneration[s.Shard] == generations[s.Shard]).ToArray();
    }

    Reassembler IPeerParents.Reassembler => _reassembler!;

    StreamVerifier IPeerParents.Verifier => _verifier!;

    Relay IPeerParents.Relay => Relay!;

    bool IPeerParents.Leaving => _leaving;

    long IPeerParents.MoveGenerationOf(int shard)
    {
        lock (_gate) return shard < _moveGeneration.Length ? _moveGeneration[shard] : 0;
    }

    ushort IPeerParents.Version => _version;

    bool IPeerParents.IsParentOf(int shard, Link link)
    {
        lock (_gate) return _parentOfShard.TryGetValue(shard, out var current) && current == link;
    }

    (Link? Parent, long Since) IPeerParents.ParentOf(int shard)
    {
        lock (_gate) return (_parentOfShard.GetValueOrDefault(shard), _parentSince[shard]);
    }

    ShardStart[] IPeerParents.TakeShardsOf(Link link)
    {
        lock (_gate)
        {
            var lost = _parentOfShard.Where(kv => kv.Value == link).Select(kv => new ShardStart((byte)kv.Key, (ulong)_reassembler!.NextSeqOf(kv.Key))).ToArray();
            foreach (var s in lost) _parentOfShard.Remove(s.Shard);
            return lost;
        }
    }

    /// <summary>
    /// Parent links cut off for what they sent, with the shards each was the parent of when it
    /// sent it, under <c>_gate</c> until their close is handled. That runs on the thread pool,
    /// after the link closed, and a move may give those shards another parent first (the liar
    /// had the whole stream and left, and the coordinator moved this peer): the liar is still
    /// accused with them, so the coordinator can judge the accusation and refuse it.
    /// </summary>
    private readonly Dictionary<Link, ShardStart[]> _shardsWhenCutOff = [];

    /// <summary><paramref name="link"/> sent what cuts it off: notes the shards it is the parent of now (a parent link only; the control link's close is the coordinator's loss).</summary>
    private void NoteCutOff(Link link)
    {
        if (link.Role is not ParentRole) return;
        lock (_gate)
        {
            // Closed already (by the failure detector, or a close of this side): its report has
            // run, or runs without a note; a note now would never be taken.
            if (link.Closed.IsCompleted) return;
            var shards = _parentOfShard.Where(kv => kv.Value == link).Select(kv => new ShardStart((byte)kv.Key, (ulong)_reassembler!.NextSeqOf(kv.Key))).ToArray();
            if (shards.Length > 0) _shardsWhenCutOff.TryAdd(link, shards);
        }
    }

    ShardStart[] IPeerParents.TakeShardsWhenCutOff(Link link)
    {
        lock (_gate) return _shardsWhenCutOff.Remove(link, out var shards) ? shards : [];
    }

    ShardStart[] IPeerParents.WithoutParent(byte[] shards)
    {
        lock (_gate) return shards.Where(s => !_parentOfShard.ContainsKey(s)).Select(s => new ShardStart(s, (ulong)_reassembler!.NextSeqOf(s))).ToArray();
    }

    bool IPeerParents.IsCoordinator(Link link) => IsCoordinator(link);

    void IPeerParents.SendToCoordinator(Action<IBufferWriter<byte>> write) => _control?.Send(write);

    void IPeerParents.Fail(string reason) => _failed.TrySetResult(reason);

    void IPeerParents.Progress(int shard)
    {
        long now = Time.GetTimestamp();
        Volatile.Write(ref _lastProgress, now);
        Volatile.Write(ref _lastChunkAt[shard], now);
        Volatile.Write(ref _lastChunkWall[shard], now);
        Interlocked.Increment(ref _chunksOf[shard]);
    }
}

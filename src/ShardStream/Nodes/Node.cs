using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// What the coordinator and a peer share: the listener, the hello exchange (version negotiation),
/// serving attach requests from the replay window and live, and the heartbeat timer.
/// </summary>
public abstract partial class Node : IAsyncDisposable
{
    private readonly ConcurrentDictionary<Link, TickSlot> _links = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly HelloGate _helloGate;
    private IConnectionListener? _listener;
    private Task _acceptLoop = Task.CompletedTask;
    private Task _tickLoop = Task.CompletedTask;

    private protected Node(NodeOptions options, ITransport transport, ILogger log, TimeProvider time)
    {
        _helloGate = new HelloGate(options.MaxPendingHellos, options.MaxPendingHellosPerAddress);
        NodeOptionsBase = options;
        Transport = transport;
        Log = log;
        Time = time;
        _slowChildren = new SlowChildren(options.SlowChildAge, options.SlowChildGrace, options.HeartbeatInterval / 2, time);
        _droppedWaiters = new ThrottledCount(DropLogInterval, time, (count, reason) => HardeningLog.WaitersDropped(log, count, reason),
            log, "saying the connections dropped before their hello", _stopping.Token);
        _badHellos = new ThrottledCount(DropLogInterval, time, (count, last) => HardeningLog.BadHellosRefused(log, count, last),
            log, "saying the connections refused for a bad first frame", _stopping.Token);
        // The chunk hash's check at start runs here at the latest, before any chunk is signed or verified.
        if (Trust.ChunkHash.CheckFailure is { } failure) NodeLog.ChunkHashCheckFailed(log, failure);
    }

    private readonly SlowChildren _slowChildren;

    private protected NodeOptions NodeOptionsBase { get; }

    private protected ITransport Transport { get; }

    private protected ILogger Log { get; }

    private protected TimeProvider Time { get; }

    private protected CancellationToken Stopping => _stopping.Token;

    private readonly TaskCompletionSource _relayReady = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Relay? _relay;

    /// <summary>What the replay window holds now (see <see cref="Relay.WindowOf"/>); nothing before the shard count is known.</summary>
    internal (int Chunks, long Bytes, long Oldest, long Newest) WindowOf(int shard) => _relay?.WindowOf(shard) ?? (0, 0, -1, -1);

    /// <summary>The fan-out of this node; null until the shard count is known.</summary>
    private protected Relay? Relay
    {
        get => _relay;
        set
        {
            _relay = value;
            if (value is not null) _relayReady.TrySetResult();
        }
    }

    /// <summary>The bound listen address (with the real port), once started.</summary>
    public string ListenAddress => _listener?.LocalAddress ?? throw new InvalidOperationException("the node is not started");

    private protected async Task ListenAsync(CancellationToken cancellationToken)
    {
        _listener = await Transport.ListenAsync(NodeOptionsBase.ListenAddress, cancellationToken).ConfigureAwait(false);
        _acceptLoop = Task.Run(AcceptLoopAsync, CancellationToken.None);
        _tickLoop = Task.Run(TickLoopAsync, CancellationToken.None);
        _meter = ShardStreamMetrics.CreateNodeMeter(() => OverlayPeerCount, () => OverlayLatencyRebuilds, () => Relay?.Subscribers().Count ?? 0,
            () => Relay?.Subscribers().Sum(l => l.QueuedBytes) ?? 0,
            () => Relay is { } r ? r.Subscribers().Select(l => l.QueueAge.TotalSeconds).DefaultIfEmpty(0).Max() : 0,
            () => Relay?.WindowBytes ?? 0);
    }

    private System.Diagnostics.Metrics.Meter? _meter;

    /// <summary>For the <c>shardstream.peers</c> gauge: the coordinator's count of peers, nothing on a peer.</summary>
    private protected virtual IEnumerable<System.Diagnostics.Metrics.Measurement<long>> OverlayPeerCount => [];

    /// <summary>For the <c>shardstream.latency.rebuilds</c> counter: the coordinator's rebuilds by regions carried out, nothing on a peer.</summary>
    private protected virtual IEnumerable<System.Diagnostics.Metrics.Measurement<long>> OverlayLatencyRebuilds => [];

    private protected Link NewLink(IConnection connection, string name)
    {
        var link = new Link(connection, name, NodeOptionsBase.LinkOptions, Log, Time);
        var slot = new TickSlot(link);
        _links.TryAdd(link, slot);
        _newLinks.Enqueue(slot);
        link.HeartbeatShortened = Reschedule;
        _ = DisposeAfterCloseAsync(link);
        return link;
    }

    /// <summary>
    /// A link whose heartbeat interval became shorter (a control link whose other side asked for,
    /// or now keeps, more frequent heartbeats): its place in the tick schedule may be later than
    /// its next heartbeat or the earliest silence that ends it now. It gets a new slot, ticked at
    /// the next tick and scheduled from there; the old one is let go (it leaves the schedule when
    /// its time comes, empty). Any thread.
    /// </summary>
    private void Reschedule(Link link)
    {
        if (!_links.TryGetValue(link, out var old)) return;
        var slot = new TickSlot(link);
        // Closed meanwhile (DisposeAfterCloseAsync took it out), or rescheduled by another thread: nothing to do.
        if (!_links.TryUpdate(link, slot, old)) return;
        old.Link = null;
        _newLinks.Enqueue(slot);
    }

    /// <summary>
    /// Once a link is closed: forgets it and disposes it, on the thread pool. Cannot fail, so it is
    /// not observed: one state machine per link, where a continuation, its unwrapping and their
    /// observer held about 500 bytes per link for its life (docs/performance.md#the-coordinator-at-scale).
    /// </summary>
    private async Task DisposeAfterCloseAsync(Link link)
    {
        await ((Task)link.Closed).ConfigureAwait(ConfigureAwaitOptions.ForceYielding | ConfigureAwaitOptions.SuppressThrowing);
        // Its slot may wait in the tick schedule for up to a heartbeat interval: it lets go of the link now.
        if (_links.TryRemove(link, out var slot)) slot.Link = null;
        // Hands the connection's buffers back (for a parent link: its receive slabs).
        try
        {
            await link.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            NodeLog.DisposeFailed(Log, link.Name, e.Message);
        }
    }

    /// <summary>The longest pause after a failed accept (out of file descriptors, say) before the next try.</summary>
    private static readonly TimeSpan MaxAcceptBackoff = TimeSpan.FromSeconds(1);

    private async Task AcceptLoopAsync()
    {
        var backoff = TimeSpan.FromMilliseconds(10);
        while (!_stopping.IsCancellationRequested)
        {
            IConnection? connection;
            try
            {
                connection = await _listener!.AcceptAsync(_stopping.Token).ConfigureAwait(false);
                backoff = TimeSpan.FromMilliseconds(10);
            }
            catch (ConnectionFailedException e)
            {
                // EMFILE and the like pass when connections close: keep accepting after a pause
                // (which also keeps a full accept queue from spinning the loop).
                HardeningLog.AcceptFailed(Log, e.Message, backoff.TotalMilliseconds);
                try
                {
                    await Task.Delay(backoff, Time, _stopping.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxAcceptBackoff.Ticks));
                continue;
            }
            if (connection is null) return;
            Interlocked.Increment(ref _connectionsAccepted);
            long accepted = Time.GetTimestamp();
            // Near the open-file limit: what was accepted is taken, and no more until connections close.
            if (NodeOptionsBase.OpenFileLimit is { } limit && ProcessDescriptors.InUse >= limit - NodeOptionsBase.AcceptReserve)
                await WaitForDescriptorsAsync(limit).ConfigureAwait(false);
            // Into the gate in accept order, so that "the oldest waiting" means the oldest.
            var waiter = _helloGate.Enter(AddressShares.GroupOf(connection.RemoteAddress), () => connection.AbortWith(GateFullGoodbye));
            _ = HandleIncomingAsync(connection, waiter, accepted);
        }
    }

    /// <summary>
    /// What a connection dropped from the full hello gate is told before it is closed. Most such
    /// connections are honest joiners whose hello a loaded node has not read yet (or that a loaded
    /// joiner has not sent yet): told they are busy, they try again, as after any busy answer;
    /// reset, they failed (600 joiners at 400 a second to a coordinator limited to 400
    /// descriptors, at a load of 20 to 80: 32 to 496 of them, and the coordinator never got near
    /// the limit it tells joiners about). A flood's connection ignores it.
    /// </summary>
    private static readonly byte[] GateFullGoodbye = FrameWriting.ToArray(new Goodbye(GoodbyeCode.Busy,
        "busy: too many connections are waiting for their hello; try again in a moment").Write);

    /// <summary>
    /// Waits (polling, up to <see cref="MaxAcceptBackoff"/> apart) until this process's TCP
    /// connections are back below <paramref name="limit"/> less the reserve; logs once that it does.
    /// Connections that arrive meanwhile wait in the kernel's accept queue.
    /// </summary>
    private async Task WaitForDescriptorsAsync(int limit)
    {
        int most = limit - NodeOptionsBase.AcceptReserve;
        HardeningLog.AcceptPaused(Log, ProcessDescriptors.InUse, TcpTransport.OpenConnections, limit, NodeOptionsBase.AcceptReserve);
        var pause = TimeSpan.FromMilliseconds(10);
        while (ProcessDescriptors.InUse >= most && !_stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(pause, Time, _stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, MaxAcceptBackoff.Ticks));
        }
    }

    /// <summary>At least this many links silent at once, and half of them, make a node look stalled rather than its peers failed.</summary>
    private const int MinLinksForStall = 3;

    private bool _stalled;

    /// <summary>
    /// The stall rule, asked when a link seems dead: the started, open links among
    /// <paramref name="links"/> (counted into <paramref name="count"/>) that are silent at once
    /// (<see cref="Link.SilentAtOnce"/>: dead, or nearly; counted into <paramref name="silent"/>)
    /// are this node's own stall rather than their peers' failures when they are at least
    /// <see cref="MinLinksForStall"/> and at least half of them. Links that went quiet together do
    /// not all seem dead in one tick: each comes due when its own silence reaches the floor, and
    /// their last arrivals were up to a heartbeat interval apart, so counting only the links dead in
    /// the tick can find 2 of 6 in each of three ticks and close them all (a coordinator whose host
    /// is cut off, <c>PartitionNetnsTests</c>). A connection still waiting for its hello, or kept
    /// between a joiner's landmark rounds, has not started: only a started link can seem dead, so
    /// counting those too kept a coordinator in a join storm (up to 1,024 of them) from ever seeing
    /// its own stall.
    /// </summary>
    internal static bool SeemsStalled(IEnumerable<Link> links, out int silent, out int count)
    {
        count = 0;
        silent = 0;
        foreach (var link in links)
        {
            if (!link.IsStarted || link.IsClosing) continue;
            count++;
            if (link.SilentAtOnce) silent++;
        }
        return silent >= MinLinksForStall && silent * 2 >= count;
    }
    private bool _probePending;

    /// <summary>
    /// A link's place in the tick schedule: the schedule holds the slot, not the link, so that a
    /// closed link is let go at once (<see cref="DisposeAfterCloseAsync"/> clears it) even though
    /// its slot waits for its time to come round.
    /// </summary>
    private sealed class TickSlot(Link link)
    {
        public volatile Link? Link = link;
    }

    /// <summary>Links opened since the last tick (any thread adds): ticked at the next tick, then scheduled.</summary>
    private readonly ConcurrentQueue<TickSlot> _newLinks = new();

    /// <summary>
    /// The tick loop's schedule (its thread only): each link by the earliest time its tick could do
    /// anything (<see cref="Link.Tick"/>), so that a tick visits only the links due, not all of them.
    /// </summary>
    private readonly PriorityQueue<TickSlot, long> _tickSchedule = new();

    private async Task TickLoopAsync()
    {
        var period = NodeOptionsBase.HeartbeatInterval / 2;
        using var timer = new PeriodicTimer(period, Time);
        long last = Time.GetTimestamp();
        var due = new List<(TickSlot Slot, Link Link)>();
        try
        {
            while (await timer.WaitForNextTickAsync(_stopping.Token).ConfigureAwait(false))
            {
                // A tick a whole period late means this node did not run (a stalled process, a
                // suspended machine): what arrived meanwhile waits unread, so that time is no
                // silence of the other sides.
                long now = Time.GetTimestamp();
                var gap = Time.GetElapsedTime(last, now);
                last = now;
                var paused = gap - period >= period ? gap - period : TimeSpan.Zero;
                // The timer may fire on time while the thread pool, which runs every read and
                // write loop, is far behind (a saturated process: relay work queued ahead of socket
                // completions). A probe queued at the last tick that has still not run says so:
                // the whole gap is this node's delay, not its links' silence.
                if (Volatile.Read(ref _probePending)) paused = gap;
                else
                {
                    Volatile.Write(ref _probePending, true);
                    ThreadPool.UnsafeQueueUserWorkItem(static node => Volatile.Write(ref node._probePending, false), this, preferLocal: false);
                }
                if (paused > TimeSpan.Zero)
                {
                    FailureDetectorLog.NodePaused(Log, paused.TotalSeconds);
                    foreach (var (link, _) in _links) link.Excuse(paused);
                }
                // Only the links whose time has come: a link not due can neither be taken for dead
                // nor owe a heartbeat or a ping (Link.Tick says when it next can).
                while (_newLinks.TryDequeue(out var added)) _tickSchedule.Enqueue(added, now);
                due.Clear();
                while (_tickSchedule.TryPeek(out var slot, out long at) && at <= now)
                {
                    _tickSchedule.Dequeue();
                    if (slot.Link is { } link) due.Add((slot, link));
                }
                // Many peers rarely fail in the same moment; a node that stalled (a starved
                // process, its own network) sees all its links fall silent together. Then only
                // the longest silence closes a link; one silent link among live ones closes as usual.
                // Asked only when a link due now seems dead; then every link is looked at, as those
                // that went quiet with it come due a tick or two later (Link.SilentAtOnce).
                bool anyDead = false;
                foreach (var (_, link) in due)
                    if (link.SeemsDead)
                    {
                        anyDead = true;
                        break;
                    }
                int silent = 0, count = 0;
                bool stalled = anyDead && SeemsStalled(_links.Select(static l => l.Key), out silent, out count);
                if (stalled && !_stalled) FailureDetectorLog.MostLinksSilent(Log, silent, count, NodeOptionsBase.LinkOptions.FailureDetector.MaxSilence.TotalSeconds);
                _stalled = stalled;
                foreach (var (slot, link) in due)
                {
                    long next;
                    try
                    {
                        next = link.Tick(lenient: stalled || ShownAliveOtherwise(link));
                    }
                    catch (Exception e) when (!_stopping.IsCancellationRequested)
                    {
                        // One link's fault must not end heartbeats and failure detection for all
                        // the others: that link goes (its other side repairs as after any loss).
                        FailureDetectorLog.TickFailed(Log, link.Name, e.Message);
                        link.Abort($"its heartbeat tick failed: {e.Message}");
                        continue;
                    }
                    // Closing: it leaves the schedule. Still due (a silent link spared for now): the next tick.
                    if (next != long.MaxValue) _tickSchedule.Enqueue(slot, Math.Max(next, now + 1));
                }
                try
                {
                    CheckSlowChildren(heldUp: paused > TimeSpan.Zero);
                    CheckParents(paused);
                }
                catch (Exception e) when (!_stopping.IsCancellationRequested)
                {
                    FailureDetectorLog.SlowChildCheckFailed(Log, e.Message);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }
    }

    /// <summary>
    /// Whether something other than <paramref name="link"/>'s own traffic shows now that its other
    /// side is alive (a peer's control link while the stream keeps arriving from its parents): then
    /// only the longest silence (<see cref="FailureDetectorOptions.MaxSilence"/>) ends it.
    /// </summary>
    private protected virtual bool ShownAliveOtherwise(Link link) => false;

    /// <summary>Applies the slow-child policy to the links this node serves (see <see cref="SlowChildren"/>).</summary>
    private void CheckSlowChildren(bool heldUp)
    {
        if (Relay is not { } relay) return;
        foreach (var finding in _slowChildren.Check(relay.Subscribers(), heldUp))
        {
            if (finding.Verdict == SlowChildren.Verdict.Slow)
            {
                SlowChildLog.Slow(Log, finding.Link.Name, finding.QueueAge.TotalSeconds, finding.TookText, SlowChildAction(finding.Link));
                OnSlowChild(finding);
            }
            else if (CoordinatorDecides(finding.Link))
            {
                // Said before the decision (a stop, 906, or a report the coordinator then judges), which follows from it.
                SlowChildLog.StillSlow(Log, finding.Link.Name, NodeOptionsBase.SlowChildGrace.TotalSeconds, finding.QueueAge.TotalSeconds);
                OnSlowChild(finding);
            }
            else
            {
                SlowChildLog.Stopped(Log, finding.Link.Name, NodeOptionsBase.SlowChildGrace.TotalSeconds, finding.Reason);
                OnStoppingSlowChild(finding.Link, finding.Reason);
                finding.Link.CloseAsync(GoodbyeCode.TooSlow, finding.Reason).Observe(Log, $"{finding.Link.Name}: closing");
            }
        }
    }

    /// <summary>Checks that each parent of this node sends what the source made (a peer, <c>Peer.Head.cs</c>); at every tick, with how long this node did not run before it (zero: it ran).</summary>
    private protected virtual void CheckParents(TimeSpan paused)
    {
    }

    /// <summary>A child this node serves cannot keep up: demote it (the coordinator) or report it (a peer).</summary>
    private protected abstract void OnSlowChild(SlowChildren.Finding finding);

    /// <summary>
    /// What this node does about <paramref name="child"/>, found slow, as its line (event 900) ends:
    /// the coordinator judges its own children as it judges a peer's report, on a line of its own
    /// (a peer reports the child, see its override).
    /// </summary>
    private protected virtual string SlowChildAction(Link child) => "the coordinator decides";

    /// <summary>
    /// Whether the coordinator decides about <paramref name="child"/> when it is still slow
    /// <see cref="NodeOptions.SlowChildGrace"/> after it was found slow (it is this node, or is told
    /// with <see cref="OnSlowChild"/>); false to close the child here.
    /// </summary>
    private protected virtual bool CoordinatorDecides(Link child) => false;

    /// <summary>A child this node serves is about to be closed as too slow, with <paramref name="reason"/>.</summary>
    private protected virtual void OnStoppingSlowChild(Link child, string reason)
    {
    }

    private async Task HandleIncomingAsync(IConnection connection, HelloGate.Waiter waiter, long accepted)
    {
        // On the thread pool, as Task.Run would; the accept loop goes on at once.
        await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
        // Observed here, not by a continuation: what Background.Run held per connection for its
        // life (its task, a continuation and the string naming it) is not needed.
        try
        {
            var link = NewLink(connection, $"incoming {connection.RemoteAddress}");
            if (await ReadHelloAsync(link, waiter, NodeOptionsBase.HelloTimeout, accepted).ConfigureAwait(false) is not { } hello) return;

            try
            {
                if (hello.Role == HelloRole.Attach) await ServeAttachAsync(link, hello).ConfigureAwait(false);
                else if (hello.Role == HelloRole.Probe) await AnswerProbeAsync(link, hello).ConfigureAwait(false);
                else await OnJoinAsync(link, hello).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException
                                       // Closed meanwhile (a peer that began a new run closes every link): its writer is done.
                                       || (e is InvalidOperationException && link.IsClosing))
            {
                link.Abort(e.Message);
            }
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
        catch (Exception e)
        {
            HardeningLog.BackgroundTaskFailed(Log, $"connection from {connection.RemoteAddress}", e);
        }
    }

    /// <summary>
    /// Reads <paramref name="link"/>'s hello within <paramref name="within"/>, while the link waits
    /// in the hello gate as <paramref name="waiter"/> (disposed here). Null when none came: the link
    /// is then closed (silently for silence, a drop or a reset; with Goodbye(ProtocolError) for a
    /// malformed or wrong first frame, Goodbye(VersionMismatch) for no version in common).
    /// </summary>
    private async Task<Hello?> ReadHelloAsync(Link link, HelloGate.Waiter waiter, TimeSpan within, long accepted)
    {
        Hello hello;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token, waiter.Token);
            using var deadline = HelloDeadline(link, timeout, within);
            if (HelloReadHeld is { } held) await held(timeout.Token).ConfigureAwait(false);
            var (type, body) = await link.ReadOneAsync(timeout.Token, Hello.MaxFrameLength).ConfigureAwait(false);
            if (type != FrameType.Hello) throw new ProtocolException($"expected a hello frame first, got {type}");
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
            if (!Hello.TryRead(ref reader, out hello)) throw new ProtocolException(HelloChecks.WhyMalformed(new ReadOnlySequence<byte>(body)));
            // The coordinator hands this address on to later joiners: it must be one.
            if (HelloChecks.AddressProblem(hello.ListenAddress) is { } problem) throw new ProtocolException(problem);
            link.HelloAt = Time.GetTimestamp();
            // A kept connection's next hello (accepted 0): its join's time at the coordinator starts here.
            link.AcceptedAt = accepted != 0 ? accepted : link.HelloAt;
        }
        catch (ProtocolException e)
        {
            // Any stranger can send garbage, again and again: counted in one line per 10 s, not a line each.
            _badHellos.Note($"{link.Name}: {e.Message}");
            HardeningLog.NoHello(Log, link.Name, e.Message);
            await RefuseAsync(link, GoodbyeCode.ProtocolError, e.Message, warn: false).ConfigureAwait(false);
            return null;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            // Stopping cancels the wait (and closes the connection) too: that is no silence of the other side.
            string reason = waiter.DroppedBecause is { } dropped ? $"dropped: {dropped}"
                : _stopping.IsCancellationRequested ? "this node is stopping"
                : e is OperationCanceledException ? $"no hello within {within.TotalSeconds:0.#} s" : e.Message;
            if (waiter.DroppedBecause is not null) _droppedWaiters.Note(reason);
            HardeningLog.NoHello(Log, link.Name, reason);
            link.Abort("no hello");
            await link.DisposeAsync().ConfigureAwait(false);
            return null;
        }
        finally
        {
            // Waiting is over (hello or not): the slot is free for the next connection.
            waiter.Dispose();
        }

        if (hello.MaxVersion < Protocol.MinVersion || hello.MinVersion > Protocol.Version)
        {
            await RefuseAsync(link, GoodbyeCode.VersionMismatch,
                $"no protocol version in common: this node speaks {Protocol.MinVersion}..{Protocol.Version}, the other side {hello.MinVersion}..{hello.MaxVersion}").ConfigureAwait(false);
            return null;
        }
        return hello;
    }

    /// <summary>
    /// Cancels <paramref name="timeout"/> <paramref name="within"/> from now, unless bytes from
    /// the other side wait unread in the socket then: the hello came in time, and this node was too
    /// busy to read it (a starved process). Closing then reset a joiner that had done everything
    /// right (ci214: 52 of 600 swarm joins at load 35-98, "Connection reset by peer"); so once it
    /// waits <paramref name="within"/> more. A trickler's bytes are read as they come, and so wait
    /// unread only at a node that is itself late: it gains that one wait at most.
    /// </summary>
    private ITimer HelloDeadline(Link link, CancellationTokenSource timeout, TimeSpan within)
    {
        bool extended = false;
        ITimer? timer = null;
        // Real time, as the CancelAfter it replaced: a test's fake clock does not hold connections open.
        timer = TimeProvider.System.CreateTimer(_ =>
        {
            if (!extended && link.HasUnreadInput)
            {
                extended = true;
                HardeningLog.HelloUnreadAtDeadline(Log, link.Name, within.TotalSeconds);
                timer!.Change(within, Timeout.InfiniteTimeSpan);
                return;
            }
            try
            {
                timeout.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // The read ended meanwhile.
            }
        }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        timer.Change(within, Timeout.InfiniteTimeSpan);
        return timer;
    }

    /// <summary>
    /// For tests: awaited before a hello is read, with the read's deadline token (a node too busy
    /// to read what has arrived; it returns once it has held the read long enough).
    /// </summary>
    internal Func<CancellationToken, Task>? HelloReadHeld { get; set; }

    /// <summary>
    /// Reads the next hello on a connection that has had one answered and stays open (a joiner's
    /// landmark rounds on one connection, version 10), within <paramref name="within"/>. It waits in
    /// the hello gate as a new connection would, so it counts against the same bounds and is dropped
    /// to make room like one; null when no hello came (the link is then closed).
    /// </summary>
    private protected Task<Hello?> ReadNextHelloAsync(Link link, TimeSpan within)
    {
        var waiter = _helloGate.Enter(AddressShares.GroupOf(link.RemoteAddress), () => link.Abort("dropped from the hello gate"));
        return ReadHelloAsync(link, waiter, within, accepted: 0);
    }

    /// <summary>Connections waiting for their hello now (accepted ones, and kept ones between a joiner's rounds).</summary>
    internal int PendingHellos => _helloGate.Count;

    private long _connectionsAccepted;

    /// <summary>Connections this node has accepted so far.</summary>
    internal long ConnectionsAccepted => Interlocked.Read(ref _connectionsAccepted);

    /// <summary>
    /// Connections dropped by the hello gate, said at most every 10 s (event 9104): a flood must
    /// not flood the log, and one that came in one burst is said with its count, not as its first drop.
    /// </summary>
    private readonly ThrottledCount _droppedWaiters;

    /// <summary>Connections refused for a first frame that is no hello (garbage, too long, malformed), said at most every 10 s (event 9106).</summary>
    private readonly ThrottledCount _badHellos;

    /// <summary>The least time between two lines of event 9104 (and 9106).</summary>
    private static readonly TimeSpan DropLogInterval = TimeSpan.FromSeconds(10);

    private protected Task RefuseAsync(Link link, GoodbyeCode code, string reason, bool warn = true) => RefuseAsync(link, new Goodbye(code, reason), warn);

    /// <summary>Says <paramref name="goodbye"/> (logged as a refusal when <paramref name="warn"/>) and closes.</summary>
    private protected async Task RefuseAsync(Link link, Goodbye goodbye, bool warn)
    {
        if (warn) NodeLog.Refused(Log, link.Name, goodbye.Reason);
        try
        {
            await link.WriteNowAsync(goodbye.Write, _stopping.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or InvalidOperationException)
        {
            // It is gone already; the refusal is logged.
        }
        await link.ShutdownAsync(goodbye.Reason).ConfigureAwait(false);
        await link.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// The join token this node sent in its Join (a peer that is joining or joined), 0 otherwise. A
    /// reachability probe is answered with a proof of it (<see cref="ProbeProof"/>), never with the
    /// token itself: whoever knows it joins again in this peer's place (docs/security.md).
    /// </summary>
    private protected virtual ulong JoinToken => 0;

    /// <summary>
    /// The coordinator checks that this node accepts connections: say who we are, and close. At
    /// version 16 (<see cref="Protocol.ProbeProofVersion"/>) with the proof of this node's join
    /// token over the probe's nonce; to a probe with no nonce (a joiner measuring its RTT) and to
    /// an older prober (an older coordinator, or an older joiner measuring its RTT) with none: a
    /// Welcome whose peer id is 0, which an older coordinator takes for another node's answer (this
    /// peer is then its leaf).
    /// </summary>
    private async Task AnswerProbeAsync(Link link, Hello hello)
    {
        NodeLog.AnsweringProbe(Log, link.Name);
        var answer = ProbeProof.Answer(hello, JoinToken, (byte)Math.Max(1, ShardCount));
        await link.WriteNowAsync(answer.Write, _stopping.Token).ConfigureAwait(false);
        await link.ShutdownAsync("probe answered").ConfigureAwait(false);
        await link.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>A new peer asks where to go.</summary>
    private protected abstract Task OnJoinAsync(Link link, Hello hello);

    /// <summary>A frame from a child (anything after its hello).</summary>
    private protected virtual void OnChildFrame(Link link, FrameType type, ReadOnlySequence<byte> body)
    {
        switch (type)
        {
            case FrameType.Goodbye or FrameType.Heartbeat:
                return;
            case FrameType.Detach:
                HandleDetach(link, body);
                return;
            default:
                throw new ProtocolException($"unexpected {type} frame from a child");
        }
    }

    /// <summary>A child moved some shards to another parent: stop sending them.</summary>
    private protected void HandleDetach(Link link, ReadOnlySequence<byte> body)
    {
        var reader = new SequenceReader<byte>(body);
        if (!Detach.TryRead(ref reader, out var detach)) throw new ProtocolException("malformed detach frame");
        foreach (byte shard in detach.Shards)
            if (shard < ShardCount) Relay?.Unsubscribe(link, shard);
        NodeLog.Detached(Log, link.Name, string.Join(",", detach.Shards));
    }

    /// <summary>Per shard, the ids of the children this node sends it to now (the real connections).</summary>
    internal int[][] ChildIds()
    {
        var relay = Relay;
        return Enumerable.Range(0, ShardCount)
            .Select(s => relay is null ? [] : relay.SubscribersOf(s).Select(ChildIdOf).Order().ToArray())
            .ToArray();
    }

    private protected virtual int ChildIdOf(Link link) => link.Role is ChildRole child ? child.PeerId : -1;

    /// <summary>Every link on which this node serves peer <paramref name="peerId"/> as a child (its attaches).</summary>
    private protected List<Link> ChildLinksOf(int peerId) => [.. _links.Keys.Where(l => l.Role is ChildRole child && child.PeerId == peerId)];

    /// <summary>Serves the shards a child asks for, from the sequence numbers it asks for.</summary>
    private async Task ServeAttachAsync(Link link, Hello hello)
    {
        // A peer can be chosen as a parent the moment it joins, before its own welcome is processed.
        try
        {
            await _relayReady.Task.WaitAsync(NodeOptionsBase.HeartbeatTimeout, Stopping).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            await RefuseAsync(link, GoodbyeCode.Refused, "this node is not streaming yet").ConfigureAwait(false);
            return;
        }
        var relay = Relay!;
        int shardCount = ShardCount;
        foreach (var s in hello.Shards)
            if (s.Shard >= shardCount)
            {
                await RefuseAsync(link, GoodbyeCode.Refused, $"shard {s.Shard} does not exist (the stream has {shardCount})").ConfigureAwait(false);
                return;
            }
        if (Admit(hello) is { } refusal)
        {
            await RefuseAsync(link, GoodbyeCode.Refused, refusal).ConfigureAwait(false);
            return;
        }

        // Where other nodes reach it (a listener on 0.0.0.0 or [::] at the address its connection came from), not its "0.0.0.0:1235".
        link.Name = $"child {hello.PeerId} ({Endpoint.Advertised(hello.ListenAddress, link.RemoteAddress)})";
        link.Role = new ChildRole((int)hello.PeerId);
        var entries = hello.Shards.Select(s => new ShardAssignment(s.Shard, AssignmentKind.Served, 0, s.FromSeq, "")).ToArray();
        await link.WriteNowAsync(new Welcome(Protocol.Negotiate(hello), hello.PeerId, (byte)shardCount, 0, 0, entries).Write, Stopping).ConfigureAwait(false);
        MeasureRtt(link, Protocol.Negotiate(hello));
        link.Start(OnChildFrame);
        foreach (var s in hello.Shards)
        {
            long first = relay.Subscribe(link, s.Shard, (long)s.FromSeq);
            if (first > Chunk.FirstOfShardFrom(s.Shard, (long)s.FromSeq, shardCount))
            {
                var (chunks, bytes, oldest, newest) = relay.WindowOf(s.Shard);
                NodeLog.ServingLater(Log, link.Name, s.Shard, (long)s.FromSeq, first, chunks, oldest, newest, bytes);
            }
        }
        link.Closed.ContinueWith(_ => relay.Unsubscribe(link), TaskScheduler.Default).Observe(Log, $"{link.Name}: unsubscribing");
        NodeLog.Serving(Log, link.Name, string.Join(",", hello.Shards.Select(s => $"{s.Shard}@{s.FromSeq}")));
    }

    private readonly Trust.TicketBook _tickets = new();

    /// <summary>The stream's key and run, once known: admission tickets are checked against them.</summary>
    private protected abstract Trust.StreamRun? AdmissionRun { get; }

    /// <summary>This node's id in the overlay (0 = the coordinator), as tickets name it.</summary>
    private protected abstract ulong NodeId { get; }

    /// <summary>
    /// Serves an attach only to a child the coordinator placed here, for the shards placed, once:
    /// the hello must carry a ticket signed with the stream's key that names this node, that
    /// child and every shard asked for, and that was not used before. Null when admitted, else why not.
    /// </summary>
    private string? Admit(Hello hello)
    {
        ushort asked = 0;
        foreach (var s in hello.Shards)
        {
            if ((asked & (1 << s.Shard)) != 0) return $"shard {s.Shard} asked more than once";
            asked |= (ushort)(1 << s.Shard);
        }
        if (AdmissionRun is not { } run) return "this node does not know the stream's key yet";
        if (Trust.AdmissionTicket.Verify(run, hello.Ticket, out string reason) is not { } ticket) return reason;
        if (ticket.ParentId != NodeId) return $"the admission ticket is for node {ticket.ParentId}, this is node {NodeId}";
        if (ticket.ChildId != hello.PeerId) return $"the admission ticket is for peer {ticket.ChildId}, not peer {hello.PeerId}";
        if ((asked & ~ticket.ShardMask) != 0) return $"the admission ticket does not cover every shard asked for ({string.Join(",", hello.Shards.Select(s => s.Shard))})";
        if (DroppedChild(hello.PeerId) is { } dropped) return dropped;
        if (!_tickets.TryUse(run.Id, ticket.Serial)) return "this admission ticket was used already";
        return null;
    }

    /// <summary>
    /// Why a child with <paramref name="peerId"/> is not served here although its ticket is good:
    /// the coordinator took it out of the overlay (a peer told DropChild), and a ticket it was given
    /// before must not attach it again; null to serve it.
    /// </summary>
    private protected virtual string? DroppedChild(ulong peerId) => null;

    /// <summary>K, once known.</summary>
    private protected abstract int ShardCount { get; }

    /// <summary>
    /// Waits until every child link has closed (children close after the end), or the drain
    /// timeout. A child that attaches meanwhile (a repair after the end may place one here: this
    /// node is still in the plan until it says goodbye) is waited for too.
    /// </summary>
    private protected async Task DrainChildrenAsync(CancellationToken cancellationToken)
    {
        var relay = Relay;
        if (relay is null) return;
        long since = Time.GetTimestamp();
        while (true)
        {
            var children = relay.Subscribers();
            if (children.Count == 0) return;
            var left = NodeOptionsBase.DrainTimeout - Time.GetElapsedTime(since);
            if (left > TimeSpan.Zero)
                await Task.WhenAny(Task.WhenAll(children.Select(c => c.Closed)), Task.Delay(left, Time, cancellationToken)).ConfigureAwait(false);
            var open = children.Where(c => !c.Closed.IsCompleted).Select(c => c.Name).ToList();
            if (open.Count == 0) continue;
            NodeLog.ChildrenStillOpen(Log, open.Count, string.Join(", ", open));
            return;
        }
    }

    /// <summary>Ends every link at once.</summary>
    private protected void CloseAllLinks(string reason, Link? except = null)
    {
        foreach (var link in _links.Keys)
            if (link != except) link.Abort(reason);
    }

    /// <summary>Stops listening and ends every link.</summary>
    public virtual async ValueTask DisposeAsync()
    {
        if (_stopping.IsCancellationRequested) return;
        _stopping.Cancel();
        _meter?.Dispose();
        if (_listener is not null) await _listener.DisposeAsync().ConfigureAwait(false);
        foreach (var link in _links.Keys) await link.DisposeAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll(_acceptLoop, _tickLoop).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }
        Relay?.Clear();
        GC.SuppressFinalize(this);
    }
}

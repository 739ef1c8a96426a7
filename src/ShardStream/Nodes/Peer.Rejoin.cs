using Microsoft.Extensions.Logging;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Rejoining (docs/protocol.md, section 6, "Rejoining"; docs/resilience.md): a peer that loses its
/// control link (it timed out or broke, or the coordinator evicted the peer, or went away) joins
/// again by itself, with backoff and jitter, for <see cref="PeerOptions.RejoinFor"/>, sending the
/// token of its first Join and its own next chunk of every shard. Its parent and child links go on
/// meanwhile: data keeps flowing while only the control link is down.
/// </summary>
public sealed partial class Peer
{
    /// <summary>How a Welcome places this peer.</summary>
    private enum Rejoin
    {
        /// <summary>The first join.</summary>
        First,

        /// <summary>The coordinator still listed this peer: same id and place, only the control link is new.</summary>
        InPlace,

        /// <summary>A new id in the same run: the old links are dropped, every shard resumes at this peer's next chunk.</summary>
        Resume,

        /// <summary>The coordinator did not take up this peer's position (a restarted coordinator): a new run, written after the old one.</summary>
        NewRun,
    }

    /// <summary>First wait between two attempts to join again (doubling up to <see cref="MaxRejoinBackoff"/>), each times a jitter of 0.5 to 1.5.</summary>
    private static readonly TimeSpan FirstRejoinBackoff = TimeSpan.FromMilliseconds(500);

    /// <summary>Longest wait between two attempts to join again.</summary>
    private static readonly TimeSpan MaxRejoinBackoff = TimeSpan.FromSeconds(8);

    /// <summary>One rejoin at a time (a new control link may break while the last rejoin still attaches).</summary>
    private readonly SemaphoreSlim _rejoining = new(1, 1);

    /// <summary>Bytes lost in earlier runs (before a restarted coordinator's new run).</summary>
    private long _lostBefore;

    /// <summary>Where this peer was (next chunk, its offset) when it sent its last rejoin.</summary>
    private (long Seq, long Offset) _resumedFrom;

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    /// <summary>The coordinator stopped this peer as too slow: its words, and what this peer's download carried at best lately (its parents cannot tell, see <see cref="IntakeMeter"/>).</summary>
    private void StoppedAsTooSlow(string why) => _failed.TrySetResult(why + _intakeMeter.Said());

    /// <summary>When the last new chunk arrived from a parent (a timestamp of <see cref="Node.Time"/>).</summary>
    private long _lastProgress;

    /// <summary>
    /// The stream still arrives from the parents: the coordinator that placed them is alive and so
    /// is this peer's place, even when the control link is silent (the coordinator's sends are late
    /// on a loaded machine). Data progress is liveness: the control link is then ended only by the
    /// longest silence, or by a reset.
    /// </summary>
    private protected override bool ShownAliveOtherwise(Link link) =>
        link == _control && Time.GetElapsedTime(Volatile.Read(ref _lastProgress)) < _options.HeartbeatTimeout;

    /// <summary>A reassembler and a relay for the run a Welcome starts (the first join, or a restarted coordinator's new run).</summary>
    private void StartRun(Welcome welcome)
    {
        var reassembler = new Reassembler(_shardCount, (long)welcome.StartSeq, (long)welcome.StartOffset)
        {
            GapFound = gap =>
            {
                ShardStreamMetrics.Gaps.Add(1);
                ShardStreamMetrics.Lost.Add(gap.Length);
                PeerLog.BytesLost(Log,
                    gap.FromOffset, gap.ToOffset, gap.Length, gap.FromSeq, gap.ToSeq - 1, gap.ToOffset);
            },
        };
        lock (_intake.ReadyGate)
        {
            if (_reassembler is { } old)
            {
                _lostBefore += old.LostBytes;
                old.Clear();
            }
            _reassembler = reassembler;
        }
        var previous = Relay;
        Relay = new Relay(_shardCount, _options.ReplayWindowBytes, _options.ReplayWindowAge, Time);
        previous?.Retire("this node started the coordinator's new run");
    }

    /// <summary>
    /// Decides how a rejoin's Welcome places this peer, and drops what does not go on: every old
    /// link but <paramref name="control"/> unless the peer keeps its place; and for a new run, the
    /// old run's reassembler, relay windows and hash lists.
    /// </summary>
    private Rejoin PrepareRejoin(Link control, string address, Welcome welcome, ShardStart[] resume)
    {
        if (welcome.ShardCount != _shardCount)
            throw new ProtocolException($"{address} now streams {welcome.ShardCount} shards, it streamed {_shardCount}");
        // The coordinator takes up this peer's position when each assignment echoes the next chunk
        // asked for, and its head (Welcome start) can follow from there: the same chunk at the same
        // offset, or later by at least one byte and at most one full chunk per chunk.
        bool echoed = resume.Length == _shardCount && welcome.Shards.Length == _shardCount
            && welcome.Shards.All(e => resume.Any(r => r.Shard == e.Shard && r.FromSeq == e.FromSeq));
        var (seq, offset) = _resumedFrom;
        long head = (long)welcome.StartSeq, headOffset = (long)welcome.StartOffset;
        // The run id settles it (version 9): a restarted coordinator draws a new one, whatever it echoes.
        bool sameRunId = welcome.RunId is { } runId && runId.AsSpan().SequenceEqual(_verifier!.Run.Id);
        bool sameRun = sameRunId && echoed && head >= seq && (head == seq
            ? headOffset == offset
            : headOffset - offset >= head - seq && headOffset - offset <= (head - seq) * Protocol.MaxChunkLength);
        if (sameRun && welcome.PeerId == (ulong)Id) return Rejoin.InPlace;

        // A new place: the old parents and children are someone else's now (the coordinator moved them).
        CloseAllLinks(sameRun ? "joined the overlay again as a new peer" : "the coordinator started a new run", except: control);
        lock (_gate) _parentOfShard.Clear();
        if (sameRun) return Rejoin.Resume;

        long written = Interlocked.Read(ref _bytesWritten);
        RejoinLog.NewRun(Log, address, offset, written, (long)welcome.StartOffset);
        // Everything of the old run (hash lists held, and whatever an old parent still sends) fails against the new run's id.
        _verifier = new Trust.StreamVerifier(new Trust.StreamRun(_verifier!.Key, welcome.RunId!), _shardCount);
        // Ids count from 1 again in the new run: the children the old run dropped are not its children.
        ForgetDroppedChildren();
        StartRun(welcome);
        return Rejoin.NewRun;
    }

    /// <summary>Whether this peer still receives the shard of <paramref name="entry"/> from the parent it names.</summary>
    private bool HasParent(ShardAssignment entry)
    {
        lock (_gate)
            return _parentOfShard.TryGetValue(entry.Shard, out var link) && !link.IsClosing && ParentIdOf(link) == (int)entry.ParentId;
    }

    private int _rejoins;

    /// <summary>How many times this peer has joined again after losing the coordinator.</summary>
    public int Rejoins => Volatile.Read(ref _rejoins);

    private void LogJoined(Rejoin how, Welcome welcome)
    {
        if (how != Rejoin.First) Interlocked.Increment(ref _rejoins);
        string parents = string.Join(", ", welcome.Shards.Select(e => $"shard {e.Shard} from {(e.Kind == AssignmentKind.Served ? "coordinator" : $"peer {e.ParentId} {e.Address}")}"));
        if (how == Rejoin.First) PeerLog.Joined(Log, Id, StartOffset, _shardCount, parents);
        else RejoinLog.Joined(Log, how == Rejoin.InPlace ? "in the same place" : how == Rejoin.Resume ? "as a new peer" : "into the new run", Id, _reassembler!.NextOffset, parents);
    }

    private void OnControlClosed(Link control, CloseReason closed)
    {
        string reason = closed.Text;
        if (_reassembler!.IsComplete || Stopping.IsCancellationRequested || _leaving || control != _control) return;
        // The coordinator as this peer's parent stopped it for being slower than the stream.
        if (control.ReceivedGoodbye == GoodbyeCode.TooSlow && control.ReceivedGoodbyeReason is { Length: > 0 } why) StoppedAsTooSlow(why);
        if (_failed.Task.IsCompleted) return;
        // The coordinator stopped after the end of the stream with this peer still behind: there is
        // nothing to join again. What its peer parents still send is taken, then it stops.
        if (control.ReceivedGoodbye == GoodbyeCode.ShuttingDown && control.ReceivedGoodbyeReason is { } ended)
        {
            Background.Run(() => FinishFromParentsAsync(control, ended), Log, "taking the rest from its parents");
            return;
        }
        // Not joining again (--rejoin-seconds 0) ends the peer, unless a rejoin it waits behind
        // replaced the link (RejoinAsync says which).
        if (_options.RejoinFor > TimeSpan.Zero && control.ReceivedGoodbye is { } code && control.ReceivedGoodbyeReason is { } said) reason = $"{said} ({code})";
        Background.Run(() => RejoinAsync(reason, control), Log, "joining again");
    }

    /// <summary>
    /// A report of a lost parent that no Move answered (<see cref="ParentLossReporter.Unanswered"/>):
    /// this peer joins again in its place while its control link stays open, at most
    /// <see cref="ParentLossReporter.MaxUnansweredRejoins"/> times within
    /// <see cref="ParentLossReporter.UnansweredPeriod"/>. The Welcome says where the plan has each
    /// shard, and a shard with no parent is attached there from this peer's next chunk (a report
    /// about that attach, if it fails, is answered as any). Nothing is counted against a parent or
    /// excused for it. Not while another rejoin is under way (its Welcome places every shard too):
    /// the reports are not looked at then, so no rejoin is spent and nothing is said; a rejoin that
    /// fails leaves the control link as it was.
    /// </summary>
    private void JoinAgainIfUnanswered()
    {
        if (_control is not { IsClosing: false } || _leaving || !_rejoining.Wait(0)) return;
        bool started = false;
        try
        {
            if (_lossReporter.Unanswered() is not { } unanswered) return;
            RejoinLog.Unanswered(Log, unanswered.Parent, string.Join(",", unanswered.Shards), unanswered.Waited.TotalSeconds);
            Background.Run(async () =>
            {
                try
                {
                    if (await TryJoinAgainAsync().ConfigureAwait(false) is { } failed)
                        RejoinLog.AttemptFailed(Log, 1, failed, _lossReporter.UnansweredAfter.TotalSeconds);
                }
                finally
                {
                    _rejoining.Release();
                }
            }, Log, "joining again for an unanswered report");
            started = true;
        }
        finally
        {
            if (!started) _rejoining.Release();
        }
    }

    /// <summary>
    /// One attempt to join again via the coordinator, resuming each shard at this peer's next
    /// chunk. Returns why it failed when another attempt may do better, else null: joined, stopped,
    /// or stopped by the coordinator as too slow (its goodbye lost), which is said here.
    /// </summary>
    private async Task<string?> TryJoinAgainAsync()
    {
        try
        {
            await JoinViaAsync(_coordinatorAddress, ResumePoints(), Stopping).ConfigureAwait(false);
            return null;
        }
        catch (Exception e) when (e is ConnectionFailedException or CoordinatorBusyException or JoinTokenTakenException or ProtocolException or IOException or System.Net.Sockets.SocketException)
        {
            return e.Message;
        }
        catch (StreamInterruptedException e)
        {
            StoppedAsTooSlow(e.Message);
            return null;
        }
        catch (CoordinatorStoppedException e)
        {
            // The run is over (a control link that broke as the stream ended, its rejoin after the
            // coordinator's drain): as after a Goodbye(ShuttingDown) on the control link, what its
            // peer parents still send is taken, then it stops with the coordinator's words.
            // Refused as any join, it tried again for its whole rejoin time.
            await FinishFromParentsAsync(_control!, e.Message).ConfigureAwait(false);
            return null;
        }
        catch (OperationCanceledException)
        {
            return null;
        }
    }

    /// <summary>This peer's next chunk of every shard, for a rejoin's Join; notes where it was (<see cref="_resumedFrom"/>).</summary>
    private ShardStart[] ResumePoints()
    {
        lock (_intake.ReadyGate)
        {
            _resumedFrom = (_reassembler!.NextSeq, _reassembler.NextOffset);
            return Enumerable.Range(0, _shardCount).Select(s => new ShardStart((byte)s, (ulong)_reassembler.NextSeqOf(s))).ToArray();
        }
    }

    /// <summary>1 once this peer learned that the coordinator's run is over (<see cref="FinishFromParentsAsync"/>).</summary>
    private int _finishingFromParents;

    /// <summary>How often a peer whose coordinator stopped looks whether its parents still serve it.</summary>
    private static readonly TimeSpan StoppedPoll = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// The coordinator stopped (Goodbye(ShuttingDown) on the control link, after the end of the
    /// stream): no joining again. This peer takes what its peer parents still send, while one of
    /// them is connected and something arrived within the heartbeat timeout, then stops with the
    /// coordinator's words and the offset it wrote up to (or completes, when the End came that way).
    /// </summary>
    private async Task FinishFromParentsAsync(Link control, string said)
    {
        // Once: the control link's goodbye and a rejoin's answer may both say so.
        if (Interlocked.Exchange(ref _finishingFromParents, 1) != 0) return;
        RejoinLog.CoordinatorStopped(Log, said, _reassembler!.NextOffset);
        long since = Time.GetTimestamp();
        while (!Stopping.IsCancellationRequested && !_leaving && !_reassembler.IsComplete)
        {
            bool parents;
            lock (_gate) parents = _parentOfShard.Values.Any(l => l != control && !l.IsClosing);
            since = Math.Max(since, Volatile.Read(ref _lastProgress));
            if (!parents || Time.GetElapsedTime(since) > _options.HeartbeatTimeout) break;
            try
            {
                await Task.Delay(StoppedPoll, Time, Stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
        if (!Stopping.IsCancellationRequested && !_leaving && !_reassembler.IsComplete)
            _failed.TrySetResult($"the coordinator stopped before the whole stream reached this peer ({said}); this peer wrote it up to offset {_reassembler.NextOffset}{MissingFills()}");
    }

    /// <summary>
    /// Joins again, resuming each shard at this peer's next chunk, with backoff, for
    /// <see cref="PeerOptions.RejoinFor"/>; then stops with the reason. Its links stay up meanwhile.
    /// Nothing when <paramref name="lost"/> was replaced by a rejoin it waited behind; with no
    /// rejoin time, stops at once otherwise.
    /// </summary>
    private async Task RejoinAsync(string reason, Link lost)
    {
        try
        {
            await _rejoining.WaitAsync(Stopping).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        try
        {
            // A rejoin it waited for replaced that link (one for an unanswered report: the
            // coordinator aborts the old link, whose close may be read before the Welcome).
            if (lost != _control) return;
            if (_options.RejoinFor <= TimeSpan.Zero)
            {
                _failed.TrySetResult($"lost the coordinator before the end of the stream: {reason}");
                return;
            }
            RejoinLog.Lost(Log, reason, _reassembler!.NextOffset, _options.RejoinFor.TotalSeconds);
            long since = Time.GetTimestamp();
            var wait = FirstRejoinBackoff;
            string last = reason;
            for (int attempt = 1; !Stopping.IsCancellationRequested && !_leaving && !_reassembler.IsComplete; attempt++)
            {
                // Null: joined, stopped, or stopped by the coordinator as too slow (no more attempts).
                if (await TryJoinAgainAsync().ConfigureAwait(false) is not { } failed) return;
                last = failed;
                // Jitter: peers that lost the coordinator together do not all come back together.
                var delay = wait * (0.5 + Random.Shared.NextDouble());
                // The rejoin time counts from the loss or from the last chunk that arrived, whichever
                // is later: while the stream still arrives, the overlay lives and this peer stays.
                since = Math.Max(since, Volatile.Read(ref _lastProgress));
                if (Time.GetElapsedTime(since) + delay > _options.RejoinFor) break;
                RejoinLog.AttemptFailed(Log, attempt, last, delay.TotalSeconds);
                try
                {
                    await Task.Delay(delay, Time, Stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                wait = wait * 2 < MaxRejoinBackoff ? wait * 2 : MaxRejoinBackoff;
            }
            if (!Stopping.IsCancellationRequested && !_leaving && !_reassembler.IsComplete)
                _failed.TrySetResult($"lost the coordinator before the end of the stream ({reason}) and could not join again within {_options.RejoinFor.TotalSeconds:0} s, in which nothing arrived from its parents either: {last}; this peer wrote the stream up to offset {_reassembler.NextOffset}{MissingFills()}");
        }
        finally
        {
            _rejoining.Release();
        }
    }
}

/// <summary>Log lines of a peer that joins again.</summary>
internal static partial class RejoinLog
{
    [LoggerMessage(EventId = 1411, EventName = "LostCoordinator", Level = LogLevel.Warning,
        Message = "lost the coordinator: {Reason}; joining again from offset {Offset}, for up to {Seconds:0} s (its parent and child links go on meanwhile)")]
    public static partial void Lost(ILogger logger, string reason, long offset, double seconds);

    [LoggerMessage(EventId = 1412, EventName = "RejoinAttemptFailed", Level = LogLevel.Warning,
        Message = "joining again failed (attempt {Attempt}): {Reason}; next attempt in {Seconds:0.0} s")]
    public static partial void AttemptFailed(ILogger logger, int attempt, string reason, double seconds);

    [LoggerMessage(EventId = 1413, EventName = "Rejoined", Level = LogLevel.Information,
        Message = "joined again {How} as peer {Id}, resuming at offset {Offset}; {Parents}")]
    public static partial void Joined(ILogger logger, string how, int id, long offset, string parents);

    [LoggerMessage(EventId = 1414, EventName = "NewRun", Level = LogLevel.Error,
        Message = "the coordinator at {Address} does not continue the stream this peer was watching (it was restarted: a new run, with the same key): the previous run is written up to its offset {Offset} ({Written} bytes in all); the new run is written from its offset {NewOffset}; whatever the source produced in between is not in this output")]
    public static partial void NewRun(ILogger logger, string address, long offset, long written, long newOffset);

    [LoggerMessage(EventId = 1416, EventName = "JoinBusy", Level = LogLevel.Information,
        Message = "{Reason}; joining again in {Seconds:0.0} s")]
    public static partial void Busy(ILogger logger, string reason, double seconds);

    [LoggerMessage(EventId = 1415, EventName = "JoinInterrupted", Level = LogLevel.Warning,
        Message = "joining failed: {Reason}; the coordinator took the connection, so it is there: trying again in {Seconds:0.0} s (for up to {Total:0} s)")]
    public static partial void JoinInterrupted(ILogger logger, string reason, double seconds, double total);

    [LoggerMessage(EventId = 1420, EventName = "JoinTokenTaken", Level = LogLevel.Warning,
        Message = "{Reason}; another node joined first with this peer's join token: joining again as new with a join token of its own in {Seconds:0.0} s")]
    public static partial void TokenTaken(ILogger logger, string reason, double seconds);

    [LoggerMessage(EventId = 1418, EventName = "UnansweredParentLost", Level = LogLevel.Warning,
        Message = "reported parent {Parent} lost for shard(s) {Shards} {Seconds:0.#} s ago, and no Move came: they still have no parent; joining again in the same place (the Welcome says where the plan has them)")]
    public static partial void Unanswered(ILogger logger, ulong parent, string shards, double seconds);

    [LoggerMessage(EventId = 1419, EventName = "UnansweredRejoinsSpent", Level = LogLevel.Error,
        Message = "shard(s) {Shards} still have no parent and no Move came for their report, but this peer joined again for unanswered reports {Max} times within {Seconds:0} s already: waiting for the coordinator")]
    public static partial void UnansweredRejoinsSpent(ILogger logger, string shards, int max, double seconds);

    [LoggerMessage(EventId = 1417, EventName = "CoordinatorStopped", Level = LogLevel.Warning,
        Message = "the coordinator stopped before the whole stream reached this peer ({Said}): not joining again; taking what its parents still send, from offset {Offset}")]
    public static partial void CoordinatorStopped(ILogger logger, string said, long offset);
}

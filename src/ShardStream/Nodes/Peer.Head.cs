using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A parent that sends nothing of a shard (version 14). A relay that keeps its link alive with
/// heartbeats and withholds every chunk, hash list and End of a shard is no silent link: no failure
/// detector fires, and with one shard no other shard runs ahead to fill the reassembler's bound.
/// Its children stalled for as long as it stayed. The coordinator's heartbeats on the control link
/// now carry the stream's head (the next chunk sequence number at the source); a parent of a
/// shard that has sent no chunk of it for <see cref="WithheldAfter"/> (two heartbeat timeouts),
/// while the head heard that long ago was past the shard's next chunk due, is cut off as a lost
/// parent (event 9202) and the coordinator repairs it: no accusation (a parent starved by its own
/// parent looks the same). A parent that sends a trickle of a shard (a chunk now and then, so
/// never silent that long) while the shard falls ever further behind the head is cut off too
/// (event 9203): more than <see cref="TrickleAfter"/> behind the head, and less than half of what
/// the source made of the shard over that time came from it. A parent that sends at least half
/// is cut off once the shard is more than <see cref="LagAfter"/> (two trickle bounds) behind and
/// it sent fewer chunks of it than the source made over the last trickle bound, lengthened by the
/// time this process did not run in it (event 9204): the
/// child does not gain on the head; the report says so (version 15), and the coordinator moves
/// the child to another parent. Once the source makes nothing (it ended, or pauses), the chunks a
/// child behind the head lacks were all made, and a parent that has them sends them at once: a
/// window over which the head did not move is judged against what the source made over as long
/// at the rate it made the stream at (<see cref="_madeRate"/>), so that a parent cannot trickle
/// the tail of an ended stream. A parent starving because its own parent is lost
/// looks the same to its children: the coordinator does not count their reports of nothing or a
/// trickle against it while it is being repaired itself (<see cref="RepairService.OnParentLost"/>).
/// </summary>
public sealed partial class Peer
{
    /// <summary>
    /// The most heads kept (256 s of them at a 1 s control heartbeat): a window lengthened by the
    /// time this process did not run in it that reaches back further than the oldest is not judged
    /// (a peer that ran less than about a twentieth of the time).
    /// </summary>
    private const int MaxHeads = 256;

    private readonly object _headGate = new();

    /// <summary>Each head heard, with when, how many chunks of each shard had arrived by then (<see cref="_chunksOf"/>) and how long this process had not run (<see cref="_pausedTicks"/>).</summary>
    private readonly Queue<Heard> _heads = new();

    private readonly record struct Heard(long At, long Head, long[] Chunks, long PausedTicks);
    private readonly long[] _lastChunkAt = new long[Protocol.MaxShards];

    /// <summary>
    /// When each shard's last chunk arrived, not moved by pauses as <see cref="_lastChunkAt"/> is:
    /// the wall time a cut's line gives beside the running time it judged (event 9202).
    /// </summary>
    private readonly long[] _lastChunkWall = new long[Protocol.MaxShards];

    /// <summary>Chunks of each shard that arrived from a parent so far (a running count; refused and repeated ones too).</summary>
    private readonly long[] _chunksOf = new long[Protocol.MaxShards];

    /// <summary>How long this process did not run, in all (<see cref="TimeSpan.Ticks"/>; its tick loop says so).</summary>
    private long _pausedTicks;
    private Link? _headsOf;

    /// <summary>
    /// The chunks a second the source made the stream at, over the heads kept (at most
    /// <see cref="MaxHeads"/>) when the head last moved and they spanned at least
    /// <see cref="WithheldAfter"/>; 0 until then, and kept when the control link changes (under
    /// <see cref="_headGate"/>).
    /// </summary>
    private double _madeRate;

    /// <summary>How long a shard may get nothing from its parent while the source made it.</summary>
    private TimeSpan WithheldAfter => _options.HeartbeatTimeout * 2;

    /// <summary>How far behind the head a shard may fall while its parent sends less than half of what the source makes of it (<see cref="TrickleAfterOf"/>).</summary>
    private TimeSpan TrickleAfter => TrickleAfterOf(_options);

    /// <summary>
    /// <see cref="TrickleAfter"/> with <paramref name="options"/>: at least <see cref="WithheldAfter"/>,
    /// and a heartbeat timeout more than the slow-child policy takes to stop a child that cannot
    /// keep up (so that a child with a slow download is found by its parent first), 11.5 s by
    /// default. The coordinator's retry window is longer (<see cref="RepairService"/>): a second cut
    /// of the same parent counts.
    /// </summary>
    internal static TimeSpan TrickleAfterOf(NodeOptions options) =>
        Max(options.HeartbeatTimeout * 2, options.SlowChildAge + options.SlowChildGrace + options.HeartbeatTimeout);

    /// <summary>
    /// How far behind the head a shard may fall under a parent that does not let it gain on the
    /// head: two trickle bounds (23 s by default), within the default replay window of 30 s, so
    /// that a new parent resumes the child where it is.
    /// </summary>
    private TimeSpan LagAfter => TrickleAfter * 2;

    /// <summary>The coordinator's heartbeat on <paramref name="link"/> said the stream's head.</summary>
    private void OnStreamHead(Link link, long head)
    {
        lock (_headGate)
        {
            if (link != _headsOf)
            {
                // A new control link (a rejoin, maybe a new run): the old heads say nothing of it.
                // The rate the source made the stream at is the stream's, not the link's: it is
                // kept, or a window after the end on the new link would have nothing to be judged
                // against (a parent could trickle the tail to a peer that joined again).
                _heads.Clear();
                _headsOf = link;
            }
            if (_heads.Count == MaxHeads) _heads.Dequeue();
            var chunks = new long[_shardCount];
            for (int shard = 0; shard < chunks.Length; shard++) chunks[shard] = Volatile.Read(ref _chunksOf[shard]);
            long now = Time.GetTimestamp();
            // The head moved: the rate it moved at over the heads kept (their time without a new chunk too).
            if (_heads.Count > 0 && head > _heads.Last().Head)
            {
                var oldest = _heads.Peek();
                var span = Time.GetElapsedTime(oldest.At, now);
                if (span >= WithheldAfter) _madeRate = (head - oldest.Head) / span.TotalSeconds;
            }
            _heads.Enqueue(new Heard(now, head, chunks, Interlocked.Read(ref _pausedTicks)));
        }
    }

    /// <summary>
    /// The newest heads heard on <paramref name="control"/> at least <see cref="WithheldAfter"/>
    /// and <see cref="LagAfter"/> ago (null: none), the newest one before which this process ran
    /// for at least <see cref="TrickleAfter"/> (the start of the window the trickle and lag checks
    /// judge: the time it did not run, <see cref="_pausedTicks"/>, lengthens it), the newest head
    /// of all, and <see cref="_madeRate"/>. Heads older than the newest one old enough for every
    /// check are dropped; that one is kept for the next checks.
    /// </summary>
    private (Heard? Withheld, Heard? Trickle, Heard? Lagged, long Newest, double Rate) HeadsOf(Link control)
    {
        lock (_headGate)
        {
            if (control != _headsOf || _heads.Count == 0) return default;
            var withheldAfter = WithheldAfter;
            var trickleAfter = TrickleAfter;
            var lagAfter = LagAfter;
            long paused = Interlocked.Read(ref _pausedTicks);
            TimeSpan Ran(in Heard entry) => Time.GetElapsedTime(entry.At) - TimeSpan.FromTicks(paused - entry.PausedTicks);
            while (_heads.Count > 1 && _heads.ElementAt(1) is var next && Time.GetElapsedTime(next.At) >= lagAfter && Ran(next) >= trickleAfter) _heads.Dequeue();
            Heard? withheld = null, trickle = null, lagged = null;
            long newest = 0;
            foreach (var entry in _heads)
            {
                var age = Time.GetElapsedTime(entry.At);
                if (age >= withheldAfter) withheld = entry;
                if (Ran(entry) >= trickleAfter) trickle = entry;
                if (age >= lagAfter) lagged = entry;
                newest = entry.Head;
            }
            return (withheld, trickle, lagged, newest, _madeRate);
        }
    }

    private protected override void CheckParents(TimeSpan paused)
    {
        if (paused > TimeSpan.Zero)
        {
            _intakeMeter.NotePause();
            // This process stalled: what it did not read is no parent's fault. Every shard's wait
            // is that much longer (up to now), as the failure detector excuses the pause on every
            // link; else the tick after a stall counted the stall and cut parents whose chunks
            // waited unread. Not started again: a host that pauses more often than the wait is
            // long (a loaded one) then never cut a parent that withholds a shard.
            // A wait counts from the shard's last chunk, or from when its parent took it over.
            long now = Time.GetTimestamp();
            long ticks = Time.TimestampTicks(paused);
            long[] parentSince;
            lock (_gate) parentSince = _parentSince[.._shardCount];
            for (int shard = 0; shard < _shardCount; shard++)
            {
                long since = parentSince[shard];
                long seen, moved;
                do
                {
                    seen = Volatile.Read(ref _lastChunkAt[shard]);
                    moved = Math.Min(now, Math.Max(seen, since) + ticks);
                }
                while (Interlocked.CompareExchange(ref _lastChunkAt[shard], moved, seen) != seen);
            }
            Interlocked.Add(ref _pausedTicks, paused.Ticks);
            return;
        }
        _intakeMeter.Sample(_stalls.ReceivedBytes);
        JoinAgainIfUnanswered();
        UnansweredChecked?.Invoke();
        // A control link that closed (a rejoin under way, the coordinator stopping) says no new
        // head: the parents this peer keeps meanwhile are not judged on what it heard before.
        if (_control is not { IsClosing: false } control || _reassembler is not { } reassembler || reassembler.IsComplete) return;
        var after = WithheldAfter;
        var (then, trickle, lagged, newest, rate) = HeadsOf(control);
        if (then is null) return;
        long head = then.Value.Head;
        for (int shard = 0; shard < _shardCount; shard++)
        {
            Link? parent;
            long since;
            lock (_gate) (parent, since) = (_parentOfShard.GetValueOrDefault(shard), _parentSince[shard]);
            // Bytes from it waiting unread: this peer is late, not the parent.
            if (parent is null || parent.IsClosing || IsCoordinator(parent) || parent.HasUnreadInput) continue;
            // A parent that took the shard over lately is not withholding it.
            if (Time.GetElapsedTime(since) < after) continue;
            long next = reassembler.NextSeqOf(shard);
            if (next >= head) continue;
            // One that sent some of it lately is not silent: it is judged by how much it sent.
            if (Time.GetElapsedTime(Volatile.Read(ref _lastChunkAt[shard])) < after)
            {
                // Judged over the last trickle bound: less than half of what the source made is a
                // trickle; less than all of it, more than two bounds behind, is a lag never made up.
                if (CameSince(shard, since, trickle, newest, rate) is not { } got) continue;
                var window = Time.GetElapsedTime(trickle!.Value.At);
                if (next < trickle.Value.Head && 2 * got.Chunks < got.Made)
                {
                    var made = MadeText(got.Made, got.AtRate);
                    BoundsLog.ShardTrickled(Log, parent.Name, shard, got.Chunks, window.TotalSeconds, made, next, trickle.Value.Head);
                    Cut(parent, $"sent {got.Chunks} chunk(s) of shard {shard} in {window.TotalSeconds:0.#} s, while the source made {made}, and it is more than {window.TotalSeconds:0.#} s behind");
                }
                else if (lagged is { } far && next < far.Head && got.Chunks < got.Made)
                {
                    var behind = Time.GetElapsedTime(far.At);
                    var made = MadeText(got.Made, got.AtRate);
                    BoundsLog.ShardLagging(Log, parent.Name, shard, behind.TotalSeconds, got.Chunks, window.TotalSeconds, made, next, far.Head);
                    // Said in the report (version 15): the coordinator moves this peer to another parent, not back to this one.
                    _lossReporter.CutForLag(parent);
                    Cut(parent, $"shard {shard} is more than {behind.TotalSeconds:0.#} s behind, and it sent {got.Chunks} chunk(s) of it in {window.TotalSeconds:0.#} s while the source made {made}");
                }
                continue;
            }
            string waited = Waited(shard, since);
            BoundsLog.ShardWithheld(Log, parent.Name, shard, waited, next, head);
            Cut(parent, $"sent no chunk of shard {shard} for {waited}, though the source had made chunk {next} of it by then");
        }
    }

    /// <summary>
    /// How long <paramref name="shard"/> got nothing (from its last chunk, or from when its parent
    /// took it over at <paramref name="since"/>), as the withheld cut says it: the running time it
    /// judged, and when pauses of this process were excused, the wall time and the time paused
    /// ("4.1 s of running time (9.2 s wall, 5.1 s paused)"), not only the wait's bound.
    /// </summary>
    private string Waited(int shard, long since)
    {
        var running = Time.GetElapsedTime(Math.Max(Volatile.Read(ref _lastChunkAt[shard]), since));
        var wall = Time.GetElapsedTime(Math.Max(Volatile.Read(ref _lastChunkWall[shard]), since));
        var paused = wall - running;
        return paused < TimeSpan.FromMilliseconds(50) ? $"{running.TotalSeconds:0.#} s"
            : $"{running.TotalSeconds:0.#} s of running time ({wall.TotalSeconds:0.#} s wall, {paused.TotalSeconds:0.#} s paused)";
    }

    /// <summary>What the source made over a window, as the lines say it: none over one the head stood still, only its rate.</summary>
    private static string MadeText(long made, bool atRate) => atRate ? $"none ({made} at the rate it made the stream at)" : $"{made}";

    /// <summary>Closes the link of a parent this peer cuts off (its line said why), with <paramref name="why"/>.</summary>
    private void Cut(Link parent, string why) => parent.CloseAsync(GoodbyeCode.Normal, why).Observe(Log, $"{parent.Name}: closing");

    /// <summary>
    /// The chunks of <paramref name="shard"/> its parent (its parent since <paramref name="since"/>)
    /// sent since the head <paramref name="then"/> was heard, and the chunks of it the source made
    /// meanwhile (at least one); when the head did not move meanwhile (the source ended or pauses),
    /// the chunks of it the source would have made at <paramref name="rate"/> (chunks a second,
    /// <see cref="_madeRate"/>; AtRate says so). Null when that is none, or when this peer did not have this
    /// parent all along.
    /// </summary>
    private (long Chunks, long Made, bool AtRate)? CameSince(int shard, long since, Heard? then, long newest, double rate)
    {
        // The window (HeadsOf) holds at least a trickle bound of this process running: chunks
        // that waited unread while it did not run were read since (a tick with input still
        // waiting unread judges nothing). The running time may all come before a recent pause;
        // what keeps an honest parent from a cut then is that the cut needs the child more than
        // the whole lengthened window behind, and a pause of P puts it about P behind. Windows
        // with part of them paused are judged all the same: on a loaded host most are (a tick
        // late or a thread-pool probe not run by the next tick counts), and skipping them would
        // judge no parent there.
        if (then is not { } t || since > t.At || shard >= t.Chunks.Length) return null;
        long got = Volatile.Read(ref _chunksOf[shard]) - t.Chunks[shard];
        // The source deals its chunks round-robin: this shard's share of those made since.
        long made = (newest - t.Head) / _shardCount;
        // A head that stood still: every chunk the child lacks up to it was made before the window,
        // and a parent that has them sends them at once. It is judged against the stream's rate,
        // else a parent could trickle the tail of an ended stream and never be cut.
        bool atRate = newest == t.Head;
        if (atRate) made = (long)(rate * Time.GetElapsedTime(t.At).TotalSeconds / _shardCount);
        return made > 0 ? (got, made, atRate) : null;
    }
}

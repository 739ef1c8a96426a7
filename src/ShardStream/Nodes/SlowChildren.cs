using System.Globalization;
using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>
/// The slow-child policy of a parent (the coordinator or a peer), run on every tick over the
/// links it serves. A child is <b>slow</b> when the oldest frame queued for it has waited longer
/// than <see cref="NodeOptions.SlowChildAge"/> and its queue did not shrink over that time (it
/// took less than was queued for it). A child catching up on a replayed backlog, or one that
/// paces a file source, drains at least what is queued and is never slow. A suspect is
/// confirmed only once it took less than was queued since it first looked slow, at least the
/// next <c>confirm</c> later (a child that was only held up, by a pause of its process or of the
/// whole machine, drains its backlog at once); the suspicion stands while it still looks slow,
/// so that a child whose bytes go out in batches is judged over more ticks, not over one tick
/// again and again, and once it took as much as was queued in one of them it is confirmed only
/// when short by more than one send. No verdict is given on a tick that came late (this node
/// itself was held up, so its children's queues say nothing about them), and a suspicion does
/// not span one. Nor is one given about a child whose link is silent (nothing heard from it for
/// <see cref="SilentHeartbeats"/> heartbeat intervals): a child whose download is below the
/// stream rate still sends its heartbeats, while a path that carries nothing either way (its host
/// cut off, or this node's) is the failure detector's to judge; neither a suspicion nor a finding
/// spans the silence, and once the child is heard again it counts as behind only since then. One
/// silence is excused so per <see cref="SilenceExcusedEvery"/>: the child decides what it sends,
/// and one that withheld its heartbeats for two intervals every few seconds would otherwise wipe
/// every finding before its stop came. A
/// slow child is reported once
/// (<see cref="Verdict.Slow"/>: the owner demotes it or asks the coordinator to); if it is still
/// slow <see cref="NodeOptions.SlowChildGrace"/> later, the verdict is <see cref="Verdict.Stop"/>,
/// with its measured download and the rate queued for it.
/// </summary>
internal sealed class SlowChildren(TimeSpan slowAge, TimeSpan grace, TimeSpan tick, TimeProvider time)
{
    private readonly Dictionary<Link, Watch> _watches = [];

    /// <summary>
    /// A child's link silent for this many of its heartbeat intervals gets no verdict: the other
    /// side sends at least a heartbeat every interval, whatever its download.
    /// </summary>
    internal const int SilentHeartbeats = 2;

    /// <summary>
    /// A silence that begins less than this after the last excused one began is judged as any
    /// tick: a cut of a path is rare, a child that goes quiet on purpose to keep its parent's
    /// queue growing does it again and again.
    /// </summary>
    internal static readonly TimeSpan SilenceExcusedEvery = TimeSpan.FromSeconds(60);

    /// <summary>The longest window a slow finding's figures are measured over (the watch's age, if shorter).</summary>
    internal static readonly TimeSpan RateWindow = TimeSpan.FromSeconds(5);
    // The next tick confirms (a little less than a period, for the timer's jitter).
    private readonly TimeSpan _confirm = TimeSpan.FromTicks(Math.Max(tick.Ticks * 4 / 5, slowAge.Ticks / 4));
    private long _lastCheck;

    /// <summary>What the owner must do about one child.</summary>
    internal enum Verdict
    {
        /// <summary>Just became slow: demote it.</summary>
        Slow,

        /// <summary>Still slow after the grace: stop it, with <see cref="Finding.Reason"/>.</summary>
        Stop,
    }

    /// <summary>One child's verdict with the figures behind it, measured over <paramref name="Window"/>.</summary>
    internal readonly record struct Finding(Link Link, Verdict Verdict, TimeSpan QueueAge, double DownloadMbps, double StreamMbps, TimeSpan Window)
    {
        /// <summary>What the stopped child is told (and prints).</summary>
        public string Reason => BelowRate(DownloadMbps, StreamMbps, Window);

        /// <summary>What it took and what was queued for it, as the lines say it (<see cref="Took"/>).</summary>
        public string TookText => Took(DownloadMbps, StreamMbps, Window);
    }

    /// <summary>
    /// What a slow child took while <paramref name="streamMbps"/> were queued for it, as the lines
    /// say it: "nothing" (in <paramref name="window"/>, when known) when not one byte went out, not
    /// a rate of 0.0; a rate under 0.1 Mbit/s in kbit/s.
    /// </summary>
    public static string Took(double downloadMbps, double streamMbps, TimeSpan? window) => downloadMbps switch
    {
        <= 0 when window is { } w => string.Create(CultureInfo.InvariantCulture, $"it took nothing in {w.TotalSeconds:0.0} s while {streamMbps:0.0} Mbit/s were queued for it"),
        <= 0 => string.Create(CultureInfo.InvariantCulture, $"it took nothing while {streamMbps:0.0} Mbit/s were queued for it"),
        < 0.1 => string.Create(CultureInfo.InvariantCulture, $"it took {downloadMbps * 1000:0.#} kbit/s while {streamMbps:0.0} Mbit/s were queued for it"),
        _ => string.Create(CultureInfo.InvariantCulture, $"it took {downloadMbps:0.0} Mbit/s while {streamMbps:0.0} were queued for it"),
    };

    /// <summary>
    /// What a child stopped as too slow is told (and prints): its measured download and the rate
    /// queued for it, "X vs Y Mbit/s"; as <see cref="Took"/> says it, "you took nothing" (in
    /// <paramref name="window"/>, when known) when not one byte went out, not 0.0, and a download
    /// under 0.1 Mbit/s in kbit/s.
    /// </summary>
    public static string BelowRate(double downloadMbps, double streamMbps, TimeSpan? window) => downloadMbps switch
    {
        <= 0 when window is { } w => string.Create(CultureInfo.InvariantCulture, $"your download is below the stream rate: you took nothing in {w.TotalSeconds:0.0} s while {streamMbps:0.0} Mbit/s were queued for you"),
        <= 0 => string.Create(CultureInfo.InvariantCulture, $"your download is below the stream rate: you took nothing while {streamMbps:0.0} Mbit/s were queued for you"),
        _ => $"your download is below the stream rate: {Versus(downloadMbps, streamMbps)}",
    };

    /// <summary>"X vs Y Mbit/s", X in kbit/s under 0.1 Mbit/s ("X kbit/s vs Y Mbit/s").</summary>
    public static string Versus(double downloadMbps, double streamMbps) => downloadMbps < 0.1
        ? string.Create(CultureInfo.InvariantCulture, $"{downloadMbps * 1000:0.#} kbit/s vs {streamMbps:0.0} Mbit/s")
        : string.Create(CultureInfo.InvariantCulture, $"{downloadMbps:0.0} vs {streamMbps:0.0} Mbit/s");

    /// <summary>
    /// Samples every served link and returns what must be done; forgets links no longer served.
    /// <paramref name="heldUp"/>: this node itself did not run for a while (its tick loop says so);
    /// no verdict then.
    /// </summary>
    public List<Finding> Check(IReadOnlyCollection<Link> children, bool heldUp = false)
    {
        var findings = new List<Finding>();
        long now = time.GetTimestamp();
        // A tick that comes more than three periods late: this node was held up, not its children.
        bool late = heldUp || (_lastCheck != 0 && time.GetElapsedTime(_lastCheck, now) > tick * 3);
        _lastCheck = now;
        foreach (var gone in _watches.Keys.Where(l => !children.Contains(l)).ToList()) _watches.Remove(gone);
        foreach (var link in children)
        {
            if (link.IsClosing) continue;
            if (!_watches.TryGetValue(link, out var watch)) _watches[link] = watch = new Watch();
            long queued = link.ChunkBytesQueued, sent = link.ChunkBytesSent;
            var age = link.QueueAge;
            // Nothing heard from the child (and nothing waiting unread: this node is not merely slow to read).
            bool silent = link.Silence >= link.HeartbeatInterval * SilentHeartbeats && !link.HasUnreadInput;
            if (Judge(watch, now, late, age, queued, sent, link.ChunkBytesPerSend, silent) is not { } judged) continue;
            findings.Add(new Finding(link, judged.Verdict, judged.QueueAge, judged.DownloadMbps, judged.StreamMbps, judged.Window));
            if (judged.Verdict == Verdict.Stop) _watches.Remove(link);
        }
        return findings;
    }

    /// <summary>
    /// One child's sample at <paramref name="now"/> (its queue's oldest frame <paramref name="age"/>
    /// old, and the running totals of chunk bytes queued for it and handed to the transport),
    /// added to its <paramref name="watch"/>: the verdict, with its figures, or null for none.
    /// <paramref name="late"/>: this node was held up (no verdict). <paramref name="perSend"/>: about
    /// the chunk bytes one send hands over (<see cref="Link.ChunkBytesPerSend"/>), the step in
    /// which <paramref name="sent"/> moves. <paramref name="silent"/>: nothing was heard from the
    /// child for <see cref="SilentHeartbeats"/> heartbeat intervals (no verdict, and it is behind
    /// only from when it is heard again: the verdict's queue age counts from then).
    /// </summary>
    internal (Verdict Verdict, double DownloadMbps, double StreamMbps, TimeSpan Window, TimeSpan QueueAge)? Judge(Watch watch, long now, bool late, TimeSpan age, long queued, long sent, long perSend, bool silent = false)
    {
        var sample = new Sample(now, queued, sent);
        watch.Samples.Enqueue(sample);
        // Keep one sample at least slowAge old (the window over which the queue must have
        // shrunk), and samples up to RateWindow old (the window the figures are measured over).
        var keep = slowAge > RateWindow ? slowAge : RateWindow;
        while (watch.Samples.Count > 1 && time.GetElapsedTime(watch.Samples.ElementAt(1).At, now) >= keep) watch.Samples.Dequeue();
        // The same silence goes on, or a new one, excused if the last excused one began long enough ago.
        if (silent && (watch.InSilence || watch.ExcusedAt is not { } excused || time.GetElapsedTime(excused, now) >= SilenceExcusedEvery))
        {
            // Its path carries nothing either way: the child's host cut off, or this node's (a
            // coordinator whose host is cut off sees the queues of all the peers it serves grow,
            // whatever their downloads). What its queue does meanwhile says nothing about its
            // download; the failure detector judges the silence. Nothing found before it is carried over it.
            if (!watch.InSilence) watch.ExcusedAt = now;
            watch.InSilence = true;
            watch.Suspect = null;
            watch.SlowSince = null;
            watch.QuietAt = now;
            return null;
        }
        watch.InSilence = false;
        // Heard again after a silence: behind only since then (its oldest chunk was queued while
        // nothing could cross), until its queue holds nothing that old.
        if (watch.QuietAt is { } quiet)
        {
            var heard = time.GetElapsedTime(quiet, now);
            if (age > heard) age = heard;
            else watch.QuietAt = null;
        }
        var then = watch.Samples.LastOrDefault(x => time.GetElapsedTime(x.At, now) >= slowAge, watch.Samples.Peek());
        bool slow = age > slowAge && time.GetElapsedTime(then.At, now) >= slowAge && sample.Sent - then.Sent < sample.Queued - then.Queued;
        if (!slow)
        {
            watch.SlowSince = null;
            watch.Suspect = null;
            return null;
        }
        if (late)
        {
            // Nor is a suspicion kept across it: its check would span this node's own stall.
            watch.Suspect = null;
            return null;
        }
        if (watch.SlowSince is not { } since)
        {
            if (watch.Suspect is not { } suspect)
            {
                watch.Suspect = sample;
                watch.SuspectCaughtUp = false;
                return null;
            }
            // Confirmed when it took less than was queued since it first looked slow. A child that
            // took as much over the ticks since is given more time (it may have been only held
            // up, and be draining its backlog), but the suspicion stands while it still looks slow:
            // its bytes go out in batches, and a tick in which one more batch went out than its
            // share shows it "caught up" when it did not. Dropped and taken up again at the next
            // tick, it was checked over one tick again, on the same phase of a two-tick cycle of
            // batches: a child at 0.78 of the stream rate went 10 s unconfirmed. A child really
            // catching up stops looking slow (its queue stops growing over the slow window).
            // Once it caught up at a check, it is confirmed only when short by more than one send
            // (the step in which its bytes sent move): a child held up that then drains at a
            // little over the rate in uneven batches (1.2, 0.7, 1.4 of it per tick) still looks
            // slow a while, and a tick one send short found it slow. In a model (2 s held up, then
            // 1.05 of the rate, ±30% per tick) 261 of 2000 such children were found slow with the
            // suspicion kept as such, 194 with it dropped, 194 with this margin.
            if (time.GetElapsedTime(suspect.At, now) < _confirm) return null;
            long behind = sample.Queued - suspect.Queued - (sample.Sent - suspect.Sent);
            if (behind <= 0) watch.SuspectCaughtUp = true;
            if (behind <= (watch.SuspectCaughtUp ? perSend : 0)) return null;
            watch.SlowSince = sample;
            // The figures: what it took and what was queued for it, over the longest window
            // (up to RateWindow) in which it was behind all the time: since the oldest sample
            // taken after its oldest queued chunk was queued. The bytes sent are those handed
            // to the transport, a little ahead of what arrives: over the 1.5 s of the slow
            // window alone a 1 Mbit/s child measured 2.1; a window reaching back before the
            // stream started measured a 16.8 Mbit/s stream as 8.5.
            var from = watch.Samples.FirstOrDefault(x => time.GetElapsedTime(x.At, now) <= age, then);
            if (time.GetElapsedTime(from.At, now) < time.GetElapsedTime(then.At, now)) from = then;
            var span = time.GetElapsedTime(from.At, now);
            double window = span.TotalSeconds;
            return (Verdict.Slow, (sample.Sent - from.Sent) * 8 / window / 1e6, (sample.Queued - from.Queued) * 8 / window / 1e6, span, age);
        }
        var elapsed = time.GetElapsedTime(since.At, now);
        if (elapsed < grace) return null;
        double seconds = elapsed.TotalSeconds;
        return (Verdict.Stop, (sample.Sent - since.Sent) * 8 / seconds / 1e6, (sample.Queued - since.Queued) * 8 / seconds / 1e6, elapsed, age);
    }

    internal readonly record struct Sample(long At, long Queued, long Sent);

    /// <summary>What is kept about one child between checks.</summary>
    internal sealed class Watch
    {
        public Queue<Sample> Samples { get; } = new();

        /// <summary>The sample at which the child became slow; null while it keeps up.</summary>
        public Sample? SlowSince { get; set; }

        /// <summary>The sample at which it first looked slow, to be confirmed; null if it does not.</summary>
        public Sample? Suspect { get; set; }

        /// <summary>The suspect took as much as was queued since <see cref="Suspect"/> at some check (then it must be short by more than one send).</summary>
        public bool SuspectCaughtUp { get; set; }

        /// <summary>The last check at which its link was silent, while its queue still holds chunks queued before then; null otherwise.</summary>
        public long? QuietAt { get; set; }

        /// <summary>The previous check was of an excused silence (<see cref="SilenceExcusedEvery"/>).</summary>
        public bool InSilence { get; set; }

        /// <summary>When the last excused silence began; null if none was.</summary>
        public long? ExcusedAt { get; set; }
    }
}

/// <summary>Log lines of the slow-child policy (event ids 900–925).</summary>
internal static partial class SlowChildLog
{
    [LoggerMessage(900, LogLevel.Warning, "{Link}: slow: its oldest queued chunk waited {Age:0.0} s and its queue keeps growing ({Took}); {Then}", EventName = "SlowChild")]
    public static partial void Slow(ILogger log, string link, double age, string took, string then);

    [LoggerMessage(901, LogLevel.Warning, "{Link}: still slow {Grace:0.#} s after it was found slow: stopping it ({Reason})", EventName = "SlowChildStopped")]
    public static partial void Stopped(ILogger log, string link, double grace, string reason);

    [LoggerMessage(902, LogLevel.Warning, "peer {Id} demoted to a leaf (budget 0): {Why}; {Moves} move(s) sent", EventName = "PeerDemoted")]
    public static partial void Demoted(ILogger log, int id, string why, int moves);

    [LoggerMessage(903, LogLevel.Warning, "peer {Reporter} reported peer {Child} as slow, but the plan does not have {Reporter} as a parent of {Child}: ignored", EventName = "SlowReportIgnored")]
    public static partial void ReportIgnored(ILogger log, int reporter, int child);

    [LoggerMessage(912, LogLevel.Warning, "peer {Id} demoted to a leaf (budget 0) by exchanging places with its child, peer {Child} (budget {Budget}), as no other peer has room for its children: {Why}; {Moves} move(s) sent", EventName = "PeerDemotedByExchange")]
    public static partial void DemotedByExchange(ILogger log, int id, string why, int child, int budget, int moves);

    [LoggerMessage(904, LogLevel.Warning, "peer {Id} is not demoted ({Why}): the overlay has no spare upload to re-place its children without evicting someone", EventName = "DemotionRefused")]
    public static partial void NotDemoted(ILogger log, int id, string why);

    [LoggerMessage(918, LogLevel.Warning, "peer {Id} is not demoted ({Why}), as the overlay has no spare upload to re-place all its children without evicting someone: {Shed}; its budget drops from {Before} to {After} shard-stream(s), so that it is given no more children", EventName = "RelayShed")]
    public static partial void Shed(ILogger log, int id, string why, string shed, int before, int after);

    [LoggerMessage(919, LogLevel.Warning, "peer {Id} evicted ({Why}): its children starved under it for {Seconds:0} s ({Found} of its {Children} found slow), and it could be neither demoted, nor exchanged with a child, nor made to shed one; its children go into the slots its leaving frees; it is told: {Reason}", EventName = "StarvingRelayEvicted")]
    public static partial void Evicted(ILogger log, int id, string why, double seconds, int found, int children, string reason);

    [LoggerMessage(920, LogLevel.Warning, "peer {Id} is not evicted ({Why}), though its children starved under it for {Seconds:0} s: {Kept}", EventName = "StarvingRelayKept")]
    public static partial void NotEvicted(ILogger log, int id, string why, double seconds, string kept);

    [LoggerMessage(921, LogLevel.Warning, "{Address} is given {Carried} shard-stream(s) to relay, not the {Declared} its --upload asks for: it was evicted as {Why}", EventName = "ProvenUploadCap")]
    public static partial void ProvenUploadCap(ILogger log, string address, int carried, int declared, string why);

    [LoggerMessage(922, LogLevel.Warning, "peer {Id} is slow ({Why}), under peer {Parent}, whose upload was found not to carry its children {Seconds:0} s ago (event 910): its finding says nothing of this peer's download; peer {Id} is neither demoted nor stopped on it, peer {Parent} is demoted instead (or sheds it, or, starving its children with nothing else to relieve them, is evicted)", EventName = "SlowChildUnderShortUplink")]
    public static partial void UnderShortUplink(ILogger log, int id, string why, int parent, double seconds);

    [LoggerMessage(923, LogLevel.Warning, "peer {Id} is slow ({Why}) and relays, but can be neither demoted nor exchanged with a child: judged as a leaf (its leaving evicts nobody else: its children go into the slots it frees)", EventName = "SlowRelayJudgedAsLeaf")]
    public static partial void RelayJudgedAsLeaf(ILogger log, int id, string why);

    [LoggerMessage(924, LogLevel.Warning, "peer {Id}, judged as a leaf, is still slow: its oldest chunk queued at its parent waited {Seconds:0.0} s ({Why}); not stopped: it is behind on the {Served} of {Shards} shard(s) peer {Parent} serves it, and none of its other parents found it slow in the last {Window:0.#} s (its download carries their shards: the parent's upload held it back); {Then}", EventName = "SlowLeafOneParent")]
    public static partial void OneParentSlow(ILogger log, int id, double seconds, string why, int parent, int served, int shards, double window, string then);

    [LoggerMessage(925, LogLevel.Warning, "peer {Id}, judged as a leaf, is still slow: its oldest chunk queued at its parent waited {Seconds:0.0} s ({Why}); not stopped: it is behind on the {Served} of {Shards} shard(s) peer {Parent} serves it alone (none of its other parents found it slow), no other node has a free slot for it, and peer {Parent} found none of its {Kept} other child(ren) slow in the last {Window:0.#} s: its upload carries them, so this peer's link from it, or its reading, held it back; peer {Parent} keeps its place", EventName = "SlowLeafOneLink")]
    public static partial void OneLinkSlow(ILogger log, int id, double seconds, string why, int parent, int served, int shards, int kept, double window);

    [LoggerMessage(906, LogLevel.Warning, "peer {Id}, judged as a leaf, is still slow: its oldest chunk queued at its parent waited {Seconds:0.0} s ({Why}): stopping it ({Reason})", EventName = "SlowLeafStopped")]
    public static partial void LeafStopped(ILogger log, int id, double seconds, string why, string reason);

    [LoggerMessage(908, LogLevel.Warning, "peer {Id}, judged as a leaf, is still slow: its oldest chunk queued at its parent waited {Seconds:0.0} s ({Why}); not stopped: {Others} other peer(s) were found slow in the last {Window:0.#} s (many viewers behind at once point to a busy machine or a congested source, not to this viewer's download)", EventName = "SlowLeafNotStopped")]
    public static partial void LeafNotStopped(ILogger log, int id, double seconds, string why, int others, double window);

    [LoggerMessage(909, LogLevel.Warning, "peer {Id}, judged as a leaf, is still slow: its oldest chunk queued at its parent waited {Seconds:0.0} s ({Why}); not stopped: its download, {DownloadMbps:0.0} Mbit/s, is not below the stream rate, {StreamMbps:0.0} (its parent held it back)", EventName = "SlowLeafNotBelowRate")]
    public static partial void LeafNotBelowRate(ILogger log, int id, double seconds, string why, double downloadMbps, double streamMbps);

    [LoggerMessage(910, LogLevel.Warning, "peer {Id} is slow ({Why}), and its parent, peer {Parent}, found {Siblings} other child(ren) slow in the last {Window:0.#} s: the parent's upload, not this peer's download; peer {Id} is neither demoted nor stopped, peer {Parent} is demoted instead (or, with no room to re-place its children, sheds one)", EventName = "SlowChildParentSlow")]
    public static partial void ParentSlow(ILogger log, int id, string why, int parent, int siblings, double window);

    [LoggerMessage(911, LogLevel.Warning, "peer {Id} was excused {Seconds:0} s ago because its parent then, peer {Earlier}, found other children slow too; now behind at peer {Parent}: judged on its own (two slow parents in a row point to the child)", EventName = "SlowChildExcusedElsewhere")]
    public static partial void ExcusedElsewhere(ILogger log, int id, int earlier, double seconds, int parent);

    [LoggerMessage(913, LogLevel.Warning, "peer {Id}, judged as a leaf, is still slow: its oldest chunk queued at its parent, peer {Parent}, waited {Seconds:0.0} s ({Why}); not stopped: moved to {NewParent}, which judges its download (the first parent's upload may be what held it back)", EventName = "SlowLeafMoved")]
    public static partial void LeafMoved(ILogger log, int id, double seconds, string why, int parent, string newParent);

    [LoggerMessage(914, LogLevel.Information, "peer {Id}, judged as a leaf and found slow by peer {Parent}, is not moved to another parent first: {Reason}", EventName = "SlowLeafNotMoved")]
    public static partial void LeafNotMoved(ILogger log, int id, int parent, string reason);

    [LoggerMessage(916, LogLevel.Information, "peer {Id}, judged as a leaf, is slow ({Why}): not stopped yet, as it has been behind there for less than {Grace:0.#} s; judged again if its parent still finds it slow then", EventName = "SlowLeafNotYet")]
    public static partial void LeafNotYet(ILogger log, int id, string why, double grace);

    [LoggerMessage(917, LogLevel.Information, "{Text}", EventName = "DemotedHere")]
    public static partial void DemotedHere(ILogger log, string text);

    [LoggerMessage(907, LogLevel.Information, "{Link}: still slow {Grace:0.#} s after it was found slow (its oldest queued chunk waited {Age:0.0} s); the coordinator decides", EventName = "SlowChildStillSlow")]
    public static partial void StillSlow(ILogger log, string link, double grace, double age);

    [LoggerMessage(915, LogLevel.Information, "peer {Id} re-promoted: budget {Budget} again (nobody moves), as it kept up for {Seconds:0} s under parents other than {FoundBy}, which found it slow before its demotion (re-promotion {Count}; demoted again, it waits twice as long)", EventName = "PeerRepromoted")]
    public static partial void Repromoted(ILogger log, int id, int budget, double seconds, string foundBy, int count);

    [LoggerMessage(905, LogLevel.Warning, "peer {Id} is not demoted ({Why}): another peer was demoted less than {Spacing:0.#} s ago (one demotion at a time: many slow relays at once point to a busy machine, not to slow viewers)", EventName = "DemotionSpaced")]
    public static partial void DemotionSpaced(ILogger log, int id, string why, double spacing);
}

using Microsoft.Extensions.Logging;
using ShardStream.Topology;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Turns what peers report and what the coordinator sees (a lost parent, a parent accused of
/// lying, a peer that left or failed) into planner operations, and the plan's changes into Moves.
/// A child's trouble never evicts a parent that answers: the same parent is tried again first
/// (unless the child cut it off for a lag never made up: then the edge goes at once),
/// and only a second failure within <see cref="ReattachRetryWindow"/> takes the edge out of the
/// plan (a parent that several children cannot reach is made a leaf by the
/// <see cref="EvictionPolicy"/>). The plan and the sessions are the
/// <see cref="Tracker"/>'s, changed under its gate.
/// </summary>
/// <param name="fedBySource">Whether the coordinator sends a peer every one of some shards on a link that keeps up (an attach link, or its control link) (see <see cref="Starving"/>).</param>
/// <param name="heldFor">How long the coordinator's replay window has held a chunk of a shard (see <see cref="Relay.HeldFor"/> and <see cref="TooOldToWait"/>).</param>
internal sealed class RepairService(CoordinatorOptions options, Tracker tracker, StreamSource source, EvictionPolicy eviction,
    ILogger log, TimeProvider time, Func<string> listenAddress, Func<int, int[], bool> fedBySource, Func<int, long, TimeSpan?> heldFor, CancellationToken stopping)
{
    /// <summary>A parent that this many peers could not connect to (children each after a second attempt, or joiners that measured it) is made a leaf.</summary>
    internal const int UnreachableChildrenBeforeLeaf = 2;


    /// <summary>
    /// Reports of one child about a parent that is itself under repair that are not counted
    /// against that parent (<see cref="OnParentLost"/>) within <see cref="CountPeriod"/>; the
    /// next ones count as usual.
    /// </summary>
    internal const int StarvedParentExcuses = 3;

    /// <summary>
    /// Reports of one child about one parent that counted against it within <see cref="CountPeriod"/>
    /// that take the edge out of the plan, however far apart (the second within
    /// <see cref="ReattachRetryWindow"/> does so sooner).
    /// </summary>
    internal const int CutsBeforeDrop = 3;

    /// <summary>
    /// Other peers one child's reports may move within <see cref="CountPeriod"/> to make it room as
    /// its edges are taken out of the plan (a lag cut, event 9320; a cut too often, 9309; a parent
    /// it cannot connect to, 804): each a leaf that exchanges places with it in one shard, one Move,
    /// so a drop of a parent it gets K shards from can move K (a drop into a free slot moves
    /// nobody, and is not counted). A drop moves no more than are left (its other shards then take
    /// a free slot or stay under that parent). At them (event 9321) its lag cuts are taken as
    /// plain lost parents, and an edge taken out moves it only into a free slot: a child that cuts
    /// parent after parent is the slow one more likely than they, and in a full tree each report
    /// of a liar, were it trusted without end, would move an honest leaf.
    /// </summary>
    internal const int DropsMakingRoom = 3;

    /// <summary>
    /// ParentLost reports one peer may send at once (a token bucket's size): 32 and 4 a shard. An
    /// honest peer with <paramref name="shardCount"/> shards sends one a lost parent, one a Move whose
    /// attach failed and one a Welcome attach that failed, a shard each at most: 3 a shard when
    /// everything fails together. The bucket refills by one a shard per heartbeat interval.
    /// </summary>
    internal static int ReportBurst(int shardCount) => 32 + 4 * shardCount;

    /// <summary>
    /// The period over which a child's excused reports about a parent, and its reports that
    /// counted, are counted: ten <see cref="StarvedWindow"/>s, 230 s by default. No report starts
    /// a count again, only time: a liar that times reports of its own parent lost, so that its
    /// children's cuts come while it is under repair, has each child's cuts excused 3 times in
    /// that period at most; one that is cut off only every so often and whose child is sent back
    /// to it each time (a lag cut, 9204, of a child of version 14 or older, which does not say it
    /// was one) loses the child at the third cut.
    /// </summary>
    private TimeSpan CountPeriod => StarvedWindow * 10;

    /// <summary>
    /// How recently a parent must have begun a repair of a shard (reported its own parent lost, or
    /// been moved) for its children's reports about that shard to be taken as its starving, not
    /// its failing: two of the withheld-shard check's waits (each two heartbeat timeouts), or two of
    /// the trickle check's (<see cref="Peer.TrickleAfterOf"/>), whichever is longer: 23 s by default.
    /// </summary>
    private TimeSpan StarvedWindow => TimeSpan.FromTicks(Math.Max(options.HeartbeatTimeout.Ticks * 4, Peer.TrickleAfterOf(options).Ticks * 2));

    /// <summary>
    /// After a re-attach to the same parent, a new report about it within this time takes the edge
    /// out of the plan: at least 10 s, and room for an attach that waits out the heartbeat timeout,
    /// and for the trickle check of a child (<see cref="Peer.TrickleAfterOf"/>) to cut the same
    /// parent again: the trickle bound, a heartbeat timeout for the attach and two heartbeat
    /// intervals for the check's tick and the report (18.5 s by default).
    /// </summary>
    private TimeSpan ReattachRetryWindow => TimeSpan.FromSeconds(Math.Max(Math.Max(10, 3 * options.HeartbeatTimeout.TotalSeconds),
        (Peer.TrickleAfterOf(options) + options.HeartbeatTimeout + options.HeartbeatInterval * 2).TotalSeconds));

    /// <summary>
    /// A child lost its parent. When the coordinator has not heard from that parent for a while
    /// either, it is taken for dead now (a frozen or half-open node) instead of waiting for the
    /// coordinator's own heartbeat timeout. When the parent still answers, only the link between
    /// the two broke (a reset on one path, a parent that timed the child out during a stall): the
    /// plan is right, so the child is told to attach to the same parent again for the shards it
    /// lost, and resumes from that parent's replay window. One child's trouble never evicts a
    /// parent that answers. A second report within <see cref="ReattachRetryWindow"/> means the two
    /// cannot connect, or keep what they connect: the edge is taken out of the plan and the child
    /// placed under another parent (a parent that several children cannot reach, their report
    /// coming before they said they attached, is made a leaf). A shard that no other node
    /// has room for, or that came from the coordinator itself, is sent to the same parent again:
    /// no orphan is left without a parent. A child that cut the parent off for a lag it never made
    /// up (<paramref name="lagged"/>, version 15) is not sent back: the same parent's window made
    /// up part of the lag and it fell behind again, cut after cut. The edge is taken out of the
    /// plan at once (event 9320), neither counted nor excused (a starving parent sends nothing,
    /// not most of a shard), and the parent, which the child reached, is not made a leaf for it.
    /// A child at <see cref="DropsMakingRoom"/> has its lag cuts taken as plain reports, and its
    /// dropped edges move it into a free slot only.
    /// </summary>
    public void OnParentLost(PeerSession reporter, int parentId, ShardStart[] lost, bool lagged = false)
    {
        PeerSession? parent = null;
        ShardAssignment[] again = [];
        bool demote = false, later = false, excused = false;
        lock (tracker.Gate)
        {
            // A peer this coordinator is putting out (stopped as too slow: its parents were told to
            // drop it, and it reports them lost before its goodbye reaches it) is moved nowhere, and
            // its parents are not suspected for it.
            if (reporter.Control.IsClosing) return;
            if (parentId != Planner.Source && !tracker.Peers.TryGetValue(parentId, out parent))
            {
                // Out of the overlay already (failed and repaired, or finished after the end and
                // gone before its children had everything): the plan has the reporter elsewhere.
                // It is told where, unless the last Move sent to it said so already: a report the
                // peer sent before that Move arrived (every child of a dead relay reports it, and
                // only the first report or the coordinator's own finding moves them all). Told
                // twice, it attached twice, and its new parent dropped one with a broken pipe.
                CoordinatorLog.LostParentAlreadyOut(log, reporter.Id, parentId);
                if (!tracker.Peers.ContainsKey(reporter.Id) || !tracker.Planner.Contains(reporter.Id)) return;
                // Only about a node the plan made its parent: a report naming any other is no lost
                // parent of its, and would mark it under repair (its children's cuts excused) for nothing.
                if (parentId < 0 || !reporter.WasPlannedParent((ulong)parentId))
                {
                    RepairLog.NeverItsParent(log, reporter.Id, parentId);
                    return;
                }
                // Only the shards the plan made it its parent of: a shard it has from another node since
                // its join is no lost parent's (a repair's Move of it would mark the reporter under repair of
                // it for nothing, and excuse its children's cuts just before: 9310).
                var notFed = lost.Where(s => s.Shard >= options.ShardCount || !reporter.WasPlannedParentOf((ulong)parentId, s.Shard)).ToArray();
                if (notFed.Length > 0) RepairLog.NeverFedIt(log, reporter.Id, parentId, string.Join(",", notFed.Select(s => s.Shard)));
                var moves = lost.Except(notFed)
                    .Select(s => new Reattachment(reporter.Id, s.Shard, tracker.Planner.ParentOf(reporter.Id, s.Shard)))
                    .Where(r => r.NewParent != parentId && !reporter.WasMovedTo(r.Shard, r.NewParent)).ToList();
                SendRepairMoves(moves, lostParent: moves.Count > 0 ? [reporter.Id] : []);
                return;
            }
            // Suspected by the control link's failure detector (phi over its threshold, nothing
            // waiting unread), without the heartbeat timeout's floor: a child's report is evidence too.
            // Only a child of that parent in the plan may get it evicted: anyone else's report is a Move at most.
            bool childInPlan = lost.Any(s => s.Shard < options.ShardCount && tracker.Planner.ParentOf(reporter.Id, s.Shard) == parentId);
            if (parent is not null && childInPlan) parent.LostByChildAt = time.GetTimestamp();
            if (parent is not null && childInPlan && TakeOutIfDisconnected(parent, reporter.Id)) return;
            if (parent is not null && childInPlan && parent.Control.Suspected)
            {
                CoordinatorLog.LostParentSilent(log, reporter.Id, parentId, parent.Control.Silence.TotalSeconds);
                // Its failure moves the reporter. Unless it joins again in its place before that
                // failure is handled: then it is not out, and the report is taken again there.
                parent.LostWhileSilent.Add((reporter, lost, lagged));
                parent.Control.Abort($"its child {reporter.Id} lost it and it has been silent");
                return;
            }
            if (!tracker.Peers.ContainsKey(reporter.Id)) return;
            long now = time.GetTimestamp();
            // Only the shards the plan still gives to this parent: a move already on its way wins.
            var stillThere = lost.Where(s => s.Shard < options.ShardCount && tracker.Planner.ParentOf(reporter.Id, s.Shard) == parentId).ToArray();
            if (parent is not null && stillThere.Length > 0)
            {
                bool drop = false, unreachable = false;
                bool capped = DropsCapped(reporter, now);
                if (lagged && capped) lagged = false;
                if (lagged)
                {
                    // Sent back, its window would make up part of the lag and the child fall behind again.
                    drop = true;
                    RepairLog.CutForLag(log, reporter.Id, parentId, string.Join(",", stillThere.Select(s => s.Shard)));
                }
                else if (Starving(reporter, parent, stillThere, now) is { } starving)
                {
                    if (TooOldToWait(stillThere) is { } old && tracker.Planner.MoveAwayFrom(reporter.Id, parentId) is { Count: > 0 } away)
                    {
                        // Sent back, it would wait for the parent's repair until it cut it off again,
                        // by when what it lacks may have left every window: it moves into free
                        // slots elsewhere now, the coordinator filling what its new parent no longer
                        // holds. Nobody else moves for it, the pair is not remembered (the parent
                        // is honest, only starving), and nothing is counted against the parent.
                        // With no free slot it is excused and sent back as before.
                        RepairLog.TooOldToWait(log, reporter.Id, parentId, old.Shard, old.Age == TimeSpan.MaxValue ? -1 : old.Age.TotalSeconds, options.ReplayWindowAge.TotalSeconds);
                        reporter.ReattachedTo = -1;
                        tracker.SendMoves(away, repair: true);
                        ExcuseBefore(reporter, now);
                        stillThere = [];
                    }
                    else
                    {
                        // The parent sent nothing because it has nothing: its own repair is under way. Not
                        // counted against it (two such reports took the edge out of the plan, and two
                        // children so made an honest relay a leaf): the child goes back to it, which
                        // resumes it from its window once it is repaired.
                        excused = true;
                        RepairLog.StarvedParent(log, reporter.Id, parentId, string.Join(",", stillThere.Select(s => s.Shard)), starving.Since.TotalSeconds, starving.Count, StarvedParentExcuses, CountPeriod.TotalSeconds);
                    }
                }
                else
                {
                    // A second report soon after the re-attach: the two cannot connect (the attach
                    // failed: the report came before the peer said its move was done), or the child
                    // cut it off again at once. Or the child cut it off again and again, further
                    // apart: it does not get what it needs from it. Every report that is not excused is counted.
                    bool soon = reporter.ReattachedTo == parentId && time.GetElapsedTime(reporter.ReattachedAt, now) < ReattachRetryWindow;
                    // It said the re-attach was done first: it reached the parent, which is then not
                    // counted as unreachable (a parent that answers but lags is not one nobody can reach).
                    unreachable = soon && !reporter.AppliedNotedMove;
                    int cuts = CountCut(reporter, parentId, now);
                    drop = soon || cuts >= CutsBeforeDrop;
                    if (drop && !unreachable) RepairLog.CutTooOften(log, reporter.Id, parentId, cuts, CountPeriod.TotalSeconds);
                }
                if (drop)
                {
                    reporter.ReattachedTo = -1;
                    // Take the edge out of the plan (see DropUnreachableEdges).
                    // Shards no other node has room for are tried at the same parent again: an orphan is never left without one.
                    // DropsCapped pruned the list: what is left of DropsMakingRoom.
                    demote = DropUnreachableEdges(reporter, parent, stillThere, unreachable, exchanges: Math.Max(0, DropsMakingRoom - reporter.RoomMoves.Count), out var stranded, out int moved);
                    // One per other peer moved to make it room: a free slot costs nobody.
                    for (int i = 0; i < moved; i++) reporter.RoomMoves.Add(now);
                    // Moved elsewhere (a repair's Move): its own lost parent's, as a re-attach's below.
                    if (stranded.Length < stillThere.Length) ExcuseBefore(reporter, now);
                    stillThere = stranded;
                    later = stillThere.Length > 0;
                    if (later) RepairLog.SameParentAgain(log, reporter.Id, parentId, string.Join(",", stillThere.Select(s => s.Shard)), RepairRetryDelay.TotalSeconds);
                }
            }
            else if (parent is null && reporter.ReattachedTo == parentId && time.GetElapsedTime(reporter.ReattachedAt, now) < ReattachRetryWindow)
            {
                // The coordinator is every peer's last resort: it is sent there again (it never leaves the plan).
                later = stillThere.Length > 0;
                RepairLog.CoordinatorAgain(log, reporter.Id, RepairRetryDelay.TotalSeconds);
            }
            if (stillThere.Length > 0)
            {
                string address = parent?.Address ?? listenAddress();
                again = tracker.WithTickets(reporter.Id, stillThere.Select(s => new ShardAssignment(s.Shard, AssignmentKind.Redirect, (ulong)parentId, 0, address)).ToArray());
                // A repair follows: the reporter has nothing of these shards to relay until it is done.
                // Not when it lost the coordinator while the coordinator still sends it those shards
                // on a link that keeps up: the source never starves, and its word is the better one
                // (else a liar under it could mark itself so at will, and have its children's cuts excused).
                int[] shards = [.. stillThere.Select(s => (int)s.Shard)];
                // When it does not (the link is gone, or what is queued on it waits a heartbeat timeout
                // or more), the reporter starves as under a peer parent, and so do its children.
                if (parent is not null || !fedBySource(reporter.Id, shards)) StartRepair(reporter, shards, now);
                else RepairLog.SourceStillFeeds(log, reporter.Id, string.Join(",", shards));
                // An excused report is no attempt of the two (see Starving): the next one counts as a first.
                if (excused) reporter.ReattachedTo = -1;
                else (reporter.ReattachedTo, reporter.ReattachedAt) = (parentId, now);
                reporter.NoteNextMove();
            }
        }
        if (demote) DemoteUnreachable(parent!);
        if (again.Length == 0) return;
        if (later)
        {
            // A retry of an attach that failed twice: after a pause, so that a parent nobody can
            // reach costs one attempt per pause, not a loop of reports and moves.
            SendMoveLaterAsync(reporter, again).Observe(log, $"peer {reporter.Id}: attaching again");
            return;
        }
        CoordinatorLog.ReattachingToSameParent(log,
            reporter.Id, parentId, string.Join(",", again.Select(a => a.Shard)));
        reporter.SendMove(new Move(again));
    }

    /// <summary>How often a peer's dropped reports are said (event 9322): once per this, with the count since the last line.</summary>
    private static readonly TimeSpan DroppedReportsLine = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Whether the coordinator takes one more ParentLost report of <paramref name="reporter"/>: a
    /// token bucket of <see cref="ReportBurst"/>, refilled by one a shard per heartbeat interval.
    /// Past it the report is dropped, and said at most once per 10 s naming the peer (event 9322),
    /// nothing more: an honest peer whose report goes unanswered joins again in its place. Each
    /// report taken is handled under the gate, a Move sent or a delayed one started.
    /// </summary>
    public bool TakeReport(PeerSession reporter)
    {
        long now = time.GetTimestamp();
        int burst = ReportBurst(options.ShardCount);
        lock (tracker.Gate)
        {
            if (reporter.ReportsCheckedAt == 0) reporter.ReportTokens = burst;
            else
            {
                double refill = time.GetElapsedTime(reporter.ReportsCheckedAt, now) / options.HeartbeatInterval * options.ShardCount;
                reporter.ReportTokens = Math.Min(burst, reporter.ReportTokens + refill);
            }
            reporter.ReportsCheckedAt = now;
            if (reporter.ReportTokens >= 1)
            {
                reporter.ReportTokens--;
                return true;
            }
            reporter.ReportsDropped++;
            if (reporter.DroppedReportsSaidAt != 0 && time.GetElapsedTime(reporter.DroppedReportsSaidAt, now) < DroppedReportsLine) return false;
            reporter.DroppedReportsSaidAt = now;
            RepairLog.ReportsDropped(log, reporter.Id, reporter.ReportsDropped, burst, options.HeartbeatInterval.TotalSeconds / options.ShardCount);
            reporter.ReportsDropped = 0;
            return false;
        }
    }

    /// <summary>
    /// The time a child sent back to a parent that sent it nothing may wait before it can cut that
    /// parent off again and be placed elsewhere: a withheld-shard bound (two heartbeat timeouts,
    /// <c>Peer.WithheldAfter</c>) for the next cut, and a heartbeat timeout for the report, the
    /// Move, the attach and the fill (15 s by default: a child whose next chunk is older than
    /// 15 s of the 30 s window is not sent back).
    /// </summary>
    internal TimeSpan ReattachMargin => options.HeartbeatTimeout * 3;

    /// <summary>
    /// The first of <paramref name="lost"/> whose next chunk the coordinator's replay window has
    /// held longer than the window's age less <see cref="ReattachMargin"/> (or dropped already,
    /// <see cref="TimeSpan.MaxValue"/>), with that age; null when every one is younger. A child
    /// sent back to a parent under repair with such a shard would have it leave the window before
    /// a second cut moved it (seen across network namespaces: a viewer sent back twice to a relay whose own
    /// download could not carry the stream lost 131,072 bytes, 30 s after its first cut).
    /// Called under the gate.
    /// </summary>
    private (byte Shard, TimeSpan Age)? TooOldToWait(ShardStart[] lost)
    {
        var limit = options.ReplayWindowAge - ReattachMargin;
        // A window no longer than the margin: every child would be moved, none excused; the rule is off.
        if (limit <= TimeSpan.Zero) return null;
        foreach (var s in lost)
            if (heldFor(s.Shard, (long)s.FromSeq) is { } age && age > limit) return (s.Shard, age);
        return null;
    }

    /// <summary>
    /// How long ago <paramref name="parent"/> began the repair of <paramref name="shards"/>, and
    /// which of <paramref name="reporter"/>'s excuses for it this is, when that was within
    /// <see cref="StarvedWindow"/> and the reporter has had fewer than <see cref="StarvedParentExcuses"/>
    /// reports about that parent excused within <see cref="CountPeriod"/>: its lost-parent report
    /// is then that parent's starving, not counted. Null otherwise. Called under the gate.
    /// </summary>
    private (TimeSpan Since, int Count)? Starving(PeerSession reporter, PeerSession parent, ShardStart[] shards, long now)
    {
        long since = parent.RepairedAt(shards.Select(s => (int)s.Shard));
        if (since == 0 || time.GetElapsedTime(since, now) > StarvedWindow) return null;
        // A parent of those shards that the coordinator sends them to on a link that keeps up has
        // them: its repair is done, whatever it began (the coordinator, the source, never starves).
        int[] ids = [.. shards.Select(s => (int)s.Shard)];
        if (ids.All(s => tracker.Planner.ParentOf(parent.Id, s) == Planner.Source) && fedBySource(parent.Id, ids))
        {
            RepairLog.StarvedParentFed(log, reporter.Id, parent.Id, string.Join(",", ids), time.GetElapsedTime(since, now).TotalSeconds);
            return null;
        }
        // Counted per parent and child over minutes: a parent that stays starving past the
        // excuses, or starts a repair whenever its children are about to cut it, is judged as any other.
        return TakeExcuse(parent, reporter.Id, now) is { } count ? (time.GetElapsedTime(since, now), count) : null;
    }

    /// <summary>
    /// Takes one of <paramref name="child"/>'s excuses for <paramref name="parent"/> (event 9308
    /// or 9310): which one it is, or null when it had <see cref="StarvedParentExcuses"/> within
    /// <see cref="CountPeriod"/> already. Called under the gate.
    /// </summary>
    private int? TakeExcuse(PeerSession parent, int child, long now)
    {
        parent.StarvedExcuses.RemoveAll(e => time.GetElapsedTime(e.At, now) > CountPeriod);
        int count = parent.StarvedExcuses.Count(e => e.Child == child);
        if (count >= StarvedParentExcuses) return null;
        parent.StarvedExcuses.Add((child, now));
        return count + 1;
    }

    /// <summary>
    /// Whether <paramref name="reporter"/>'s dropped edges moved <see cref="DropsMakingRoom"/> other
    /// peers within <see cref="CountPeriod"/>; said once (event 9321) when it gets there. Called under the gate.
    /// </summary>
    private bool DropsCapped(PeerSession reporter, long now)
    {
        reporter.RoomMoves.RemoveAll(at => time.GetElapsedTime(at, now) > CountPeriod);
        if (reporter.RoomMoves.Count < DropsMakingRoom)
        {
            reporter.DropsCapSaid = false;
            return false;
        }
        if (!reporter.DropsCapSaid)
        {
            reporter.DropsCapSaid = true;
            RepairLog.DropsCapped(log, reporter.Id, reporter.RoomMoves.Count, CountPeriod.TotalSeconds);
        }
        return true;
    }

    /// <summary>Notes a report of <paramref name="reporter"/> about <paramref name="parentId"/> that counted against it; returns how many did within <see cref="CountPeriod"/>, this one included, at most <see cref="CutsBeforeDrop"/> (older ones of that parent are forgotten). Called under the gate.</summary>
    private int CountCut(PeerSession reporter, int parentId, long now)
    {
        reporter.CountedCuts.RemoveAll(c => time.GetElapsedTime(c.At, now) > CountPeriod);
        // No more than CutsBeforeDrop kept of one parent: the rules read no further (a count at
        // CutsBeforeDrop drops the edge, and 9310 takes the last one back).
        if (reporter.CountedCuts.Count(c => c.Parent == parentId) >= CutsBeforeDrop)
            reporter.CountedCuts.RemoveAt(reporter.CountedCuts.FindIndex(c => c.Parent == parentId));
        reporter.CountedCuts.Add((parentId, now));
        return reporter.CountedCuts.Count(c => c.Parent == parentId);
    }

    /// <summary>
    /// <paramref name="session"/> joined again in its place. A child that reported it lost while
    /// its control link was silent had no Move: the coordinator aborted that link and left the
    /// repair to its failure, which its rejoin cancelled (its children are not moved then). Each
    /// such report is taken again now, as one about a parent that answers (the child is sent back
    /// to it, and resumes from its window, or moved elsewhere when it cut it off for a lag; a move
    /// of those shards meanwhile wins).
    /// </summary>
    public void OnRejoinedInPlace(PeerSession session)
    {
        (PeerSession Child, ShardStart[] Lost, bool Lagged)[] reports;
        lock (tracker.Gate)
        {
            reports = [.. session.LostWhileSilent];
            session.LostWhileSilent.Clear();
        }
        foreach (var (child, lost, lagged) in reports)
        {
            RejoinLog.LostBeforeRejoin(log, child.Id, session.Id);
            OnParentLost(child, session.Id, lost, lagged);
        }
    }

    /// <summary>
    /// <paramref name="peer"/> begins a repair of <paramref name="shards"/> at <paramref name="now"/>
    /// (<see cref="PeerSession.UnderRepair"/>), and its children's cuts just before are excused
    /// (<see cref="ExcuseBefore"/>). Called under the gate.
    /// </summary>
    private void StartRepair(PeerSession peer, IEnumerable<int> shards, long now)
    {
        peer.UnderRepair(shards, now);
        ExcuseBefore(peer, now);
    }

    /// <summary>
    /// <paramref name="peer"/> lost a parent, and its repair began at <paramref name="now"/>: its
    /// answered report (<see cref="StartRepair"/>), or a repair's Move (its parent failed, or an
    /// edge it reported was taken out of the plan). A report of one of its children about it that
    /// came just before (a heartbeat timeout) and counted was its starving too (a child further
    /// down sees the same stall, and may say so first): it is excused after the fact, within the
    /// same <see cref="StarvedParentExcuses"/> per child in <see cref="CountPeriod"/> (a liar that
    /// reports its own parent lost right after each cut gains nothing more). Not for a report about
    /// the coordinator while it still sends the peer those shards on a link that keeps up (event
    /// 9312: it has them), nor for a Move of a graceful leave (the leaver serves until its children
    /// moved). Called under the gate.
    /// </summary>
    private void ExcuseBefore(PeerSession peer, long now)
    {
        if (!tracker.Planner.Contains(peer.Id)) return;
        // Its children in the plan, not every peer: a report is answered under the gate, and a
        // peer may send them as often as it likes. A child whose cut counted was sent back to it.
        foreach (int id in tracker.Planner.ChildrenInAnyShard(peer.Id))
        {
            if (!tracker.Peers.TryGetValue(id, out var child)) continue;
            int last = child.CountedCuts.FindLastIndex(c => c.Parent == peer.Id);
            if (last < 0 || time.GetElapsedTime(child.CountedCuts[last].At, now) > options.HeartbeatTimeout) continue;
            if (TakeExcuse(peer, child.Id, now) is not { } count) continue;
            RepairLog.StarvedParentBefore(log, child.Id, peer.Id, time.GetElapsedTime(child.CountedCuts[last].At, now).TotalSeconds, count, StarvedParentExcuses, CountPeriod.TotalSeconds);
            child.CountedCuts.RemoveAt(last);
            if (child.ReattachedTo == peer.Id) child.ReattachedTo = -1;
        }
    }

    /// <summary>
    /// Sends a repair's <paramref name="moves"/> (each moved peer noted under repair:
    /// <see cref="Tracker.SendMoves"/>), then excuses the cuts just before of the children of each
    /// peer of <paramref name="lostParent"/> still listed, which lost a parent (<see cref="ExcuseBefore"/>;
    /// one the moves evicted is out). Called under the gate.
    /// </summary>
    private void SendRepairMoves(IEnumerable<Reattachment> moves, IEnumerable<int> lostParent)
    {
        tracker.SendMoves(moves, repair: true);
        long now = time.GetTimestamp();
        foreach (int id in lostParent)
            if (tracker.Peers.TryGetValue(id, out var peer)) ExcuseBefore(peer, now);
    }

    /// <summary>The pause before a child is sent once more to a parent it failed to attach to twice (no other parent had room).</summary>
    private TimeSpan RepairRetryDelay => options.HeartbeatInterval;

    /// <summary>Awaited with the reporter's id once a delayed Move's pause is over, before it is looked at (tests change the plan meanwhile); null: none.</summary>
    internal Func<int, Task>? MoveLaterDue { get; set; }

    private async Task SendMoveLaterAsync(PeerSession reporter, ShardAssignment[] again)
    {
        try
        {
            await Task.Delay(RepairRetryDelay, time, stopping).ConfigureAwait(false);
            if (MoveLaterDue is { } due) await due(reporter.Id).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        lock (tracker.Gate)
        {
            // Still listed; only the shards with no later move meanwhile (the plan may have found
            // room for some): a shard moved has its own Move, the others still need this one
            // (without it, they would wait for the peer's rejoin for an unanswered report, 15 s).
            if (!tracker.Peers.TryGetValue(reporter.Id, out var current) || current != reporter) return;
            var still = again.Where(a => tracker.Planner.ParentOf(reporter.Id, a.Shard) == (int)a.ParentId).ToArray();
            if (still.Length == 0) return;
            // The ticket names the shards the parent is to serve it: those left.
            if (still.Length < again.Length) again = tracker.WithTickets(reporter.Id, still);
            reporter.ReattachedAt = time.GetTimestamp();
            reporter.NoteNextMove();
        }
        reporter.SendMove(new Move(again));
    }

    /// <summary>
    /// A peer's control link <paramref name="control"/> is gone for good: it failed. False when the
    /// peer is back: it joined again in its place meanwhile (<see cref="Admission"/> gave its session
    /// a new control link), and it stays. Whether the link is still the session's is decided under
    /// the gate, which that rejoin swaps the link under: a look before taking it left a moment in
    /// which the rejoin came, and the peer was taken out of the plan while its new control link
    /// served it (its children moved, nothing placed it again).
    /// </summary>
    public bool OnPeerGone(PeerSession session, Link control, string reason) => RemovePeer(session, reason, graceful: false, control);

    /// <summary>
    /// Takes a peer out of the overlay and sends every peer the planner moves its new parents.
    /// A graceful leaver keeps serving until its children have moved (they close their links to it).
    /// With <paramref name="control"/>, only while that is still the peer's control link: false when
    /// it is not (the peer joined again in its place); true when the peer is out.
    /// </summary>
    public bool RemovePeer(PeerSession session, string reason, bool graceful, Link? control = null)
    {
        IReadOnlyList<Reattachment> plan;
        lock (tracker.Gate)
        {
            if (control is not null && session.Control != control) return false;
            if (!tracker.Forget(session)) return true;
            // An accusation against it may still come from one of its children (EvictionPolicy.NoteDeparted).
            eviction.NoteDeparted(session);
            // Its children, which lost their parent if it failed (see ExcuseBefore).
            List<int> orphans = graceful || !tracker.Planner.Contains(session.Id) ? [] : [.. tracker.Planner.ChildrenInAnyShard(session.Id)];
            ShardStreamMetrics.Leaves.Add(1, new KeyValuePair<string, object?>("how", graceful ? "graceful" : "failed"));
            plan = tracker.Planner.Leave([session.Id]);
            // Not the entries of a peer the plan evicts: it gets no Move.
            int sent = tracker.SentOf(plan);
            // A failed peer may still reach its parents (only its path to this coordinator broke):
            // they stop serving it, as its slots go to others. A leaver closes those links itself
            // once its children have moved, and so does a peer that finished (its goodbye, Normal,
            // comes after it closed them).
            if (!graceful && session.Control.ReceivedGoodbye != GoodbyeCode.Normal) tracker.DropFromParents(session, reason);
            if (source.Ended && session.Control.ReceivedGoodbye == GoodbyeCode.Normal)
                CoordinatorLog.PeerLeftAfterEnd(log, session.Id, reason, sent);
            // After the end too, the repair's moves go out at once (keeping them back until a child
            // reported the finished parent lost left peers unfinished: LatencyOverlayTests seeds 3
            // and 11 timed out with it). A child that already has everything ignores its move.
            // A failure, or a finish after the end: the orphans may still need the rest of the stream from a window.
            // Said before the moves go out: a peer they evict has its own line (1660, "is evicted"), after this one.
            CoordinatorLog.PeerRemoved(log, session.Id, graceful ? "is leaving" : "is gone", reason, sent);
            SendRepairMoves(plan, lostParent: orphans);
        }
        return true;
    }

    /// <summary>
    /// <paramref name="child"/> could not connect to <paramref name="parent"/> twice in a row: the
    /// planner takes the edge out (<see cref="Planner.DropEdge"/>) and the moves go out. Called
    /// under the gate. True when the parent should now be made a leaf. <paramref name="stranded"/>:
    /// the lost shards the plan still gives to that parent (no other node had room).
    /// <paramref name="unreachable"/> false: the child cut it off too often (<see cref="CutsBeforeDrop"/>,
    /// or again within <see cref="ReattachRetryWindow"/> after it said it attached to it), the edge
    /// goes the same way, and the parent, which the child reached, is not counted as unreachable.
    /// <paramref name="exchanges"/>: at most so many leaves exchange places with the child, one
    /// shard each (<see cref="DropsMakingRoom"/>); 0: only into a free slot.
    /// <paramref name="moved"/>: how many did (each another peer's Move).
    /// </summary>
    private bool DropUnreachableEdges(PeerSession child, PeerSession parent, ShardStart[] lost, bool unreachable, int exchanges, out ShardStart[] stranded, out int moved)
    {
        var moves = new List<Reattachment>();
        var noOther = new List<ShardStart>();
        foreach (var s in lost)
        {
            if (s.Shard >= options.ShardCount || tracker.Planner.ParentOf(child.Id, s.Shard) != parent.Id) continue;
            var dropped = tracker.Planner.DropEdge(child.Id, s.Shard, exchanges - moves.Count(m => m.Peer != child.Id));
            if (dropped.Count == 0) ReachabilityLog.NoOtherParent(log, child.Id, parent.Id, parent.Address, s.Shard);
            moves.AddRange(dropped);
        }
        // A shard still under the same parent (no other node had room, or an earlier shard's drop moved it already) is not moved.
        foreach (var s in lost)
            if (s.Shard < options.ShardCount && tracker.Planner.ParentOf(child.Id, s.Shard) == parent.Id) noOther.Add(s);
        stranded = [.. noOther];
        moved = moves.Count(m => m.Peer != child.Id);
        if (moves.Count == 0) return false;
        // One entry per (peer, shard), with the parent the plan gives it now.
        var final = moves.Select(m => (m.Peer, m.Shard)).Distinct().Select(x => new Reattachment(x.Peer, x.Shard, tracker.Planner.ParentOf(x.Peer, x.Shard))).ToList();
        tracker.SendMoves(final, repair: true);
        // A parent cut off too often (unreachable false) was reached: it is not made a leaf for it.
        if (!unreachable) return false;
        ReachabilityLog.EdgeDropped(log, child.Id, parent.Id, parent.Address,
            string.Join(",", final.Where(m => m.Peer == child.Id).Select(m => $"{m.Shard}->{m.NewParent}")));
        parent.UnreachableBy.Add(child.Id);
        return MakesLeaf(parent);
    }

    /// <summary>
    /// Whether <paramref name="parent"/>, a relay, is to be made a leaf as one peers cannot connect
    /// to: <see cref="UnreachableChildrenBeforeLeaf"/> peers said so (children each after a second
    /// attempt, or joiners that measured it), and no child of it in the plan but them reaches it
    /// now (its last heartbeat reported a round trip on its link to it: <see cref="PeerSession.Reaches"/>).
    /// A verdict is a peer's word, and two peer ids are cheap: two strangers under an honest relay
    /// must not make it a leaf and move its honest children. A child that is fed by it says otherwise, and
    /// the relay keeps its place (event 809); the verdicts' edges are taken out all the same. A
    /// relay that accepts no attach has no such child. Called under the gate.
    /// </summary>
    internal bool MakesLeaf(PeerSession parent)
    {
        if (parent.UnreachableBy.Count < UnreachableChildrenBeforeLeaf || !tracker.Planner.Contains(parent.Id) || tracker.Planner.Budget(parent.Id) == 0) return false;
        foreach (int id in tracker.Planner.ChildrenInAnyShard(parent.Id))
        {
            if (parent.UnreachableBy.Contains(id) || !tracker.Peers.TryGetValue(id, out var child) || !child.Reaches(parent.Id)) continue;
            ReachabilityLog.UnreachableParentKept(log, parent.UnreachableBy.Count, parent.Id, parent.Address, id);
            return false;
        }
        return true;
    }

    /// <summary>
    /// Several peers (children, or joiners that measured it) could not connect to this peer: it
    /// relays nothing from now on, and is told why. Said (806) and told only once the
    /// <see cref="EvictionPolicy"/> demoted it: it may refuse (another demotion less than the
    /// spacing ago, 905; no room for its children, 904), and a relay told so while still serving
    /// would log "this peer relays nothing" (801).
    /// </summary>
    public void DemoteUnreachable(PeerSession parent)
    {
        int count;
        lock (tracker.Gate) count = parent.UnreachableBy.Count;
        if (!eviction.Demote(parent.Id, $"{count} peers could not connect to it at {parent.Address}")) return;
        ReachabilityLog.UnreachableParentDemoted(log, count, parent.Id, parent.Address);
        if (parent.Version >= Protocol.ProbeVersion)
            parent.SendNotice(new Notice(NoticeCode.Leaf, $"{count} other peers could not connect to it at {parent.Address}, so its children were moved to other parents").Write);
    }

    /// <summary>
    /// Takes out a relay the <see cref="EvictionPolicy"/> evicts as its uplink does not carry its
    /// children (<c>EvictStarved</c>): they are re-placed as after a failure, its parents drop it, and
    /// it is told <paramref name="reason"/> (Goodbye(Refused): it may join again, as a leaf or with
    /// the budget it proved to carry). Called under the gate.
    /// </summary>
    public void EvictStarving(PeerSession session, string reason)
    {
        RemovePeer(session, "evicted: its uplink did not carry its children", graceful: false);
        session.Evict(reason, log);
    }

    /// <summary>
    /// A child lost a parent whose control link is closed (the coordinator is waiting for it to
    /// join again): it is gone for its children, so it is taken out now. Called under the gate.
    /// </summary>
    private bool TakeOutIfDisconnected(PeerSession parent, int reporter)
    {
        if (!parent.Control.IsClosing) return false;
        RejoinLog.LostWhileAway(log, reporter, parent.Id);
        RemovePeer(parent, "its control link is closed and a child lost it", graceful: false);
        return true;
    }

    /// <summary>
    /// A child cut its parent off for what the parent sent. The <see cref="EvictionPolicy"/> judges
    /// the accusation; the accused parent leaves the overlay at once (its children get their Moves
    /// now, not after a timeout), and its listen address is refused from then on.
    /// </summary>
    public void OnParentAccused(PeerSession reporter, int parentId, ShardStart[] shards, string violation)
    {
        PeerSession? parent;
        lock (tracker.Gate)
        {
            switch (eviction.JudgeAccusation(reporter, parentId, shards, violation, out parent, out string? departedAddress))
            {
                case EvictionPolicy.Verdict.Ignored:
                    return;
                case EvictionPolicy.Verdict.DepartedParentCutOff:
                    // Its children were moved when it left; the reporter resumes from its new parent.
                    CoordinatorLog.DepartedParentCutOff(log, parentId, departedAddress!, reporter.Id, violation);
                    return;
                case EvictionPolicy.Verdict.AccuserEvicted:
                    reporter.Evict($"evicted: this peer accused {reporter.Accusations} parents of lying", log);
                    RemovePeer(reporter, "accused too many parents", graceful: false);
                    return;
                case EvictionPolicy.Verdict.AgainstCoordinator:
                    parent = null;
                    break;
            }
        }
        if (parent is null)
        {
            OnParentLost(reporter, parentId, shards);
            return;
        }
        CoordinatorLog.ParentCutOff(log,
            parent.Id, parent.Address, reporter.Id, violation);
        RemovePeer(parent, $"cut off: {violation}", graceful: false);
        parent.Evict($"evicted: child {reporter.Id} reports that you sent: {violation}", log);
    }
}

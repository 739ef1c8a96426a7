using Microsoft.Extensions.Logging;
using ShardStream.Topology;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Who loses its place, and when: a slow relay is demoted to a leaf (at most one demotion per
/// <see cref="NodeOptions.DemotionSpacing"/>, and never at the cost of evicting others), an
/// accused parent is cut off and its address refused from then on, and a peer that accuses too
/// many parents is taken for the liar. It owns the refused addresses and the demotion clock; the
/// plan it changes is the <see cref="Tracker"/>'s (under its gate).
/// </summary>
internal sealed class EvictionPolicy(CoordinatorOptions options, Tracker tracker, ILogger log, TimeProvider time)
{
    /// <summary>A reporter may accuse this many parents; one that accuses more is taken for the liar.</summary>
    private const int MaxAccusations = 2;

    /// <summary>Listen addresses of peers cut off for what they sent: refused from then on. Under the gate.</summary>
    private readonly HashSet<string> _cutOff = [];
    private long _lastDemotion;

    /// <summary>What an accusation leads to (see <see cref="JudgeAccusation"/>).</summary>
    public enum Verdict
    {
        /// <summary>Nothing: the reporter is out, the accused is out already, or is not its parent.</summary>
        Ignored,

        /// <summary>The coordinator itself is accused: taken as a lost parent.</summary>
        AgainstCoordinator,

        /// <summary>The reporter accused too many parents: the caller evicts it.</summary>
        AccuserEvicted,

        /// <summary>The accused parent is cut off: its address is refused from now on; the caller takes it out.</summary>
        ParentCutOff,
    }

    /// <summary>True when peers at <paramref name="address"/> were cut off. Under the gate.</summary>
    public bool IsCutOff(string address) => _cutOff.Contains(address);

    /// <summary>
    /// A child cut its parent off for what the parent sent (data that failed verification, a
    /// frame it may not send). The coordinator cannot see the bytes, so it checks what it can:
    /// the reporter must be that parent's child in the plan, and may accuse only
    /// <see cref="MaxAccusations"/> parents in its life (an honest peer meets a liar rarely; a
    /// peer that finds every parent lying is the liar, and is evicted itself). Called under the gate.
    /// </summary>
    public Verdict JudgeAccusation(PeerSession reporter, int parentId, ShardStart[] shards, string violation, out PeerSession? parent)
    {
        parent = null;
        if (!tracker.Peers.ContainsKey(reporter.Id)) return Verdict.Ignored;
        if (parentId == Planner.Source)
        {
            CoordinatorLog.CoordinatorAccused(log, reporter.Id, violation);
            return Verdict.AgainstCoordinator;
        }
        if (!tracker.Peers.TryGetValue(parentId, out parent))
        {
            CoordinatorLog.AccusedAlreadyOut(log, reporter.Id, parentId, violation);
            return Verdict.Ignored;
        }
        if (!shards.Any(s => s.Shard < options.ShardCount && tracker.Planner.ParentOf(reporter.Id, s.Shard) == parentId))
        {
            CoordinatorLog.AccusationIgnored(log, reporter.Id, parentId, violation);
            return Verdict.Ignored;
        }
        if (++reporter.Accusations > MaxAccusations)
        {
            CoordinatorLog.AccuserEvicted(log, reporter.Id, reporter.Accusations, parentId);
            return Verdict.AccuserEvicted;
        }
        _cutOff.Add(parent.Address);
        return Verdict.ParentCutOff;
    }

    /// <summary>
    /// A peer says one of its children is slow. Only a parent of that child in the plan is heard:
    /// a report can demote only a child the reporter serves (see docs/resilience.md on the trust
    /// this still gives a lying parent).
    /// </summary>
    public void OnSlowChildReport(PeerSession reporter, SlowChild report)
    {
        int child = report.ChildId > int.MaxValue ? -1 : (int)report.ChildId;
        bool isParent;
        lock (tracker.Gate)
            isParent = child > 0 && tracker.Planner.Contains(child) && Enumerable.Range(0, options.ShardCount).Any(s => tracker.Planner.ParentOf(child, s) == reporter.Id);
        if (!isParent)
        {
            SlowChildLog.ReportIgnored(log, reporter.Id, child);
            return;
        }
        Demote(child, $"its parent, peer {reporter.Id}, found its oldest queued chunk {report.QueueAgeMs / 1000.0:0.0} s old");
    }

    /// <summary>Makes a peer a leaf everywhere (budget 0) and sends the moves that re-place its children.</summary>
    public void Demote(int id, string why)
    {
        int moves;
        lock (tracker.Gate)
        {
            var planner = tracker.Planner;
            if (!tracker.Peers.ContainsKey(id) || !planner.Contains(id) || planner.Budget(id) == 0) return;
            long now = time.GetTimestamp();
            if (_lastDemotion != 0 && time.GetElapsedTime(_lastDemotion, now) < options.DemotionSpacing)
            {
                SlowChildLog.DemotionSpaced(log, id, why, options.DemotionSpacing.TotalSeconds);
                return;
            }
            if (!planner.CanDemoteWithoutEviction(id))
            {
                // Evicting others to make room would cost more than a slow relay (and a busy
                // machine can make healthy relays look slow): the peer keeps its place.
                SlowChildLog.NotDemoted(log, id, why);
                return;
            }
            var plan = planner.Demote(id);
            _lastDemotion = now;
            tracker.SendMoves(plan);
            moves = plan.Count;
        }
        SlowChildLog.Demoted(log, id, why, moves);
    }
}

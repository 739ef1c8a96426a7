using ShardStream.Topology;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// The check of a peer's claimed coordinate by what its children measured to it (docs/security.md,
/// "Lies about RTTs and coordinates"): <see cref="Agreeing"/> checks a claim's distance to the
/// coordinator; this, its direction. It costs nothing on the wire (the children's heartbeats carry
/// their parent RTTs anyway) and, per heartbeat, one estimate per witness kept of each parent reported.
/// </summary>
public sealed partial class Coordinator
{
    /// <summary>Fits the held coordinates of contradicted peers (its own seed: the one random draw, a direction when two points coincide).</summary>
    private readonly Vivaldi _witnessFit = new(1);

    /// <summary>
    /// A peer's heartbeat reported <paramref name="parents"/>: each entry about a peer that was its
    /// parent in the plan, with at least <see cref="Planner.ImproveMinSamples"/> samples, is kept as
    /// that parent's witness (its least RTT), and the parent's coordinate in the plan held again.
    /// </summary>
    private void NoteWitnesses(PeerSession session, ParentRtt[] parents)
    {
        if (!_tracker.Planner.LatencyAware) return;
        lock (_tracker.Gate)
        {
            if (!_tracker.Peers.TryGetValue(session.Id, out var current) || current != session) return;
            foreach (var r in parents)
            {
                if (r.NodeId is 0 or > int.MaxValue || r.Samples < Planner.ImproveMinSamples || !session.WasPlannedParent(r.NodeId)) continue;
                if (!_tracker.Peers.TryGetValue((int)r.NodeId, out var parent) || !_tracker.Planner.Contains(parent.Id) || parent.Claim.Error >= 1) continue;
                parent.Witnesses.Note(session.Id, r.MinMicros / 1000.0);
                var held = Witnessed(parent);
                if (held != _tracker.Planner.CoordinateOf(parent.Id)) _tracker.Planner.SetCoordinate(parent.Id, held);
            }
        }
    }

    /// <summary>
    /// The coordinate the plan holds for <paramref name="session"/>'s peer: its <see cref="PeerSession.Claim"/>,
    /// or, once at least two of its witnesses measured it more than twice as far as the claim says
    /// and by more than <see cref="CoordinateWitnesses.SlackMs"/>, where their RTTs and the
    /// coordinator's put it, until none does or only one does and no other bears it out
    /// (<see cref="CoordinateWitnesses.Hold"/>; debug event 1688 when that starts, 1689 when it
    /// ends). Under the coordinator's lock.
    /// </summary>
    private NetworkCoordinate Witnessed(PeerSession session)
    {
        bool wasHeld = session.Witnesses.Held;
        var held = session.Witnesses.Hold(session.Claim, session.ClaimCheckedMs, WitnessCoordinate, _witnessFit, out var contradiction);
        if (session.Witnesses.Held == wasHeld) return held;
        if (session.Witnesses.Held)
        {
            _witnessHolds++;
            CoordinatorLog.CoordinateContradicted(Log, session.Id, contradiction.EstimatedMs, contradiction.Witness, contradiction.MeasuredMs, contradiction.Count,
                held.EstimateRtt(WitnessCoordinate(contradiction.Witness) ?? held));
        }
        else
        {
            CoordinatorLog.CoordinateWitnessed(Log, session.Id, contradiction.Count);
        }
        return held;
    }

    /// <summary>A witness's coordinate in the plan; null when it left the plan or has none.</summary>
    private NetworkCoordinate? WitnessCoordinate(int id) =>
        _tracker.Peers.ContainsKey(id) && _tracker.Planner.Contains(id) && _tracker.Planner.CoordinateOf(id) is { Error: < 1 } at ? at : null;

    private long _witnessHolds;

    /// <summary>Times a peer's claimed coordinate began to be held elsewhere because its witnesses contradict it (debug event 1688), so far.</summary>
    internal long WitnessHolds
    {
        get
        {
            lock (_tracker.Gate) return _witnessHolds;
        }
    }
}

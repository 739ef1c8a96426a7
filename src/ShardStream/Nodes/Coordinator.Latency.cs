using Microsoft.Extensions.Logging;
using ShardStream.Topology;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Latency-aware placement in the coordinator (docs/topology.md, "Latency"): the coordinator is
/// the fixed anchor of the network coordinates; a version-6 joiner that knows no coordinate yet
/// is first sent landmarks to measure; a peer's coordinate, from its Join and then from every
/// heartbeat and pong of its control link, is the one the planner places by.
/// </summary>
public sealed partial class Coordinator
{
    /// <summary>
    /// The coordinator's coordinate: the origin, with a small error so that joiners fit themselves
    /// around it. It never moves, so "the delay from the source" keeps one meaning.
    /// </summary>
    internal static readonly NetworkCoordinate Anchor = new(0, 0, Vivaldi.MinHeight, 0.2);

    /// <summary>Nodes (the coordinator and landmark peers) a joiner measures before it joins: at most this many.</summary>
    public const int MaxLandmarks = 8;

    private protected override bool FixedCoordinate => true;

    /// <summary>The smoothed RTT (RFC 6298) of peer <paramref name="id"/>'s control link, once measured (version 6).</summary>
    public TimeSpan? ControlRtt(int id)
    {
        Link control;
        lock (_gate)
        {
            if (!_peers.TryGetValue(id, out var session)) return null;
            control = session.Control;
        }
        return control.SmoothedRtt;
    }

    /// <summary>
    /// The smoothed RTT of every peer's control link that has one: the links taken in one pass under
    /// the coordinator's lock (not one lock a peer, as <see cref="ControlRtt"/> for each would), for the page.
    /// </summary>
    public Dictionary<int, TimeSpan> ControlRtts()
    {
        List<(int Id, Link Control)> links;
        lock (_gate)
        {
            links = new List<(int, Link)>(_peers.Count);
            foreach (var (id, session) in _peers) links.Add((id, session.Control));
        }
        var rtts = new Dictionary<int, TimeSpan>(links.Count);
        foreach (var (id, control) in links)
            if (control.SmoothedRtt is { } rtt) rtts[id] = rtt;
        return rtts;
    }

    /// <summary>The plan places by latency (<see cref="CoordinatorOptions.LatencyAware"/>).</summary>
    public bool LatencyAware => _planner.LatencyAware;

    private protected override void OnRemoteCoordinate(Link link, WireCoordinate remote)
    {
        if (link.Role is not ControlRole { Session: var session } || session.Control != link) return;
        lock (_gate)
            if (_peers.ContainsKey(session.Id) && _planner.Contains(session.Id)) _planner.SetCoordinate(session.Id, FromWire(remote));
    }

    /// <summary>Most RTTs a joiner measures before it is placed (landmarks and candidate parents together).</summary>
    public const int MaxPingsPerJoin = 16;

    /// <summary>Join tokens of joiners sent their candidate parents (so the next Join of each is placed); bounded, oldest forgotten first.</summary>
    private readonly HashSet<ulong> _candidatesSent = [];
    private readonly Queue<ulong> _candidatesOrder = new();
    private const int MaxCandidateTokens = 4096;

    /// <summary>
    /// Before a version-6 joiner is placed by a latency-aware plan, it measures: a Join with no
    /// coordinate is answered with the landmarks (the coordinator first); a Join with a coordinate
    /// is answered once with the parents the plan would most likely give it (<see cref="Planner.ProbeCandidates"/>),
    /// up to <see cref="MaxPingsPerJoin"/> measurements in all. Each answer closes the connection; the
    /// joiner measures and joins again. False when the joiner is to be placed now.
    /// </summary>
    private async Task<bool> SendLandmarksAsync(Link link, Hello hello)
    {
        if (!_planner.LatencyAware || hello.MaxVersion < Protocol.PingVersion || hello.Coordinate is not { } coordinate || hello.Shards.Length > 0) return false;
        Landmark[] landmarks;
        lock (_gate)
        {
            if (coordinate.IsUnknown)
            {
                landmarks = [.. _planner.Landmarks(MaxLandmarks).Select(LandmarkOf).Where(l => l.Address is not null)];
            }
            else
            {
                if (hello.PeerId == 0 || _candidatesSent.Contains(hello.PeerId)) return false;
                var measured = (hello.Measured ?? []).Select(m => m.NodeId).ToHashSet();
                int room = MaxPingsPerJoin - measured.Count;
                landmarks = room <= 0 ? [] : [.. _planner.ProbeCandidates(FromWire(coordinate), room).Where(id => !measured.Contains((ulong)id)).Select(LandmarkOf).Where(l => l.Address is not null)];
                if (landmarks.Length == 0) return false;
                _candidatesSent.Add(hello.PeerId);
                _candidatesOrder.Enqueue(hello.PeerId);
                if (_candidatesOrder.Count > MaxCandidateTokens) _candidatesSent.Remove(_candidatesOrder.Dequeue());
            }
        }
        if (landmarks.Length == 0) return false;
        CoordinatorLog.SendingLandmarks(Log, link.Name, landmarks.Length);
        await link.WriteNowAsync(new Landmarks(landmarks).Write, Stopping).ConfigureAwait(false);
        await link.ShutdownAsync("landmarks sent").ConfigureAwait(false);
        await link.DisposeAsync().ConfigureAwait(false);
        return true;
    }

    /// <summary>Node <paramref name="id"/> as a landmark (the caller holds the gate); its address is null when it is not a live peer.</summary>
    private Landmark LandmarkOf(int id) =>
        id == Planner.Source ? new Landmark(0, "", ToWire(Anchor))
        : _peers.TryGetValue(id, out var peer) ? new Landmark((ulong)id, peer.Address, ToWire(_planner.CoordinateOf(id))) : default;

    /// <summary>
    /// The RTT (ms) the planner is given for a node the joiner could not connect to (an RTT of 0 in
    /// its Join): far worse than any real path, so that the node is its parent only if nothing else is left.
    /// </summary>
    private const double UnreachableRttMs = 60_000;

    /// <summary>Places a joiner by the coordinate and RTTs its Join carries (no coordinate: as a latency-blind plan would). The caller holds the gate.</summary>
    private int JoinPlanner(int budget, Hello hello)
    {
        if (hello.Coordinate is not { IsUnknown: false } c) return _planner.Join(budget);
        _candidatesSent.Remove(hello.PeerId);
        var measured = new Dictionary<int, double>();
        foreach (var m in hello.Measured ?? [])
            if (m.NodeId == 0 || (m.NodeId <= int.MaxValue && _planner.Contains((int)m.NodeId)))
                measured[(int)m.NodeId] = m.RttMicros == 0 ? (m.NodeId == 0 ? measured.GetValueOrDefault(0) : UnreachableRttMs) : m.RttMicros / 1000.0;
        return _planner.Join(budget, FromWire(c), measured);
    }

    /// <summary>
    /// Joiner <paramref name="joiner"/> reports the peers it was asked to measure and could not
    /// connect to (RTT 0 in its Join). Such a report counts like a child that cannot connect
    /// (<see cref="RepairService.UnreachableChildrenBeforeLeaf"/> different peers make a relay a leaf), but only
    /// from a joiner that did reach another peer: one that reached nobody may be the one cut off.
    /// Returns the peers to make leaves now. The caller holds the gate.
    /// </summary>
    private List<PeerSession> NoteUnreachableReports(int joiner, Hello hello)
    {
        var demote = new List<PeerSession>();
        var measured = hello.Measured ?? [];
        if (!measured.Any(m => m.NodeId != 0 && m.RttMicros > 0)) return demote;
        foreach (var m in measured)
        {
            if (m.RttMicros != 0 || m.NodeId == 0 || m.NodeId > int.MaxValue || (int)m.NodeId == joiner) continue;
            if (!_peers.TryGetValue((int)m.NodeId, out var other) || !_planner.Contains(other.Id) || _planner.Budget(other.Id) == 0) continue;
            if (!other.UnreachableBy.Add(joiner)) continue;
            ReachabilityLog.MeasuredUnreachable(Log, joiner, other.Id, other.Address, other.UnreachableBy.Count);
            if (other.UnreachableBy.Count >= RepairService.UnreachableChildrenBeforeLeaf) demote.Add(other);
        }
        return demote;
    }

    /// <summary>
    /// Once a second, moves up to <see cref="CoordinatorOptions.LatencyMovesPerSecond"/> peers whose
    /// estimated delay from the source is much worse than a free slot elsewhere offers
    /// (<see cref="Planner.ImproveLatency"/>): coordinates sharpen with every ping after a join, and
    /// later joiners bring free slots near earlier ones. Each move goes out as a Move frame.
    /// </summary>
    private async Task ImproveLatencyAsync()
    {
        int cap = _options.LatencyMovesPerSecond;
        if (!_planner.LatencyAware || cap <= 0) return;
        try
        {
            while (!Stopping.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), Time, Stopping).ConfigureAwait(false);
                List<Reattachment> moves;
                lock (_gate)
                {
                    moves = [.. _planner.ImproveLatency(cap)];
                    if (moves.Count > 0) SendMoves(moves);
                }
                if (moves.Count > 0)
                {
                    Interlocked.Add(ref _latencyMoves, moves.Count);
                    CoordinatorLog.LatencyMoves(Log, moves.Count, string.Join(", ", moves.Select(m => $"peer {m.Peer} shard {m.Shard} -> {m.NewParent}")));
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }

    private long _latencyMoves;

    /// <summary>(Peer, shard) edges moved so far for a lower delay from the source (<see cref="CoordinatorOptions.LatencyMovesPerSecond"/>).</summary>
    public long LatencyMoves => Interlocked.Read(ref _latencyMoves);
}

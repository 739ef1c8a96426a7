using System.Diagnostics;
using ShardStream.Topology;

namespace ShardStream.Simulation;

/// <summary>
/// What a joining peer does in a simulation with a latency model and a latency-aware planner: it
/// pings the planner's landmarks (the source and up to 11 early peers) and fits its Vivaldi
/// coordinate to those RTTs, pings the parents the planner suggests (at most
/// <see cref="MaxPings"/> pings in all), refits, and joins with its coordinate and the measured
/// RTTs. Every ping is a sample for both ends (the pinged node updates its coordinate too), and
/// so is, once placed, the first heartbeat with each new parent (no extra traffic: heartbeats
/// exist anyway). RTTs come from the model; pure and seeded.
/// </summary>
internal sealed class LatencyJoiner(Planner planner, LatencyModel model, int seed)
{
    /// <summary>Most pings one joining peer sends (issue 12: at most 16).</summary>
    public const int MaxPings = 16;

    /// <summary>
    /// Landmarks pinged first (the source and up to 11 landmark peers; the coordinator's
    /// <c>Coordinator.MaxLandmarks</c>), leaving at least 4 pings for candidate parents. With 8 (7
    /// peers, 8 candidates) the mean RDP at 100k was 4.06 / 3.49 / 4.59 / 3.51 / 4.69 on seeds 1-5,
    /// with 12 3.94 / 3.23 / 3.90 / 3.48 / 4.30: a better fit of the joiner's coordinate matters
    /// more than more candidates measured (docs/topology.md).
    /// </summary>
    public const int LandmarkPings = 12;

    /// <summary>Joins during which the landmarks update their own coordinates from the pings they answer.</summary>
    public const int LandmarkWarmUp = 2000;

    // Passes of the update rule over a joiner's few samples: enough to settle (the error estimate
    // stops falling after about 10).
    private const int FitRounds = 20;

    private readonly Vivaldi _vivaldi = new(seed);
    private readonly Dictionary<int, double> _measured = [];
    private readonly List<NetworkCoordinate> _remotes = [];
    private readonly List<double> _rtts = [];

    /// <summary>Pings sent by all joins so far.</summary>
    public long Pings { get; private set; }

    /// <summary>Most pings any one join sent.</summary>
    public int MaxPingsPerJoin { get; private set; }

    /// <summary>Time spent inside the planner (landmarks, probe candidates, joins), in <see cref="Stopwatch"/> ticks: what the coordinator would spend. Pings and coordinate fits are the joiner's.</summary>
    public long PlannerTicks { get; private set; }

    /// <summary>Joins made (successful or refused).</summary>
    public long Joins { get; private set; }

    /// <summary>Joins a peer with <paramref name="budget"/>; throws <see cref="PlacementException"/> as <see cref="Planner.Join(int)"/> does.</summary>
    public int Join(int budget)
    {
        var id = planner.NextPeerId; // the joiner's node in the model
        _measured.Clear();
        _remotes.Clear();
        _rtts.Clear();
        Joins++;

        var start = Stopwatch.GetTimestamp();
        var landmarks = planner.Landmarks(LandmarkPings);
        PlannerTicks += Stopwatch.GetTimestamp() - start;
        foreach (var node in landmarks)
        {
            Ping(node, id);
        }

        // Start at the nearest landmark (a node one ping away is most likely in the same area):
        // from the origin, a fit to a few far nodes can settle on the wrong side of the plane.
        var start0 = NetworkCoordinate.Unknown;
        var nearest = double.MaxValue;
        for (var i = 0; i < _remotes.Count; i++)
        {
            if (_rtts[i] < nearest && _remotes[i].Error < 1)
            {
                nearest = _rtts[i];
                start0 = _remotes[i] with { Error = 1 };
            }
        }

        var coordinate = _vivaldi.Fit(start0, [.. _remotes], [.. _rtts], FitRounds);
        // The landmarks learn from the joiners' pings while the overlay is young; after that they
        // stay put, as the frame everyone else is fitted in: a frame that keeps moving leaves the
        // coordinates fitted long ago behind (measured: a median error of 0.63 at 1M peers).
        if (Joins <= LandmarkWarmUp)
        {
            foreach (var node in landmarks)
            {
                planner.SetCoordinate(node, _vivaldi.Update(planner.CoordinateOf(node), coordinate, _measured[node]));
            }
        }

        start = Stopwatch.GetTimestamp();

        var probes = planner.ProbeCandidates(coordinate, MaxPings - _measured.Count);
        PlannerTicks += Stopwatch.GetTimestamp() - start;
        var before = _remotes.Count;
        foreach (var node in probes)
        {
            if (!_measured.ContainsKey(node))
            {
                Ping(node, id);
            }
        }

        if (_remotes.Count > before)
        {
            coordinate = _vivaldi.Fit(coordinate, [.. _remotes], [.. _rtts], FitRounds / 2);
        }

        MaxPingsPerJoin = Math.Max(MaxPingsPerJoin, _measured.Count);
        start = Stopwatch.GetTimestamp();
        int joined;
        try
        {
            joined = planner.Join(budget, coordinate, _measured);
        }
        finally
        {
            PlannerTicks += Stopwatch.GetTimestamp() - start;
        }

        // The first heartbeat with each parent: a sample for both ends.
        for (var s = 0; s < planner.ShardCount; s++)
        {
            var parent = planner.ParentOf(joined, s);
            var rtt = model.RttMs(parent, joined);
            var mine = planner.CoordinateOf(joined);
            var theirs = planner.CoordinateOf(parent);
            planner.SetCoordinate(joined, _vivaldi.Update(mine, theirs, rtt));
            planner.SetCoordinate(parent, _vivaldi.Update(theirs, mine, rtt));
        }

        return joined;
    }

    private void Ping(int node, int joiner)
    {
        var rtt = model.RttMs(node, joiner);
        _measured[node] = rtt;
        _remotes.Add(planner.CoordinateOf(node));
        _rtts.Add(rtt);
        Pings++;
    }
}

using ShardStream.Topology;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// This node's network coordinate (Vivaldi, docs/topology.md): every RTT a version-6 link measures
/// moves it towards agreement with the coordinate the other side answered with. The coordinator's
/// stays fixed (see <see cref="Coordinator"/>): it is the anchor every peer's coordinate is
/// measured from, so that the planner's estimates of delay from the source stay where it is.
/// </summary>
public abstract partial class Node
{
    private readonly Lock _coordinateGate = new();
    private readonly Vivaldi _vivaldi = new(Environment.TickCount);
    private NetworkCoordinate _coordinate = NetworkCoordinate.Unknown;

    /// <summary>Where the coordinator is and the least RTT this peer's control link measured to it (none before a sample).</summary>
    private (NetworkCoordinate At, double LeastMs)? _coordinator;

    /// <summary>
    /// The samples of this joiner's last fit (<see cref="FitCoordinate"/>) and which of them is the
    /// coordinator's, kept while the fit had another node beside the coordinator: a control link's
    /// least RTT well under that sample's fits again from them (<see cref="Refit"/>).
    /// </summary>
    private (List<(WireCoordinate Remote, TimeSpan Rtt)> Samples, int Rounds, int Coordinator)? _fit;

    /// <summary>This node's network coordinate now.</summary>
    public NetworkCoordinate Coordinate
    {
        get
        {
            lock (_coordinateGate) return _coordinate;
        }
        private protected set
        {
            lock (_coordinateGate) _coordinate = value;
        }
    }

    /// <summary>True for a node whose coordinate does not follow its measurements (the coordinator: the anchor).</summary>
    private protected virtual bool FixedCoordinate => false;

    /// <summary>On a link that negotiated <paramref name="version"/>: measure its RTT when it speaks version 6.</summary>
    private protected void MeasureRtt(Link link, ushort version)
    {
        if (version < Protocol.PingVersion) return;
        link.EnablePings(() => ToWire(Coordinate), OnRttSample);
        link.CoordinateHeard = OnRemoteCoordinate;
    }

    private void OnRttSample(Link link, TimeSpan rtt, WireCoordinate remote)
    {
        if (remote.IsUnknown) return;
        OnRemoteCoordinate(link, remote);
        if (FixedCoordinate) return;
        var at = FromWire(remote);
        var measured = link.Role is CoordinatorRole ? link.RttSnapshot() : null;
        (double FromMs, NetworkCoordinate Before, NetworkCoordinate After)? refitted = null;
        lock (_coordinateGate)
        {
            // On a peer's control link the other side is the coordinator, which holds this peer's
            // claim against the least RTT it measures (Coordinator.Agreeing): the peer holds its
            // coordinate within that rule by the least RTT it measures itself, after every sample
            // of every link, since its parents' and children's samples move it too (Vivaldi.HoldSource).
            if (measured is { } m) _coordinator = (at, m.Min.TotalMilliseconds);
            // A sample of another node (a parent or a child other than the coordinator) moves the
            // coordinate off the line the join's fit left it on, with what is measured now: from
            // then on a fit again from the join's samples would throw that away, so none is made.
            if (RemoteIdOf(link) != CoordinatorRole.ParentId) _fit = null;
            _coordinate = Held(_vivaldi.Update(_coordinate, at, rtt.TotalMilliseconds));
            if (measured is { Samples: >= Coordinator.SourceRttSamples } enough) refitted = Refit(enough.Min);
        }
        if (refitted is var (fromMs, before, after) && measured is var (_, _, least, samples))
            PeerLog.Refitted(Log, fromMs, least.TotalMilliseconds, samples, before.X, before.Y, before.Height, after.X, after.Y, after.Height, after.Error);
    }

    /// <summary>
    /// From the control link's <see cref="Coordinator.SourceRttSamples"/>th sample on, whenever its
    /// <paramref name="least"/> RTT is under <see cref="Vivaldi.SourceFloor"/> of the RTT to the
    /// coordinator the last fit took, and more than <see cref="Coordinator.CoordinateSlackMs"/>
    /// under it, and no other link's sample has moved the coordinate since the join: the fit again,
    /// from the same samples with the least RTT for the coordinator's, starting from the nearest of
    /// them as the join's first round does (under the coordinate's gate; null when there is nothing
    /// to do). A joiner's RTT to the coordinator is its one wait for the
    /// Landmarks answer, which holds the coordinator's work and any stall of either process (the
    /// coordinator does not keep it either: docs/topology.md). The fit sets the joiner's direction
    /// from the coordinator, and a peer that measures only the coordinator afterwards (a leaf fed by
    /// it) never sets it again: each of its pings moves it along the line from the anchor.
    /// LyingRttTests on a loaded host: p2, 100 ms from the coordinator and 200 from p1, waited longer
    /// for the answer than for p1's probe, so its fit started on p1's point and stayed on the line
    /// through the coordinator and p1; its pings then brought it next to p1, sure of it, for good.
    /// </summary>
    private (double FromMs, NetworkCoordinate Before, NetworkCoordinate After)? Refit(TimeSpan least)
    {
        if (_fit is not var (samples, rounds, coordinator)) return null;
        var (remote, took) = samples[coordinator];
        // Nearer than that the two are samples of one path (a timer's grain, a LAN): a refit would
        // only draw its direction again.
        if (least >= took * Vivaldi.SourceFloor || (took - least).TotalMilliseconds <= Coordinator.CoordinateSlackMs) return null;
        samples[coordinator] = (remote, least);
        var before = _coordinate;
        _coordinate = Fitted(samples, rounds, FromWire(samples.MinBy(s => s.Rtt).Remote) with { Error = 1 });
        return (took.TotalMilliseconds, before, _coordinate);
    }

    /// <summary><paramref name="fitted"/> as <see cref="Vivaldi.HoldSource"/> leaves it by what this peer measured to the coordinator, if anything yet. Under the coordinate's gate.</summary>
    private NetworkCoordinate Held(NetworkCoordinate fitted) =>
        _coordinator is var (at, least) ? _vivaldi.HoldSource(fitted, at, least) : fitted;

    /// <summary>The other side of <paramref name="link"/> says it is at <paramref name="remote"/> (a pong or a heartbeat).</summary>
    private protected virtual void OnRemoteCoordinate(Link link, WireCoordinate remote)
    {
    }

    /// <summary>
    /// Fits this node's coordinate to RTTs it measured to nodes at known coordinates (a joiner's
    /// landmarks); <paramref name="coordinator"/>, this joiner's RTT to the coordinator when it has
    /// one (its coordinate among the samples too), is held as <see cref="Vivaldi.HoldSource"/> says,
    /// now and after every RTT sample until the control link has measured its own.
    /// </summary>
    private protected void FitCoordinate(IReadOnlyList<(WireCoordinate Remote, TimeSpan Rtt)> samples, int rounds, (WireCoordinate Remote, TimeSpan Rtt)? coordinator)
    {
        var known = samples.Where(s => !s.Remote.IsUnknown && s.Rtt > TimeSpan.Zero).ToList();
        if (known.Count == 0) return;
        lock (_coordinateGate)
        {
            // A node that knows nothing starts at its nearest landmark (a node one short ping away is
            // most likely in the same area): from the origin, a fit to a few far nodes can settle on
            // the wrong side of the plane.
            var start = _coordinate.Error < 1 ? _coordinate : FromWire(known.MinBy(s => s.Rtt).Remote) with { Error = 1 };
            _fit = null;
            // Held by it from now on, until the control link measures its own (OnRttSample).
            if (coordinator is { Remote.IsUnknown: false, Rtt: var rtt, Remote: var at } c && rtt > TimeSpan.Zero)
            {
                _coordinator = (FromWire(at), rtt.TotalMilliseconds);
                // Fitted to the coordinator alone, the direction is the seed's: nothing to set right.
                if (known.Count > 1 && known.IndexOf(c) is >= 0 and var i) _fit = (known, rounds, i);
            }
            _coordinate = Fitted(known, rounds, start);
        }
    }

    /// <summary><see cref="Vivaldi.Fit"/> of <paramref name="known"/> from <paramref name="start"/>, held (<see cref="Held"/>) and with an error under 1. Under the coordinate's gate.</summary>
    private NetworkCoordinate Fitted(List<(WireCoordinate Remote, TimeSpan Rtt)> known, int rounds, NetworkCoordinate start)
    {
        var fitted = Held(_vivaldi.Fit(start, known.Select(s => FromWire(s.Remote)).ToArray(), known.Select(s => s.Rtt.TotalMilliseconds).ToArray(), rounds));
        // Measured: known, however unsure (an error of 1 would read as "knows nothing").
        return fitted with { Error = Math.Min(fitted.Error, 0.95) };
    }

    /// <summary>The round-trip times this node measured on its open links (those with at least one sample).</summary>
    public IReadOnlyList<LinkRtt> LinkRtts()
    {
        var result = new List<LinkRtt>();
        foreach (var link in _links.Keys)
        {
            if (link.RttSnapshot() is not { } rtt) continue;
            result.Add(new LinkRtt(RemoteIdOf(link), link.Name, rtt.Smoothed, rtt.Variation, rtt.Min, rtt.Samples));
        }
        return result;
    }

    /// <summary>
    /// The round-trip times this node measured on its links to its parents (one per parent, the
    /// link with the most samples; the coordinator's control link not counted: it measures that
    /// one itself): what a peer's control-link heartbeats report (version 11).
    /// </summary>
    public IReadOnlyList<LinkRtt> ParentRttReport()
    {
        var result = new List<LinkRtt>();
        foreach (var link in _links.Keys)
        {
            if (link.Role is not ParentRole { ParentId: var parent } || link.RttSnapshot() is not { } rtt) continue;
            var at = result.FindIndex(r => r.RemoteId == parent);
            if (at >= 0 && result[at].Samples >= rtt.Samples) continue;
            var entry = new LinkRtt(parent, link.Name, rtt.Smoothed, rtt.Variation, rtt.Min, rtt.Samples);
            if (at >= 0) result[at] = entry;
            else result.Add(entry);
        }
        return result;
    }

    /// <summary><see cref="ParentRttReport"/> as a heartbeat carries it (at most <see cref="Protocol.MaxShards"/> parents).</summary>
    private protected ParentRtt[] ParentRttsToSend()
    {
        var report = ParentRttReport();
        var result = new ParentRtt[Math.Min(report.Count, Protocol.MaxShards)];
        for (int i = 0; i < result.Length; i++)
        {
            var r = report[i];
            result[i] = new ParentRtt((ulong)r.RemoteId, Micros(r.Smoothed), Micros(r.Min), (ushort)Math.Min(r.Samples, ushort.MaxValue));
        }
        return result;

        static uint Micros(TimeSpan t) => (uint)Math.Clamp(t.TotalMicroseconds, 1, uint.MaxValue);
    }

    /// <summary>The node on the other side of <paramref name="link"/>: a parent, the coordinator (0), a child or a peer of the coordinator; -1 when unknown.</summary>
    private int RemoteIdOf(Link link) => link.Role switch
    {
        ParentRole parent => parent.ParentId,
        CoordinatorRole => CoordinatorRole.ParentId,
        _ => ChildIdOf(link),
    };

    internal static WireCoordinate ToWire(NetworkCoordinate c) => new((float)c.X, (float)c.Y, (float)c.Height, (float)Math.Clamp(c.Error, 0, 1));

    internal static NetworkCoordinate FromWire(WireCoordinate c) => new(c.X, c.Y, Math.Max(c.Height, Vivaldi.MinHeight), c.Error);
}

/// <summary>
/// The RTT of one link as this node measured it (RFC 6298 estimates over version-6 pings).
/// </summary>
/// <param name="RemoteId">The node on the other side (0 = the coordinator; -1 when unknown, e.g. a link still joining).</param>
/// <param name="Link">The link's name in logs ("coordinator", "parent 3 (…)", "child 7 (…)", "peer 7 (…)").</param>
/// <param name="Smoothed">SRTT.</param>
/// <param name="Variation">RTTVAR.</param>
/// <param name="Min">The least sample.</param>
/// <param name="Samples">Samples taken.</param>
public sealed record LinkRtt(int RemoteId, string Link, TimeSpan Smoothed, TimeSpan Variation, TimeSpan Min, int Samples);

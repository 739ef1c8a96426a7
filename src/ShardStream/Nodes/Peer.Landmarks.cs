using Microsoft.Extensions.Logging;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A joiner's first measurements (docs/protocol.md, Landmarks): a latency-aware coordinator
/// answers a Join that carries no coordinate with a few landmarks. The joiner takes the time its
/// Hello took to be answered as its RTT to the coordinator, measures each landmark peer with a
/// reachability probe (Hello of role Probe, answered by a Welcome: one round trip after the
/// connection is open), fits its coordinate to those RTTs (Vivaldi) and joins again with it.
/// </summary>
public sealed partial class Peer
{
    /// <summary>Rounds of the Vivaldi update over the landmark samples (the landmarks stay where they are).</summary>
    private const int LandmarkFitRounds = 20;

    /// <summary>What this joiner measured so far: node id to (its coordinate, the RTT).</summary>
    private readonly Dictionary<ulong, (WireCoordinate Coordinate, TimeSpan Rtt)> _measured = [];

    /// <summary>Nodes this joiner was asked to measure and could not connect to within the round's time (reported with an RTT of 0).</summary>
    private readonly HashSet<ulong> _unreachable = [];

    /// <summary>
    /// Nodes this joiner connected to that did not answer its probe with a Welcome within the round's
    /// time. Reported with the round's whole time (<see cref="PeerOptions.MeasureTimeout"/>) as their
    /// RTT: a node that does not answer is not measured, and left out of the Join the coordinator
    /// would take its claimed coordinate for the edge (docs/security.md, "Lies about RTTs and coordinates").
    /// </summary>
    private readonly HashSet<ulong> _unanswered = [];

    /// <summary>The RTTs measured for the Join's <see cref="Hello.Measured"/>, then the nodes not reached (RTT 0), then those that did not answer (the round's time); null when none.</summary>
    private MeasuredRtt[]? MeasuredRtts() => _measured.Count + _unreachable.Count + _unanswered.Count == 0 ? null
        : [.. _measured.Select(m => new MeasuredRtt(m.Key, Micros(m.Value.Rtt)))
            .Concat(_unreachable.Where(id => !_measured.ContainsKey(id)).Select(id => new MeasuredRtt(id, 0)))
            .Concat(_unanswered.Where(id => !_measured.ContainsKey(id) && !_unreachable.Contains(id)).Select(id => new MeasuredRtt(id, Micros(_options.MeasureTimeout))))
            .Take(Protocol.MaxShards)];

    private static uint Micros(TimeSpan rtt) => (uint)Math.Clamp(rtt.TotalMicroseconds, 1, uint.MaxValue);

    /// <summary>
    /// Measures the nodes of one Landmarks frame, all at once and within
    /// <see cref="PeerOptions.MeasureTimeout"/> in all (connects included): a node that has not
    /// answered by then is left out, so a joiner waits that long at most per round, whatever it
    /// cannot reach.
    /// </summary>
    private async Task MeasureLandmarksAsync(Landmarks landmarks, TimeSpan coordinatorRtt, CancellationToken cancellationToken)
    {
        using var round = new CancellationTokenSource(_options.MeasureTimeout, Time);
        using var within = CancellationTokenSource.CreateLinkedTokenSource(round.Token, cancellationToken);
        var probes = landmarks.Nodes.Select(async node =>
        {
            if (node.Id == 0) return (node.Coordinate, Rtt: coordinatorRtt, Connected: true);
            var (rtt, connected) = await ProbeRttAsync(node.Address, within.Token, cancellationToken).ConfigureAwait(false);
            return (node.Coordinate, Rtt: rtt, Connected: connected);
        });
        var results = await Task.WhenAll(probes).ConfigureAwait(false);
        int answered = 0;
        for (int i = 0; i < results.Length; i++)
        {
            if (!results[i].Connected) _unreachable.Add(landmarks.Nodes[i].Id);
            else if (results[i].Rtt <= TimeSpan.Zero) _unanswered.Add(landmarks.Nodes[i].Id);
            if (results[i].Rtt <= TimeSpan.Zero) continue;
            _measured[landmarks.Nodes[i].Id] = (results[i].Coordinate, results[i].Rtt);
            answered++;
        }
        var samples = _measured.Values.ToList();
        FitCoordinate(samples, LandmarkFitRounds, _measured.TryGetValue(0, out var coordinator) ? coordinator : null);
        var c = Coordinate;
        PeerLog.LandmarksMeasured(Log,
            answered, landmarks.Nodes.Length, samples.Count, coordinatorRtt.TotalMilliseconds, c.X, c.Y, c.Height, c.Error);
    }

    /// <summary>
    /// The RTT of one probe to <paramref name="address"/> (hello written to welcome read), zero when
    /// it did not answer before <paramref name="within"/> ended; Connected is false when not even
    /// the connection was made (refused, or no answer in time: a firewall, a NAT, a wrong address).
    /// Only the time is taken: the probe carries no nonce, so it asks for no proof of the node's
    /// join token (this joiner knows no token to check one against; the coordinator's dial-back,
    /// <see cref="ReachabilityProbe"/>, asks with a fresh nonce and checks it), and a node of this
    /// build answers it with none (<see cref="Trust.ProbeProof.Answer"/>).
    /// </summary>
    private async Task<(TimeSpan Rtt, bool Connected)> ProbeRttAsync(string address, CancellationToken within, CancellationToken cancellationToken)
    {
        Link? link = null;
        try
        {
            link = NewLink(await Transport.ConnectAsync(address, within).ConfigureAwait(false), $"landmark {address}");
            long sent = Time.GetTimestamp();
            await link.WriteNowAsync(new Hello(Protocol.ProbeVersion, Protocol.Version, HelloRole.Probe, 0, 0, [], AdvertisedAddress).Write, within).ConfigureAwait(false);
            var (type, _) = await link.ReadOneAsync(within).ConfigureAwait(false);
            var rtt = Time.GetElapsedTime(sent);
            return (type == FrameType.Welcome ? rtt : TimeSpan.Zero, true);
        }
        catch (Exception e) when (e is ConnectionFailedException or ProtocolException or IOException or System.Net.Sockets.SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            string reason = e is OperationCanceledException ? $"no answer within {_options.MeasureTimeout.TotalSeconds:0.#} s" : e.Message;
            PeerLog.LandmarkNotMeasured(Log, address, link is null ? $"cannot connect: {reason}" : reason);
            return (TimeSpan.Zero, link is not null);
        }
        finally
        {
            if (link is not null) await link.DisposeAsync().ConfigureAwait(false);
        }
    }
}

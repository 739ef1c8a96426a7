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

    /// <summary>Landmarks frames a joiner follows: the landmarks, then the candidate parents.</summary>
    private const int MaxMeasuringRounds = 2;

    /// <summary>What this joiner measured so far: node id to (its coordinate, the RTT).</summary>
    private readonly Dictionary<ulong, (WireCoordinate Coordinate, TimeSpan Rtt)> _measured = [];

    /// <summary>The RTTs measured for the Join's <see cref="Hello.Measured"/>; null when none.</summary>
    private MeasuredRtt[]? MeasuredRtts() => _measured.Count == 0 ? null
        : [.. _measured.Take(Protocol.MaxShards).Select(m => new MeasuredRtt(m.Key, (uint)Math.Clamp(m.Value.Rtt.TotalMicroseconds, 1, uint.MaxValue)))];

    private async Task MeasureLandmarksAsync(Landmarks landmarks, TimeSpan coordinatorRtt, CancellationToken cancellationToken)
    {
        var probes = landmarks.Nodes.Select(async node =>
        {
            if (node.Id == 0) return (node.Coordinate, coordinatorRtt);
            return (node.Coordinate, await ProbeRttAsync(node.Address, cancellationToken).ConfigureAwait(false));
        });
        var results = await Task.WhenAll(probes).ConfigureAwait(false);
        int answered = 0;
        for (int i = 0; i < results.Length; i++)
        {
            if (results[i].Item2 <= TimeSpan.Zero) continue;
            _measured[landmarks.Nodes[i].Id] = results[i];
            answered++;
        }
        var samples = _measured.Values.ToList();
        FitCoordinate(samples, LandmarkFitRounds);
        var c = Coordinate;
        PeerLog.LandmarksMeasured(Log,
            answered, landmarks.Nodes.Length, samples.Count, coordinatorRtt.TotalMilliseconds, c.X, c.Y, c.Height, c.Error);
    }

    /// <summary>The RTT of one probe to <paramref name="address"/> (hello written to welcome read); zero when it did not answer in time.</summary>
    private async Task<TimeSpan> ProbeRttAsync(string address, CancellationToken cancellationToken)
    {
        Link? link = null;
        try
        {
            link = NewLink(await ConnectWithinAsync(address, _options.ConnectTimeout, cancellationToken).ConfigureAwait(false), $"landmark {address}");
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_options.HeartbeatTimeout);
            long sent = Time.GetTimestamp();
            await link.WriteNowAsync(new Hello(Protocol.ProbeVersion, Protocol.Version, HelloRole.Probe, 0, 0, [], AdvertisedAddress).Write, timeout.Token).ConfigureAwait(false);
            var (type, _) = await link.ReadOneAsync(timeout.Token).ConfigureAwait(false);
            var rtt = Time.GetElapsedTime(sent);
            return type == FrameType.Welcome ? rtt : TimeSpan.Zero;
        }
        catch (Exception e) when (e is ConnectionFailedException or ProtocolException or IOException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            PeerLog.LandmarkNotMeasured(Log, address, e.Message);
            return TimeSpan.Zero;
        }
        finally
        {
            if (link is not null) await link.DisposeAsync().ConfigureAwait(false);
        }
    }
}

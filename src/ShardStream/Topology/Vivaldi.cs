namespace ShardStream.Topology;

/// <summary>
/// The Vivaldi update rule with a height vector and an adaptive timestep (Dabek et al., SIGCOMM
/// 2004, sections 3 and 4): after measuring <c>rtt</c> to a remote node, a node moves its
/// coordinate along the line to the remote's by a fraction of the difference between the measured
/// and the estimated RTT, weighted by how sure it is of its own coordinate against the remote's.
/// Pure and deterministic: the only randomness (a direction when two nodes sit on the same point)
/// comes from the seed.
/// </summary>
public sealed class Vivaldi(int seed)
{
    /// <summary>c_c of the paper: the fraction of the way a fully unsure node moves (0.25).</summary>
    public const double MoveFactor = 0.25;

    /// <summary>c_e of the paper: how fast the error estimate follows the sample errors (0.25).</summary>
    public const double ErrorFactor = 0.25;

    /// <summary>The least height (ms): a height of exactly 0 on both sides could never grow again.</summary>
    public const double MinHeight = 0.1;

    private readonly Random _random = new(seed);

    /// <summary>
    /// The coordinate of a node at <paramref name="local"/> after it measured <paramref name="rttMs"/>
    /// to a node at <paramref name="remote"/>. Samples that are not positive and finite are ignored.
    /// </summary>
    public NetworkCoordinate Update(NetworkCoordinate local, NetworkCoordinate remote, double rttMs)
    {
        if (!(rttMs > 0) || double.IsInfinity(rttMs))
        {
            return local;
        }

        var localError = Math.Max(local.Error, 1e-6);
        var remoteError = Math.Max(remote.Error, 1e-6);
        var weight = localError / (localError + remoteError);
        var estimate = local.EstimateRtt(remote);
        var sampleError = Math.Abs(estimate - rttMs) / rttMs;
        var error = Math.Min(1.0, (sampleError * ErrorFactor * weight) + (localError * (1 - (ErrorFactor * weight))));
        var step = MoveFactor * weight * (rttMs - estimate);

        // Unit vector from remote to local in the plane-plus-height space: [x_i - x_j, h_i + h_j].
        var (dx, dy, plane) = Away(local, remote);

        var heights = local.Height + remote.Height;
        var norm = plane + heights;
        var x = local.X + (step * dx / norm);
        var y = local.Y + (step * dy / norm);
        var height = Math.Max(MinHeight, local.Height + (step * heights / norm));

        return new NetworkCoordinate(x, y, height, error);
    }

    /// <summary>
    /// The direction from <paramref name="remote"/> to <paramref name="local"/> in the plane, as a
    /// vector and its length; on the same point any direction will do, drawn from the seed (the
    /// paper's random unit vector), of length 1.
    /// </summary>
    private (double Dx, double Dy, double Plane) Away(NetworkCoordinate local, NetworkCoordinate remote)
    {
        var dx = local.X - remote.X;
        var dy = local.Y - remote.Y;
        var plane = Math.Sqrt((dx * dx) + (dy * dy));
        if (plane >= 1e-9)
        {
            return (dx, dy, plane);
        }

        var angle = _random.NextDouble() * 2 * Math.PI;
        return (Math.Cos(angle), Math.Sin(angle), 1);
    }

    /// <summary>
    /// Below this fraction of a joiner's measured RTT to the source, its fitted estimate of that RTT
    /// is not kept (<see cref="HoldSource"/>). The coordinator takes a claim under half its own
    /// sample for a lie (Coordinator.Understates); three quarters leaves room between the two
    /// samples of one path (the joiner's includes the coordinator's answer; a virtual network's
    /// timers may end a delay a few ms early).
    /// </summary>
    public const double SourceFloor = 0.75;

    /// <summary>
    /// A joiner's <paramref name="fitted"/> coordinate, or, when it puts the joiner nearer the source
    /// at <paramref name="source"/> than <see cref="SourceFloor"/> of the <paramref name="rttMs"/> it
    /// measured, the point nearest it at <paramref name="rttMs"/> (<see cref="Pin"/>). The source's is
    /// the one coordinate that is not an estimate; a few landmarks whose own coordinates are young
    /// can pull a fit far from it (LatencyOverlayTests, seed 11, a CI run: 10 joiners of 100 claimed a
    /// third of their RTT, 59 ms against 190 ms). Fits that agree with it are left as they are: held
    /// at its RTT in every round, a joiner fits the landmarks worse (simulator, 20k peers, seeds
    /// 1-3: coordinate median error 0.084 / 0.087 / 0.110 against 0.086 / 0.072 / 0.079). The
    /// simulator's joiner does not call this: it has no coordinator that checks its claim, and the
    /// correction gave it nothing (mean RDP at 20k, seeds 1-7: 36.2 in sum with it, 35.7 without).
    /// </summary>
    public NetworkCoordinate HoldSource(NetworkCoordinate fitted, NetworkCoordinate source, double rttMs) =>
        fitted.EstimateRtt(source) < rttMs * SourceFloor ? Pin(fitted, source, rttMs) : fitted;

    /// <summary>
    /// The point nearest <paramref name="local"/> whose estimated RTT to <paramref name="remote"/>
    /// is <paramref name="rttMs"/>: moved along the line from the remote in the plane, its height
    /// kept; when the two heights alone exceed the RTT, it is put on the remote's point in the
    /// plane with the height that is left (at least <see cref="MinHeight"/>). The error estimate is
    /// kept. An RTT that is not positive and finite changes nothing.
    /// </summary>
    public NetworkCoordinate Pin(NetworkCoordinate local, NetworkCoordinate remote, double rttMs)
    {
        if (!(rttMs > 0) || double.IsInfinity(rttMs))
        {
            return local;
        }

        var height = local.Height;
        var distance = rttMs - height - remote.Height;
        if (distance < 0)
        {
            height = Math.Max(MinHeight, rttMs - remote.Height);
            distance = Math.Max(0, rttMs - height - remote.Height);
        }

        var (dx, dy, plane) = Away(local, remote);
        return local with { X = remote.X + (dx / plane * distance), Y = remote.Y + (dy / plane * distance), Height = height };
    }

    /// <summary>
    /// Fits a coordinate for a node that measured <paramref name="rttMs"/>[i] to nodes at
    /// <paramref name="remotes"/>[i], starting from <paramref name="start"/>: the update is applied
    /// over all the samples <paramref name="rounds"/> times (the remotes stay where they are), as a
    /// node would with repeated pings to the same few nodes.
    /// </summary>
    public NetworkCoordinate Fit(NetworkCoordinate start, ReadOnlySpan<NetworkCoordinate> remotes, ReadOnlySpan<double> rttMs, int rounds)
    {
        if (remotes.Length != rttMs.Length)
        {
            throw new ArgumentException("One RTT per remote coordinate.", nameof(rttMs));
        }

        var coordinate = start;
        for (var r = 0; r < rounds; r++)
        {
            for (var i = 0; i < remotes.Length; i++)
            {
                coordinate = Update(coordinate, remotes[i], rttMs[i]);
            }
        }

        return coordinate;
    }
}

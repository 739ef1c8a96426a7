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
        var dx = local.X - remote.X;
        var dy = local.Y - remote.Y;
        var plane = Math.Sqrt((dx * dx) + (dy * dy));
        if (plane < 1e-9)
        {
            // Same point: any direction will do, drawn from the seed (the paper's random unit vector).
            var angle = _random.NextDouble() * 2 * Math.PI;
            dx = Math.Cos(angle);
            dy = Math.Sin(angle);
            plane = 1;
        }

        var heights = local.Height + remote.Height;
        var norm = plane + heights;
        var x = local.X + (step * dx / norm);
        var y = local.Y + (step * dy / norm);
        var height = Math.Max(MinHeight, local.Height + (step * heights / norm));

        return new NetworkCoordinate(x, y, height, error);
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

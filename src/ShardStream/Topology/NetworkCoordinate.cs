namespace ShardStream.Topology;

/// <summary>
/// A Vivaldi network coordinate (Dabek, Cox, Kaashoek, Morris, <i>Vivaldi: A Decentralized Network
/// Coordinate System</i>, SIGCOMM 2004): a point in a 2-D Euclidean plane plus a height, all in
/// milliseconds of round-trip time. The estimated RTT between two nodes is the distance of their
/// points plus both heights: the plane models the wide-area core, the height a node's access link
/// (every packet crosses it twice), which no point in the plane can express.
/// </summary>
/// <param name="X">First plane coordinate (ms).</param>
/// <param name="Y">Second plane coordinate (ms).</param>
/// <param name="Height">Access-link part of every RTT to this node (ms, never negative).</param>
/// <param name="Error">The node's own estimate of its relative error (1 = knows nothing yet).</param>
public readonly record struct NetworkCoordinate(double X, double Y, double Height, double Error = 1.0)
{
    /// <summary>A node that has measured nothing yet: at the origin, with the largest error.</summary>
    public static NetworkCoordinate Unknown => new(0, 0, Vivaldi.MinHeight, 1.0);

    /// <summary>The estimated round-trip time to <paramref name="other"/>, in milliseconds.</summary>
    public double EstimateRtt(NetworkCoordinate other)
    {
        var dx = X - other.X;
        var dy = Y - other.Y;
        return Math.Sqrt((dx * dx) + (dy * dy)) + Height + other.Height;
    }
}

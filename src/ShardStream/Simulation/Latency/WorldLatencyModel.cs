namespace ShardStream.Simulation;

/// <summary>
/// The <c>world</c> latency model: a synthetic Internet of ten regions. Every peer lives in a
/// region (drawn by the regions' shares of Internet users), at a point of a disc around the
/// region's hub, and has an access link (fibre, cable, DSL or mobile). The RTT between two peers
/// of one region is 2 ms plus the distance of their points plus both access delays; between
/// regions it is the RTT between the two hubs plus each peer's distance to its hub plus both access
/// delays. The coordinator is a hosted server (1 ms access) at the hub of a region drawn from the
/// seed. Hub-to-hub RTTs: measured pings where the source table has them, else derived from the
/// great-circle distance (docs/topology.md, "Latency models", gives the figures and sources).
/// </summary>
public sealed class WorldLatencyModel : LatencyModel
{
    /// <summary>The regions: name, hub city, latitude, longitude, share of peers, radius (ms of RTT from hub to edge).</summary>
    internal static readonly (string Name, string Hub, double Lat, double Lon, double Share, double RadiusMs)[] Regions =
    [
        ("Western Europe", "Paris", 48.86, 2.35, 0.10, 15),
        ("Eastern Europe", "Moscow", 55.76, 37.62, 0.05, 25),
        ("North America East", "New York", 40.71, -74.01, 0.07, 20),
        ("North America West", "Fremont", 37.55, -121.99, 0.05, 20),
        ("South America", "Sao Paulo", -23.55, -46.63, 0.10, 25),
        ("East Asia", "Tokyo", 35.68, 139.69, 0.25, 25),
        ("Southeast Asia", "Singapore", 1.35, 103.82, 0.10, 25),
        ("South Asia", "Mumbai", 19.08, 72.88, 0.15, 20),
        ("Oceania", "Sydney", -33.87, 151.21, 0.03, 20),
        ("Africa", "Johannesburg", -26.20, 28.05, 0.10, 30),
    ];

    /// <summary>
    /// Hub pairs with a measured RTT (ms): WonderProxy's ping table between its servers (P.
    /// Reinheimer, "Miles per Millisecond", 2011), both directions averaged.
    /// </summary>
    internal static readonly (int A, int B, double RttMs)[] Measured =
    [
        (0, 1, 56), (0, 2, 78), (0, 3, 176), (0, 8, 347),
        (1, 2, 131), (1, 3, 212), (1, 8, 387),
        (2, 3, 78), (2, 8, 319),
        (3, 8, 188),
    ];

    /// <summary>
    /// RTT per km of great-circle distance for the other hub pairs: light in fibre covers about
    /// 200 km per ms one way (1/100 ms of RTT per km), and the measured pairs above take a median
    /// 1.98 times that (the rule of thumb quoted by Bozkurt et al., "Dissecting Latency in the
    /// Internet's Fiber Infrastructure", 2018, is 2.1).
    /// </summary>
    internal const double RttMsPerKm = 1.98 / 100;

    /// <summary>The least RTT between two peers of one region (a metro network and an exchange).</summary>
    internal const double IntraRegionBaseMs = 2;

    /// <summary>The coordinator's access share of its RTTs: a hosted server.</summary>
    internal const double CoordinatorAccessMs = 1;

    private readonly int _seed;
    private readonly double[,] _hubRtt;
    private readonly double[] _cumulativeShare;
    private readonly int _coordinatorRegion;

    /// <summary>Creates the world of <paramref name="seed"/>.</summary>
    public WorldLatencyModel(int seed)
    {
        _seed = seed;
        var n = Regions.Length;
        _hubRtt = new double[n, n];
        for (var a = 0; a < n; a++)
        {
            for (var b = 0; b < n; b++)
            {
                _hubRtt[a, b] = a == b ? 0 : GreatCircleKm(Regions[a], Regions[b]) * RttMsPerKm;
            }
        }

        foreach (var (a, b, rtt) in Measured)
        {
            _hubRtt[a, b] = rtt;
            _hubRtt[b, a] = rtt;
        }

        _cumulativeShare = new double[n];
        var sum = 0.0;
        for (var r = 0; r < n; r++)
        {
            sum += Regions[r].Share;
            _cumulativeShare[r] = sum;
        }

        _coordinatorRegion = RegionOf(0);
    }

    /// <inheritdoc />
    public override string Description => $"world (10 regions, seed {_seed}, coordinator in {Regions[_coordinatorRegion].Name})";

    /// <summary>The RTT between the hubs of two regions (ms).</summary>
    internal double HubRtt(int a, int b) => _hubRtt[a, b];

    /// <summary>The region of <paramref name="node"/> (drawn from the seed by the regions' shares).</summary>
    public int RegionOf(int node)
    {
        var u = Draw(_seed, node, 1) * _cumulativeShare[^1];
        for (var r = 0; r < _cumulativeShare.Length; r++)
        {
            if (u < _cumulativeShare[r])
            {
                return r;
            }
        }

        return _cumulativeShare.Length - 1;
    }

    /// <summary>The access share of every RTT of <paramref name="node"/> (ms).</summary>
    public double AccessMs(int node) => node == 0 ? CoordinatorAccessMs : AccessRttMs(_seed, node);

    /// <inheritdoc />
    public override double RttMs(int a, int b)
    {
        if (a == b)
        {
            return 0;
        }

        if (a > b)
        {
            (a, b) = (b, a); // the same sum in both directions, to the last bit
        }

        var (ra, xa, ya) = Place(a);
        var (rb, xb, yb) = Place(b);
        var access = AccessMs(a) + AccessMs(b);
        if (ra == rb)
        {
            var dx = xa - xb;
            var dy = ya - yb;
            return IntraRegionBaseMs + Math.Sqrt((dx * dx) + (dy * dy)) + access;
        }

        return _hubRtt[ra, rb] + Math.Sqrt((xa * xa) + (ya * ya)) + Math.Sqrt((xb * xb) + (yb * yb)) + access;
    }

    /// <summary>Region and point (ms from the region's hub, in its plane) of <paramref name="node"/>; the coordinator sits at its hub.</summary>
    internal (int Region, double X, double Y) PointOf(int node) => Place(node);

    /// <summary>Region and point (ms from the hub) of a node: uniform in the region's disc; the coordinator sits at its hub.</summary>
    private (int Region, double X, double Y) Place(int node)
    {
        var region = RegionOf(node);
        if (node == 0)
        {
            return (region, 0, 0);
        }

        var radius = Regions[region].RadiusMs * Math.Sqrt(Draw(_seed, node, 2));
        var angle = 2 * Math.PI * Draw(_seed, node, 3);
        return (region, radius * Math.Cos(angle), radius * Math.Sin(angle));
    }

    private static double GreatCircleKm(
        (string Name, string Hub, double Lat, double Lon, double Share, double RadiusMs) a,
        (string Name, string Hub, double Lat, double Lon, double Share, double RadiusMs) b)
    {
        const double EarthRadiusKm = 6371;
        static double Rad(double degrees) => degrees * Math.PI / 180;
        var dLat = Rad(b.Lat - a.Lat);
        var dLon = Rad(b.Lon - a.Lon);
        var h = (Math.Sin(dLat / 2) * Math.Sin(dLat / 2))
            + (Math.Cos(Rad(a.Lat)) * Math.Cos(Rad(b.Lat)) * Math.Sin(dLon / 2) * Math.Sin(dLon / 2));
        return 2 * EarthRadiusKm * Math.Asin(Math.Min(1, Math.Sqrt(h)));
    }
}

using System.Globalization;

namespace ShardStream.Simulation;

/// <summary>
/// The <c>matrix:FILE</c> latency model: RTTs measured between N hosts of a real deployment. Text
/// format: a first line with N, then N lines of N comma-separated RTTs in milliseconds (row i,
/// column j: from host i to host j), -1 where a pair was not measured. The coordinator is on host
/// 0; peer i is on host i mod N and has an access delay of its own drawn from the seed (as in the
/// world model), added to every RTT of that peer. Both directions of a pair are averaged; a pair
/// measured in neither direction gets the shortest path through measured pairs (an upper bound by
/// the triangle inequality); a diagonal of -1 counts as 0.
/// </summary>
public sealed class MatrixLatencyModel : LatencyModel
{
    /// <summary>Largest host count accepted (the unmeasured pairs are filled in O(N³)).</summary>
    public const int MaxHosts = 1000;

    private readonly double[] _rtt;
    private readonly int _seed;
    private readonly string _name;

    private MatrixLatencyModel(int hosts, double[] rtt, int seed, string name, int filled)
    {
        Hosts = hosts;
        _rtt = rtt;
        _seed = seed;
        _name = name;
        FilledPairs = filled;
    }

    /// <summary>N, the number of hosts.</summary>
    public int Hosts { get; }

    /// <summary>Host pairs measured in neither direction, filled with a shortest path of measured pairs.</summary>
    public int FilledPairs { get; }

    /// <inheritdoc />
    public override string Description =>
        $"matrix {_name} ({Hosts} {(Hosts == 1 ? "host" : "hosts")}, {FilledPairs} {(FilledPairs == 1 ? "pair filled by a path" : "pairs filled by paths")}, seed {_seed})";

    /// <summary>The host of <paramref name="node"/>: the coordinator (0) on host 0, peer i on host i mod N.</summary>
    public int HostOf(int node) => node % Hosts;

    /// <summary>The RTT between two hosts as the model uses it (ms).</summary>
    public double HostRtt(int a, int b) => _rtt[(a * Hosts) + b];

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

        var access = (a == 0 ? 0 : AccessRttMs(_seed, a)) + (b == 0 ? 0 : AccessRttMs(_seed, b));
        return HostRtt(HostOf(a), HostOf(b)) + access;
    }

    /// <summary>Reads a matrix from its text (see the class summary for the format).</summary>
    /// <exception cref="FormatException">The text does not follow the format; the message says where.</exception>
    public static MatrixLatencyModel Parse(string text, int seed, string name = "matrix")
    {
        ArgumentNullException.ThrowIfNull(text);
        var lines = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        if (lines.Length == 0)
        {
            throw new FormatException($"{name}: empty; the first line must be the host count N");
        }

        if (!int.TryParse(lines[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) || n < 1 || n > MaxHosts)
        {
            throw new FormatException($"{name}: line 1: the host count must be an integer from 1 to {MaxHosts}, got '{lines[0]}'");
        }

        if (lines.Length != n + 1)
        {
            throw new FormatException($"{name}: {n} hosts need {n} rows after the first line, got {lines.Length - 1}");
        }

        var raw = new double[n * n];
        for (var i = 0; i < n; i++)
        {
            var cells = lines[i + 1].Split(',');
            if (cells.Length != n)
            {
                throw new FormatException($"{name}: line {i + 2}: {n} comma-separated RTTs expected, got {cells.Length}");
            }

            for (var j = 0; j < n; j++)
            {
                if (!double.TryParse(cells[j].Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v)
                    || !double.IsFinite(v) || (v < 0 && v != -1))
                {
                    throw new FormatException($"{name}: line {i + 2}, column {j + 1}: an RTT in ms (>= 0) or -1 expected, got '{cells[j].Trim()}'");
                }

                raw[(i * n) + j] = v;
            }
        }

        return new MatrixLatencyModel(n, Complete(raw, n, name, out var filled), seed, name, filled);
    }

    /// <summary>Symmetric RTTs: directions averaged, unmeasured pairs by shortest paths (Floyd-Warshall).</summary>
    private static double[] Complete(double[] raw, int n, string name, out int filled)
    {
        var rtt = new double[n * n];
        var measured = new bool[n * n];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < n; j++)
            {
                double ij = raw[(i * n) + j], ji = raw[(j * n) + i];
                var value = i == j ? Math.Max(0, ij)
                    : ij >= 0 && ji >= 0 ? (ij + ji) / 2
                    : Math.Max(ij, ji);
                measured[(i * n) + j] = value >= 0;
                rtt[(i * n) + j] = value >= 0 ? value : double.PositiveInfinity;
            }
        }

        for (var k = 0; k < n; k++)
        {
            for (var i = 0; i < n; i++)
            {
                var ik = rtt[(i * n) + k];
                if (double.IsPositiveInfinity(ik))
                {
                    continue;
                }

                for (var j = 0; j < n; j++)
                {
                    var via = ik + rtt[(k * n) + j];
                    if (!measured[(i * n) + j] && via < rtt[(i * n) + j])
                    {
                        rtt[(i * n) + j] = via;
                    }
                }
            }
        }

        filled = 0;
        for (var i = 0; i < n; i++)
        {
            for (var j = i + 1; j < n; j++)
            {
                if (double.IsPositiveInfinity(rtt[(i * n) + j]))
                {
                    throw new FormatException($"{name}: hosts {i} and {j} have no measured RTT and no path of measured RTTs between them");
                }

                filled += measured[(i * n) + j] ? 0 : 1;
            }
        }

        return rtt;
    }
}

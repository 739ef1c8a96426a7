namespace ShardStream.Simulation;

/// <summary>
/// A seeded model of round-trip times between the nodes of a simulated overlay: node 0 is the
/// coordinator, peers are 1, 2, 3... (in join order). The same model drives the simulator
/// (<c>shardstream simulate --latency</c>) and, through
/// <see cref="Transport.VirtualNetwork.UseLatencyModel"/>, the in-memory network of node tests.
/// Models are pure: the same seed gives the same RTTs, for any number of nodes.
/// </summary>
public abstract class LatencyModel
{
    /// <summary>One line that names the model and its parameters, for reports.</summary>
    public abstract string Description { get; }

    /// <summary>The round-trip time between nodes <paramref name="a"/> and <paramref name="b"/> in milliseconds (0 when they are the same node).</summary>
    public abstract double RttMs(int a, int b);

    /// <summary>Half the RTT: the one-way delay of a byte from <paramref name="a"/> to <paramref name="b"/>.</summary>
    public TimeSpan OneWay(int a, int b) => TimeSpan.FromMilliseconds(RttMs(a, b) / 2);

    /// <summary>
    /// The model named by a <c>--latency</c> value: <c>none</c> (null: no latency), <c>world</c>
    /// (<see cref="WorldLatencyModel"/>) or <c>matrix:FILE</c> (<see cref="MatrixLatencyModel"/>;
    /// <paramref name="readFile"/> returns the file's text, so that this stays free of I/O).
    /// </summary>
    /// <exception cref="FormatException">An unknown name or a malformed matrix, with the reason.</exception>
    public static LatencyModel? Parse(string spec, int seed, Func<string, string> readFile)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(readFile);
        if (spec == "none")
        {
            return null;
        }

        if (spec == "world")
        {
            return new WorldLatencyModel(seed);
        }

        if (spec.StartsWith("matrix:", StringComparison.Ordinal) && spec.Length > "matrix:".Length)
        {
            var path = spec["matrix:".Length..];
            return MatrixLatencyModel.Parse(readFile(path), seed, path);
        }

        throw new FormatException($"unknown latency model '{spec}': use none, world or matrix:FILE");
    }

    /// <summary>SplitMix64 (Steele, Lea and Flood, OOPSLA 2014): a well-mixed 64-bit hash of a counter.</summary>
    internal static ulong Mix(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }

    /// <summary>A uniform double in [0, 1) drawn from (seed, node, stream): per-node draws need no storage.</summary>
    internal static double Draw(int seed, int node, int stream)
    {
        var h = Mix(Mix(((ulong)(uint)seed << 32) | (uint)node) + (ulong)stream);
        return (h >> 11) * (1.0 / (1UL << 53));
    }

    /// <summary>
    /// A peer's access-link share of every RTT (ms), drawn from (seed, node): the access technologies
    /// of home viewers. See docs/topology.md ("Latency models") for the figures and their source.
    /// </summary>
    internal static double AccessRttMs(int seed, int node)
    {
        var kind = Draw(seed, node, 101);
        var within = Draw(seed, node, 102);
        return kind switch
        {
            < 0.35 => 1 + (4 * within),    // fibre: 1-5 ms
            < 0.75 => 5 + (10 * within),   // cable: 5-15 ms
            < 0.95 => 15 + (15 * within),  // DSL: 15-30 ms
            _ => 30 + (30 * within),       // mobile and fixed wireless: 30-60 ms
        };
    }
}

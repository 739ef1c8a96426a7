namespace ShardStream.Topology;

/// <summary>Construction, validation and the policy-specific setup of the source.</summary>
public sealed partial class Planner
{
    /// <summary>Largest supported shard count.</summary>
    public const int MaxShardCount = 16;

    private readonly ShardForest _forest;
    private readonly ShardPlacement _placement;
    private readonly TessellationPattern? _pattern;
    private readonly StripeHomes? _homes;
    private readonly List<Reattachment> _moves = [];
    private IReadOnlyList<Reattachment> _lastJoinMoves = [];
    private int _nextId = 1;
    private int _peerCount;

    // Tessellated only: true while the plan follows the seed's pattern (every joiner so far could
    // take a full pattern role; leaves are repaired inside the pattern). Once false, the general
    // rule of ShardPlacement runs for good.
    private bool _pristine;

    /// <summary>Creates an empty plan holding only the source.</summary>
    /// <exception cref="ArgumentException">The shard count, topology and source budget do not fit together.</exception>
    public Planner(PlannerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Validate(options);
        Options = options;
        ShardCount = options.ShardCount;
        _forest = new ShardForest(ShardCount);
        _placement = new ShardPlacement(_forest);
        if (options.LatencyAware)
        {
            _latency = new LatencyPlacement(_forest);
            _placement.Latency = _latency;
        }

        _forest.AddNode(Source, options.SourceBudget);
        for (var s = 0; s < ShardCount; s++)
        {
            var share = SourceShare(s);
            _forest.SetCap(Source, s, share);
        }

        if (options.Topology == TopologyKind.Striped)
        {
            _homes = new StripeHomes(ShardCount, SourceShare);
        }
        else if (options.Topology == TopologyKind.Tessellated && options.SourceBudget >= 3)
        {
            _pattern = new TessellationPattern(_forest);
            _pristine = true;
        }
    }

    /// <summary>The options this plan was made with.</summary>
    public PlannerOptions Options { get; }

    /// <summary>K, the number of shard trees.</summary>
    public int ShardCount { get; }

    private static void Validate(PlannerOptions options)
    {
        var k = options.ShardCount;
        if (k is < 1 or > MaxShardCount)
        {
            throw new ArgumentException(
                $"ShardCount must be between 1 and {MaxShardCount}, got {k}.", nameof(options));
        }

        switch (options.Topology)
        {
            case TopologyKind.Binary when k != 1:
                throw new ArgumentException(
                    $"The binary topology needs ShardCount = 1 (the whole stream per edge), got {k}.", nameof(options));
            case TopologyKind.Tessellated when k != 2:
                throw new ArgumentException(
                    $"The tessellated topology needs ShardCount = 2 (half-streams), got {k}.", nameof(options));
            case TopologyKind.Binary or TopologyKind.Tessellated or TopologyKind.Striped:
                break;
            default:
                throw new ArgumentException($"Unknown topology {options.Topology}.", nameof(options));
        }

        if (options.SourceBudget < k)
        {
            throw new ArgumentException(
                $"SourceBudget must be at least ShardCount ({k}) so the source sends every shard, got {options.SourceBudget}.",
                nameof(options));
        }
    }

    /// <summary>
    /// How many children the source may have in <paramref name="shard"/>: its budget spread evenly,
    /// the remainder to the lowest shards (so K = 2, budget 3 gives 2 + 1 as in the seed's pattern).
    /// </summary>
    private int SourceShare(int shard)
    {
        var budget = Options.SourceBudget;
        return (budget / ShardCount) + (shard < budget % ShardCount ? 1 : 0);
    }
}

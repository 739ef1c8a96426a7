namespace ShardStream.Topology;

/// <summary>
/// Node ids bucketed by depth (one <see cref="DepthQueue"/> per depth), so that "the shallowest
/// node with property P" and "the deepest node with property P" cost a few probes instead of a
/// scan. Entries may be stale; the owner validates them.
/// </summary>
internal sealed class DepthIndex
{
    private DepthQueue?[] _queues = new DepthQueue?[8];
    private int _lowest = int.MaxValue;

    /// <summary>No queue shallower than this holds an entry (a hint: deeper queues may be empty too).</summary>
    public int Lowest
    {
        get => _lowest;
        set => _lowest = value;
    }

    /// <summary>Depths at or beyond this have never held an entry.</summary>
    public int Limit => _queues.Length;

    public void Push(int depth, int node)
    {
        if (depth >= _queues.Length)
        {
            Array.Resize(ref _queues, Math.Max(depth + 1, _queues.Length * 2));
        }

        (_queues[depth] ??= new DepthQueue()).Push(node);
        if (depth < _lowest)
        {
            _lowest = depth;
        }
    }

    /// <summary>The queue at <paramref name="depth"/>, or null when nothing was ever pushed there.</summary>
    public DepthQueue? At(int depth) => depth < _queues.Length ? _queues[depth] : null;
}

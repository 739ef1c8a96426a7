namespace ShardStream.Topology;

/// <summary>
/// Latency-aware placement only: nodes with a free slot, bucketed by <em>zone</em> (a small area
/// of the coordinate plane) and depth, one <see cref="DepthIndex"/> per (zone, shard), so that the
/// free slots near a joiner cost a few probes instead of a scan of the whole tree. Filled by
/// <see cref="ShardForest"/> exactly when it publishes a node in its own open-slot index; entries
/// may be stale and are validated by the reader. Zones are made by leader clustering: a
/// coordinate farther than <see cref="Radius"/> from every zone centre opens a new zone (at most
/// <see cref="MaxZones"/>); a node keeps the zone it was given when it joined.
/// </summary>
internal sealed class ZoneIndex(ShardForest forest)
{
    /// <summary>Largest distance (ms in the plane) from a zone's centre at which a joiner still belongs to it.</summary>
    public const double Radius = 20;

    /// <summary>Most zones; further joiners go to the nearest zone.</summary>
    public const int MaxZones = 256;

    private readonly int _k = forest.ShardCount;
    private readonly ShardForest _forest = forest;
    private readonly List<DepthIndex[]> _open = [];
    private readonly List<DepthIndex[]> _relays = [];
    // Zone centres, flat (a nearest-zones search reads them all for every joiner).
    private readonly double[] _centreX = new double[MaxZones];
    private readonly double[] _centreY = new double[MaxZones];
    private int _count;
    private int[] _zoneOf = [];

    public int Count => _count;

    public (double X, double Y) Centre(int zone) => (_centreX[zone], _centreY[zone]);

    /// <summary>The centres' X coordinates (the first <see cref="Count"/> are zones).</summary>
    public ReadOnlySpan<double> CentreX => _centreX.AsSpan(0, _count);

    /// <summary>The centres' Y coordinates (the first <see cref="Count"/> are zones).</summary>
    public ReadOnlySpan<double> CentreY => _centreY.AsSpan(0, _count);

    public int ZoneOf(int node) => node < _zoneOf.Length ? _zoneOf[node] - 1 : -1;

    /// <summary>
    /// <see cref="Assign(NetworkCoordinate)"/> when <paramref name="nearest"/> is known to be the
    /// first (lowest-numbered) of the zones nearest <paramref name="c"/>, by the same squared
    /// distances: the same zone without the pass over every centre. Falls back to that pass when
    /// the answer could differ (a centre or the point not a finite number, no zone yet).
    /// </summary>
    public int Assign(NetworkCoordinate c, int nearest)
    {
        if (!_finite || nearest < 0 || nearest >= _count || !double.IsFinite(c.X) || !double.IsFinite(c.Y))
        {
            return Assign(c);
        }

        var dx = _centreX[nearest] - c.X;
        var dy = _centreY[nearest] - c.Y;
        var d = (dx * dx) + (dy * dy);
        if (!(d < double.MaxValue))
        {
            return Assign(c);
        }

        return d <= Radius * Radius || _count >= MaxZones ? nearest : NewZone(c);
    }

    // True while every centre is a finite number (then a squared distance is never NaN).
    private bool _finite = true;

    /// <summary>The zone of a coordinate: the nearest centre within <see cref="Radius"/>, else a new zone (or the nearest when full).</summary>
    public int Assign(NetworkCoordinate c)
    {
        var best = -1;
        var bestDistance = double.MaxValue;
        for (var z = 0; z < _count; z++)
        {
            var dx = _centreX[z] - c.X;
            var dy = _centreY[z] - c.Y;
            var d = (dx * dx) + (dy * dy);
            if (d < bestDistance)
            {
                bestDistance = d;
                best = z;
            }
        }

        if (best >= 0 && (bestDistance <= Radius * Radius || _count >= MaxZones))
        {
            return best;
        }

        return NewZone(c);
    }

    private int NewZone(NetworkCoordinate c)
    {
        _finite &= double.IsFinite(c.X) && double.IsFinite(c.Y);
        _centreX[_count] = c.X;
        _centreY[_count] = c.Y;
        _count++;
        var shards = new DepthIndex[_k];
        for (var s = 0; s < _k; s++)
        {
            shards[s] = new DepthIndex();
        }

        _open.Add(shards);
        var relays = new DepthIndex[_k];
        for (var s = 0; s < _k; s++)
        {
            relays[s] = new DepthIndex();
        }

        _relays.Add(relays);
        return _count - 1;
    }

    public void SetZone(int node, int zone)
    {
        if (node >= _zoneOf.Length)
        {
            Array.Resize(ref _zoneOf, Math.Max(node + 1, Math.Max(1024, _zoneOf.Length * 2)));
        }

        _zoneOf[node] = zone + 1;
    }

    /// <summary>
    /// Called by the forest whenever <paramref name="node"/> has a free slot at <paramref name="depth"/>
    /// (after any change to it): pushed unless an entry for that depth is already queued, or
    /// always with <paramref name="again"/> (a node that moved to another zone).
    /// </summary>
    public void PushOpen(int node, int shard, int depth, bool again = false)
    {
        var zone = ZoneOf(node);
        if (zone < 0)
        {
            return;
        }

        // The mark sits in the forest's record of (node, shard): the line the reader checks anyway.
        ref var slot = ref _forest.SlotOf(node, shard);
        if (slot.ZoneMark != depth + 1 || again)
        {
            slot.ZoneMark = depth + 1;
            _open[zone][shard].Push(depth, node);
        }
    }

    /// <summary>A reader dropped a stale entry of <paramref name="node"/> queued at <paramref name="depth"/>: the next <see cref="PushOpen"/> queues it again.</summary>
    public void Dropped(int node, int shard, int depth)
    {
        ref var slot = ref _forest.SlotOf(node, shard);
        if (slot.ZoneMark == depth + 1)
        {
            slot.ZoneMark = 0;
        }
    }

    public DepthIndex Open(int zone, int shard) => _open[zone][shard];

    /// <summary>Nodes with capacity in <paramref name="shard"/> by depth, in <paramref name="zone"/> (entries may be stale).</summary>
    public DepthIndex Relays(int zone, int shard) => _relays[zone][shard];

    /// <summary>
    /// Called by the forest after any change to a node with capacity at <paramref name="depth"/>:
    /// queued unless an entry for that depth is already (see <see cref="DroppedRelay"/>).
    /// </summary>
    public void PushRelay(int node, int shard, int depth)
    {
        var zone = ZoneOf(node);
        if (zone < 0)
        {
            return;
        }

        ref var slot = ref _forest.SlotOf(node, shard);
        if (slot.RelayMark != depth + 1)
        {
            slot.RelayMark = depth + 1;
            _relays[zone][shard].Push(depth, node);
        }
    }

    /// <summary>A reader dropped the entry of <paramref name="node"/> at <paramref name="depth"/>: the next <see cref="PushRelay"/> queues it again.</summary>
    public void DroppedRelay(int node, int shard, int depth)
    {
        ref var slot = ref _forest.SlotOf(node, shard);
        if (slot.RelayMark == depth + 1)
        {
            slot.RelayMark = 0;
        }
    }
}

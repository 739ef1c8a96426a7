namespace ShardStream.Topology;

/// <summary>
/// What planning a rebuild by regions needs of a plan, copied from it
/// (<see cref="Planner.TakeRebuildSnapshot"/>) so that <see cref="Plan"/> runs without the plan: a
/// coordinator takes the snapshot under its plan's lock, plans outside it while joins and leaves
/// go on, and hands the result back under the lock (<see cref="Planner.AdoptRebuild"/>), where
/// <see cref="Planner.CarryOutRebuild"/> skips every move that no longer fits the plan as it is
/// then (docs/topology.md, "The rebuild by regions"). Planning reads every peer and builds every
/// tree; copying what it reads is a few arrays a tree.
/// </summary>
public sealed class RebuildSnapshot
{
    internal RebuildSnapshot(int shardCount, int nextId, int peers, NetworkCoordinate source, double minGainShare, RebuildLinks links)
    {
        ShardCount = shardCount;
        NextId = nextId;
        Source = source;
        MinGainShare = minGainShare;
        Links = links;
        Peers = new int[peers];
        Coordinates = new NetworkCoordinate[peers];
        SourceRtt = new double[peers];
        Budget = new int[peers];
        Home = new int[peers];
        Parent = new int[shardCount][];
        Cap = new int[shardCount][];
        SourceCap = new int[shardCount];
        DepthBound = new int[shardCount];
        ParentRtt = new float[shardCount][];
        for (var s = 0; s < shardCount; s++)
        {
            Parent[s] = new int[peers];
            Cap[s] = new int[peers];
            ParentRtt[s] = new float[peers];
        }
    }

    internal readonly int ShardCount;

    /// <summary>The plan's next peer id then: every id below it was given.</summary>
    internal readonly int NextId;

    internal readonly NetworkCoordinate Source;
    internal readonly double MinGainShare;

    /// <summary>
    /// Whether a plan is worth carrying out: with the measured RTTs, its estimated mean delay is
    /// lower than the plan's as it was by <paramref name="minGainShare"/>, and from the coordinates
    /// alone it is not higher. A negative share allows as much more on both sides; -1 or less,
    /// which tests give to carry out any plan, allows anything (as a factor, -1 allowed only twice
    /// the delay before, and a loaded machine's estimates went past it: 319 -> 654 ms).
    /// </summary>
    internal static bool IsWorthCarryingOut(double before, double after, double measuredBefore, double measuredAfter, double minGainShare) =>
        minGainShare <= -1
        || (measuredAfter <= measuredBefore * (1 - minGainShare) && after <= before * (1 - Math.Min(minGainShare, 0)));

    /// <summary>The parent links kept from earlier rebuilds: the planning's own, lent while the snapshot is out (only one is at a time).</summary>
    internal readonly RebuildLinks Links;

    /// <summary>The live peers' ids, ascending; every other array is indexed like it.</summary>
    internal readonly int[] Peers;

    internal readonly NetworkCoordinate[] Coordinates;

    /// <summary>The RTT the coordinator measured to each peer (NaN when none).</summary>
    internal readonly double[] SourceRtt;

    internal readonly int[] Budget;
    internal readonly int[] Home;

    /// <summary>Per tree, each peer's parent id.</summary>
    internal readonly int[][] Parent;

    /// <summary>Per tree, each peer's cap.</summary>
    internal readonly int[][] Cap;

    /// <summary>Per tree, the source's cap.</summary>
    internal readonly int[] SourceCap;

    /// <summary>
    /// Per tree, the deepest a planned tree may be: the depth joins keep (one more than the best the
    /// caps allow), or the tree's depth now when it is deeper.
    /// </summary>
    internal readonly int[] DepthBound;

    /// <summary>Per tree, the RTT the peer reported of its link to its parent (the least of smoothed and least sample), NaN with fewer than <see cref="Planner.ImproveMinSamples"/> samples.</summary>
    internal readonly float[][] ParentRtt;

    /// <summary>Live peers in the snapshot.</summary>
    public int PeerCount => Peers.Length;

    /// <summary>
    /// Plans the rebuild (<see cref="Planner.RebuildLatency"/> says how) from this snapshot alone:
    /// the kept parent links take this snapshot's reported ones, the local coordinates are fitted
    /// to them, every tree is built within the caps, and the result says whether its estimated mean
    /// delay gains enough. Null when the construction gives no valid plan within the caps, among
    /// them when some tree has no peer that may relay in it (fewer peers than striped trees, which
    /// a fewest-peers-for-a-rebuild below <see cref="Planner.RebuildLeastPeers"/> lets through, or
    /// only viewers): the construction hangs every tree from one relay under the source, so there is
    /// nothing to rebuild. Call it
    /// once, and hand the result to <see cref="Planner.AdoptRebuild"/>; hand the snapshot back
    /// with no plan (null) when it throws, cancelled or not.
    /// </summary>
    /// <param name="cancellationToken">
    /// Looked at between the planning's steps: every round of the clustering and of the local
    /// coordinates' fit, every region a tree fills, every tree built and every tree's delays
    /// estimated: at 100k peers (seed 1, plannings of 3.0-4.8 s) a cancel at 50 points through the
    /// planning was thrown 0.5-70 ms after it.
    /// </param>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public RebuildPlan? Plan(CancellationToken cancellationToken = default)
    {
        var k = ShardCount;
        var peers = Peers;
        var n = peers.Length;
        var index = new int[NextId];
        Array.Fill(index, -1);
        for (var i = 0; i < n; i++)
        {
            index[peers[i]] = i;
        }

        // Clusters of the plane; the source's by measured RTT.
        var x = new double[n];
        var y = new double[n];
        var core = new double[n];
        var region = new int[n];
        var maxBudget = 1;
        for (var i = 0; i < n; i++)
        {
            var c = Coordinates[i];
            (x[i], y[i]) = (c.X, c.Y);
            core[i] = SourceRtt[i] - c.Height - Source.Height;
            maxBudget = Math.Max(maxBudget, Budget[i]);
        }

        var planeRegions = RegionConstruction.ClusterPlane(x, y, region, cancellationToken);
        var plane = (int[])region.Clone();
        var (regions, sourceCluster) = RegionConstruction.SourceCluster(x, y, core, region, planeRegions, maxBudget);
        cancellationToken.ThrowIfCancellationRequested();

        // The kept parent links take the ones reported now (the local coordinates' fit reads them).
        Links.Grow(NextId);
        for (var i = 0; i < n; i++)
        {
            for (var s = 0; s < k; s++)
            {
                var p = Parent[s][i];
                if (p > 0 && !float.IsNaN(ParentRtt[s][i]))
                {
                    Links.Add(peers[i], p, ParentRtt[s][i]);
                }
            }
        }

        if (Construct(index, region, regions, sourceCluster, Construction.Regions, cancellationToken) is not { } built)
        {
            return null;
        }

        if (!WithinBound(built.Depth))
        {
            // Too few slots a relay for one entry per cluster under the first relay (binary trees,
            // K = 2 and 3): SourceCluster merged the clusters down to the budget, and the merged
            // ones span continents, where local coordinates fitted to short parent links understate
            // long edges and the fill by levels from one entry ran the tree past its depth bound
            // (docs/topology.md, "The rebuild at 1, 2 and 3 shards"). The clusters unmerged instead,
            // each entered at the depth its size allows, through source-region relays.
            var (merged, mergedRegions, mergedSource) = (region, regions, sourceCluster);
            region = plane;
            (regions, sourceCluster) = RegionConstruction.SourceCluster(x, y, core, region, planeRegions, int.MaxValue);
            if (Construct(index, region, regions, sourceCluster, Construction.Bounded, cancellationToken) is { } bounded)
            {
                built = bounded;
            }
            else
            {
                // Small striped overlays (K = 2, 20-200 peers): the tree where the source has two
                // slots is bounded a level less than the others, built from one of them it ended
                // past that bound, and the backbone of the bounded construction ran out. The merged
                // clusters again, with an entry under each of the source's other slots
                // (docs/topology.md, "The rebuild at small striped overlays"). Not first: at K = 1
                // it keeps the two merged clusters that the bounded construction is there to avoid
                // (1,000 peers, seeds 1-3: 168-183 ms became 277-341).
                region = merged;
                (regions, sourceCluster) = (mergedRegions, mergedSource);
                if (Construct(index, region, regions, sourceCluster, Construction.EverySourceSlot, cancellationToken) is { } wide && WithinBound(wide.Depth))
                {
                    built = wide;
                }
            }
        }

        var (target, order, local, depth) = built;

        // Worth carrying out only when, with every edge whose RTT was measured priced by that
        // measurement, it is estimated to gain enough over the plan as it was, and the coordinates
        // alone do not price it worse: the plan's coordinates drift with what peers measure under
        // load, while the plan as it was has every edge measured and a planned one few; and both
        // sides priced from the coordinates understate a gain (at 100k peers, seed 1, 1.4% estimated
        // where it was 3.1%), so a 2% gain asked of them ended a series above a mean RDP of 2.0
        // (docs/topology.md, "The rebuild by regions", "A rebuild planned right after another").
        Func<int, Func<int, int>> was = s => p => Parent[s][index[p]];
        Func<int, Func<int, int>> planned = s => p => target[s][p];
        var before = EstimatedMeanDelay(index, region, local, was, measured: false, cancellationToken);
        var after = EstimatedMeanDelay(index, region, local, planned, measured: false, cancellationToken);
        var measuredBefore = EstimatedMeanDelay(index, region, local, was, measured: true, cancellationToken);
        var measuredAfter = EstimatedMeanDelay(index, region, local, planned, measured: true, cancellationToken);
        var deeper = !WithinBound(depth);
        var worth = !deeper && IsWorthCarryingOut(before, after, measuredBefore, measuredAfter, MinGainShare);
        return new RebuildPlan(target, order, worth)
        {
            DepthBound = DepthBound,
            PlannedDepth = depth,
            DeeperThanBound = deeper,
            EstimatedBeforeMs = before,
            EstimatedAfterMs = after,
            MeasuredBeforeMs = measuredBefore,
            MeasuredAfterMs = measuredAfter,
        };
    }

    /// <summary>True when no tree of <paramref name="depth"/> (a plan's, per shard) is deeper than its <see cref="DepthBound"/>.</summary>
    private bool WithinBound(int[] depth)
    {
        for (var s = 0; s < depth.Length; s++)
        {
            if (depth[s] > DepthBound[s])
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>How <see cref="Construct"/> builds each tree.</summary>
    private enum Construction
    {
        /// <summary><see cref="RegionConstruction.Builder.Tree"/> from one of the source's slots.</summary>
        Regions,

        /// <summary><see cref="RegionConstruction.Builder.BoundedTree"/> within <see cref="DepthBound"/>.</summary>
        Bounded,

        /// <summary><see cref="RegionConstruction.Builder.Tree"/> from every one of the source's slots.</summary>
        EverySourceSlot,
    }

    /// <summary>
    /// Local coordinates fitted within <paramref name="region"/>'s clusters, then every tree built
    /// by them as <paramref name="construction"/> says. Per tree the planned parent of every id,
    /// the order (parents first) and the depth; null when a tree cannot be built within its caps
    /// (or, <see cref="Construction.Bounded"/>, within its bound).
    /// </summary>
    private (int[][] Target, int[][] Order, NetworkCoordinate[] Local, int[] Depth)? Construct(int[] index, int[] region, int regions, int sourceCluster, Construction construction, CancellationToken cancellationToken)
    {
        var bounded = construction == Construction.Bounded;
        var k = ShardCount;
        var peers = Peers;
        var n = peers.Length;

        // Local coordinates: from the plan's coordinates, fitted to the parent links within a
        // cluster that peers reported, now and at earlier rebuilds (the latest RebuildLinksKept).
        var local = new NetworkCoordinate[n];
        var links = new List<(int A, int B, double Rtt)>();
        for (var i = 0; i < n; i++)
        {
            local[i] = Coordinates[i];
            Links.InRegion(peers[i], i, NextId, index, region, links);
        }

        cancellationToken.ThrowIfCancellationRequested();
        RegionConstruction.LinkCoordinates(local, region, links, Planner.RebuildFitRounds, cancellationToken);

        // The construction, within the plan's per-tree caps.
        var b = new RegionConstruction.Builder(n, regions) { CapByShard = Cap };
        var cx = new double[regions];
        var cy = new double[regions];
        var count = new int[regions];
        for (var i = 0; i < n; i++)
        {
            b.Region[i] = region[i];
            cx[region[i]] += local[i].X;
            cy[region[i]] += local[i].Y;
            count[region[i]]++;
            b.Access[i] = local[i].Height;
            b.Home[i] = Home[i];
            b.Cap[i] = Budget[i];
        }

        for (var r = 0; r < regions; r++)
        {
            (cx[r], cy[r]) = count[r] == 0 ? (0, 0) : (cx[r] / count[r], cy[r] / count[r]);
        }

        for (var i = 0; i < n; i++)
        {
            b.X[i] = local[i].X - cx[region[i]];
            b.Y[i] = local[i].Y - cy[region[i]];
        }

        var srcRegion = sourceCluster >= 0 ? sourceCluster : Enumerable.Range(0, regions).Where(r => count[r] > 0).MinBy(r => RegionConstruction.Dist(cx[r], cy[r], Source.X, Source.Y));
        (b.CentreX, b.CentreY) = (cx, cy);
        (b.SourceX, b.SourceY) = (Source.X - cx[srcRegion], Source.Y - cy[srcRegion]);

        var target = new int[k][];
        var order = new int[k][];
        var depth = new int[k];
        var depthOf = new int[n];
        for (var s = 0; s < k; s++)
        {
            if (!bounded)
            {
                b.Tree(s, srcRegion, regions, construction == Construction.EverySourceSlot ? SourceCap[s] : 1, cancellationToken);
            }
            else if (!b.BoundedTree(s, srcRegion, regions, SourceCap[s], DepthBound[s], cancellationToken))
            {
                return null;
            }

            if (b.Order.Count != n || b.OverBudget() > 0)
            {
                return null; // no relay in the tree, or not a valid plan within the caps (neither happened in the runs of docs/topology.md)
            }

            target[s] = new int[NextId];
            Array.Fill(target[s], Planner.None);
            order[s] = new int[n];
            for (var j = 0; j < n; j++)
            {
                var i = b.Order[j];
                order[s][j] = peers[i];
                target[s][peers[i]] = b.Parent[i] < 0 ? Planner.Source : peers[b.Parent[i]];
                depthOf[i] = b.Parent[i] < 0 ? 1 : depthOf[b.Parent[i]] + 1;
                depth[s] = Math.Max(depth[s], depthOf[i]);
            }

            if (bounded && depth[s] > DepthBound[s])
            {
                return null; // the leftovers took the bounded tree past its bound: not to be used
            }
        }

        return (target, order, local, depth);
    }

    /// <summary>
    /// The RTT the snapshot holds as measured between peer indexes <paramref name="c"/> and
    /// <paramref name="p"/>, the parent of <paramref name="c"/> in tree <paramref name="s"/>: what
    /// <paramref name="c"/> reported of that link now, else what either reported of its link to the
    /// other as a parent, as kept for the fit (<see cref="RebuildLinks"/>: the links reported now too,
    /// each with the RTT first kept of it); NaN when none.
    /// </summary>
    private double MeasuredRtt(int s, int c, int p)
    {
        var (child, parent) = (Peers[c], Peers[p]);
        if (Parent[s][c] == parent && !float.IsNaN(ParentRtt[s][c]))
        {
            return ParentRtt[s][c];
        }

        var kept = Links.Rtt(child, parent);
        return double.IsNaN(kept) ? Links.Rtt(parent, child) : kept;
    }

    /// <summary>
    /// Mean over peers of the estimated delay from the source in the slowest tree, given each tree's
    /// parents: half the estimated RTT of each edge, from the local coordinates within a cluster and
    /// from the plan's coordinates across clusters and from the source; with
    /// <paramref name="measured"/>, half the RTT measured instead wherever the snapshot holds one
    /// (<see cref="MeasuredRtt"/>, and the coordinator's RTT to the peer for an edge from the source).
    /// </summary>
    private double EstimatedMeanDelay(int[] index, int[] region, NetworkCoordinate[] local, Func<int, Func<int, int>> parentIn, bool measured, CancellationToken cancellationToken)
    {
        var peers = Peers;
        var n = peers.Length;
        var worst = new double[n];
        var delay = new double[n];
        var stamp = new int[n];
        var stack = new List<int>();
        for (var s = 0; s < ShardCount; s++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var parentOf = parentIn(s);
            for (var i = 0; i < n; i++)
            {
                // Walk up to a node with a delay of this tree (or the source), then back down.
                stack.Clear();
                var at = i;
                while (at >= 0 && stamp[at] != s + 1)
                {
                    stack.Add(at);
                    var p = parentOf(peers[at]);
                    at = p == Planner.Source || p == Planner.None || index[p] < 0 ? -1 : index[p];
                    if (stack.Count > n)
                    {
                        return double.MaxValue; // not a tree
                    }
                }

                for (var j = stack.Count - 1; j >= 0; j--)
                {
                    var c = stack[j];
                    var p = parentOf(peers[c]);
                    if (p == Planner.Source || p == Planner.None || index[p] < 0)
                    {
                        delay[c] = (measured && !double.IsNaN(SourceRtt[c]) ? SourceRtt[c] : Source.EstimateRtt(Coordinates[c])) / 2;
                    }
                    else
                    {
                        var pi = index[p];
                        var rtt = measured ? MeasuredRtt(s, c, pi) : double.NaN;
                        if (double.IsNaN(rtt))
                        {
                            rtt = region[pi] == region[c] ? local[pi].EstimateRtt(local[c]) : Coordinates[pi].EstimateRtt(Coordinates[c]);
                        }

                        delay[c] = delay[pi] + (rtt / 2);
                    }

                    stamp[c] = s + 1;
                }
            }

            for (var i = 0; i < n; i++)
            {
                worst[i] = s == 0 ? delay[i] : Math.Max(worst[i], delay[i]);
            }
        }

        return n == 0 ? 0 : worst.Average();
    }
}

/// <summary>A planned rebuild (<see cref="RebuildSnapshot.Plan"/>): per tree the new parent of every node id (<see cref="Planner.None"/> if none planned) and the order (parents first) in which nodes move.</summary>
public sealed class RebuildPlan
{
    internal RebuildPlan(int[][] target, int[][] order, bool worthCarryingOut)
    {
        Target = target;
        Order = order;
        WorthCarryingOut = worthCarryingOut;
    }

    internal readonly int[][] Target;
    internal readonly int[][] Order;

    /// <summary>Per tree, the deepest it may be while the rebuild is carried out (<see cref="RebuildSnapshot.DepthBound"/>, one entry per tree).</summary>
    internal int[] DepthBound { get; init; } = [];

    /// <summary>Per tree, the planned tree's depth.</summary>
    public IReadOnlyList<int> PlannedDepth { get; internal init; } = [];

    /// <summary>True when some planned tree is deeper than its <see cref="DepthBound"/>: such a plan is not carried out, whatever its estimated delay.</summary>
    public bool DeeperThanBound { get; internal init; }

    /// <summary>True when no planned tree is deeper than its depth bound and its estimated mean delay is lower than the plan's by <see cref="Planner.RebuildMinGainShare"/> (or the plan's own option) with the measured RTTs (<see cref="MeasuredBeforeMs"/>, <see cref="MeasuredAfterMs"/>), and not higher from the coordinates alone (<see cref="EstimatedBeforeMs"/>, <see cref="EstimatedAfterMs"/>).</summary>
    public bool WorthCarryingOut { get; }

    /// <summary>The estimated mean delay from the source (slowest tree) of the plan as it was, ms.</summary>
    public double EstimatedBeforeMs { get; internal init; }

    /// <summary>The estimated mean delay from the source (slowest tree) of the planned rebuild, ms.</summary>
    public double EstimatedAfterMs { get; internal init; }

    /// <summary>As <see cref="EstimatedBeforeMs"/>, with every edge whose RTT was measured (a parent link a peer reported, now or at an earlier rebuild, or the coordinator's RTT to a peer) priced by that measurement, ms.</summary>
    public double MeasuredBeforeMs { get; internal init; }

    /// <summary>As <see cref="EstimatedAfterMs"/>, with every edge whose RTT was measured priced by that measurement, ms.</summary>
    public double MeasuredAfterMs { get; internal init; }

    /// <summary>The tree being carried out.</summary>
    internal int Shard;

    /// <summary>The next node of <see cref="Order"/> in that tree.</summary>
    internal int At;
}

/// <summary>
/// The latest <see cref="Planner.RebuildLinksKept"/> distinct parents each peer id reported, with
/// their RTTs: the rebuild's local coordinates are fitted to them (docs/topology.md, "The rebuild
/// by regions"). Only a planning reads or writes them, and only one runs at a time.
/// </summary>
internal sealed class RebuildLinks
{
    private const int Kept = Planner.RebuildLinksKept;
    private int[] _peer = [];
    private float[] _rtt = [];
    private byte[] _next = [];

    /// <summary>Room for ids below <paramref name="ids"/>.</summary>
    public void Grow(int ids)
    {
        if (_next.Length < ids)
        {
            var size = Math.Max(ids, _next.Length * 2);
            Array.Resize(ref _peer, size * Kept);
            Array.Resize(ref _rtt, size * Kept);
            Array.Resize(ref _next, size);
        }
    }

    /// <summary>Keeps <paramref name="id"/>'s link to <paramref name="parent"/> unless it is kept already, over its oldest.</summary>
    public void Add(int id, int parent, float rtt)
    {
        if (Array.IndexOf(_peer, parent, id * Kept, Kept) >= 0)
        {
            return;
        }

        _peer[(id * Kept) + _next[id]] = parent;
        _rtt[(id * Kept) + _next[id]] = rtt;
        _next[id] = (byte)((_next[id] + 1) % Kept);
    }

    /// <summary>The RTT kept of <paramref name="id"/>'s link to <paramref name="parent"/>; NaN when none is kept.</summary>
    public double Rtt(int id, int parent)
    {
        if ((id * Kept) + Kept > _peer.Length)
        {
            return double.NaN;
        }

        var at = Array.IndexOf(_peer, parent, id * Kept, Kept);
        return at >= 0 && _rtt[at] > 0 ? _rtt[at] : double.NaN;
    }

    /// <summary>Adds to <paramref name="links"/> <paramref name="id"/>'s kept links (it at index <paramref name="i"/>) to live peers of its own region.</summary>
    public void InRegion(int id, int i, int nextId, int[] index, int[] region, List<(int A, int B, double Rtt)> links)
    {
        for (var j = 0; j < Kept; j++)
        {
            var at = (id * Kept) + j;
            var p = _peer[at];
            if (_rtt[at] > 0 && p > 0 && p < nextId && index[p] >= 0 && region[index[p]] == region[i])
            {
                links.Add((i, index[p], _rtt[at]));
            }
        }
    }
}

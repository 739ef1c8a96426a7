using ShardStream.Topology;

namespace ShardStream.Simulation;

/// <summary>
/// An offline construction of the K trees from the <c>world</c> model's true positions and access
/// links (<c>simulate --rdp-breakdown</c>): not a planner (it knows what no coordinator knows, and
/// builds each tree at once), but a plan within the same budgets, homes and source, whose mean RDP
/// shows what those budgets allow at most: an upper bound of the best mean RDP, as
/// <see cref="RdpAnalysis"/>'s is a lower one.
/// </summary>
/// <remarks>
/// Every tree (its relays: the peers whose home it is, at most their budget of children each):
/// the source feeds, through one of its slots, the relay of its region with the least access delay
/// plus half its detour from the hub to the region's centroid; that relay feeds one entry relay per
/// other region, largest regions first (chosen likewise in its region), and the rest of the
/// source's region. Below each entry, the region's relays go level by level in order of access
/// delay plus half their distance to the hub (short links and central places high), each under the
/// relay of the level above with a free slot (among the 16 nearest it by angle around the hub)
/// through which its delay from the region's entry is least; then every other peer of the region
/// likewise under a relay of the last two levels with a free slot. (Until 2026-12-04 the parent
/// was the nearest of those 16 in the plane: mean RDP 2.04 / 1.78 / 1.99 / 1.78 / 2.21 on seeds
/// 1-5 at 100k, against 1.57 / 1.44 / 1.57 / 1.46 / 1.68 with the least delay.) Peers no slot of their region holds go under any relay with one left
/// (none did in the runs of docs/topology.md). So a path crosses from the source's region to the
/// peer's once, near the hubs, then fans out through its region.
/// <para>The same construction can also be given only what a coordinator knows
/// (<see cref="Knowledge.Coordinates"/>): every peer's Vivaldi coordinate as the planner holds it
/// (its point in the plane for the model's point, its height for the access delay) and, for
/// regions, clusters of the plane (<see cref="ClusterPlane"/>); or the coordinates within the
/// model's true regions (<see cref="Knowledge.CoordinatesInModelRegions"/>), which separates what
/// the clusters cost from what the coordinates' points and heights cost; or, within the true
/// regions, local coordinates fitted to RTTs among a region's own peers
/// (<see cref="Knowledge.LocalCoordinatesInModelRegions"/>): what measurements inside a region,
/// which a coordinator could request, would add. Its delays are measured
/// with the model's RTTs as always: what a rebuild of whole trees by the coordinator would give.</para>
/// </remarks>
internal static class RdpConstruction
{
    /// <summary>What the construction is given of each peer's position.</summary>
    public enum Knowledge
    {
        /// <summary>The model's true region, point and access delay.</summary>
        Model,

        /// <summary>The planner's coordinates only: regions are clusters of the plane.</summary>
        Coordinates,

        /// <summary>The planner's coordinates (points, heights) within the model's true regions.</summary>
        CoordinatesInModelRegions,

        /// <summary>
        /// Within the model's true regions, a local coordinate per peer (<see cref="LocalCoordinates"/>):
        /// the planner's, refitted only to RTTs to a few peers of its own region.
        /// </summary>
        LocalCoordinatesInModelRegions,

        /// <summary>
        /// Regions are clusters of the plane, but the source's is the peers whose measured RTT to the
        /// source says they are near it (<see cref="SourceCluster"/>); within them, local
        /// coordinates fitted to RTTs to a few random peers of the same cluster
        /// (<see cref="LocalCoordinates"/>).
        /// </summary>
        LocalCoordinatesInClusters,

        /// <summary>
        /// The clusters of <see cref="LocalCoordinatesInClusters"/>; local coordinates fitted only
        /// to the RTTs of parent links within a cluster (<see cref="LinkCoordinates"/>): what the
        /// peers' heartbeats report anyway, no extra ping.
        /// </summary>
        ParentLinksInClusters,
    }

    /// <summary>Mean RDP over peers (slowest tree), of the source's region's peers and of the others, per single tree, the deepest peer, the peers whose children exceed their budget in a tree (0: the plan is valid), and the regions it built (clusters with <see cref="Knowledge.Coordinates"/>).</summary>
    public readonly record struct Result(double MeanRdp, double SourceRegionRdp, double OtherRegionsRdp, double MeanTreeRdp, int MaxDepth, int OverBudget, int Regions);

    /// <summary>Builds the construction from <paramref name="knowledge"/> (not <see cref="Knowledge.ParentLinksInClusters"/>: see <see cref="RebuildsFromParentLinks"/>).</summary>
    public static Result Build(Planner planner, WorldLatencyModel model, Knowledge knowledge = Knowledge.Model)
    {
        if (knowledge == Knowledge.ParentLinksInClusters)
        {
            throw new ArgumentException("parent links come from RebuildsFromParentLinks", nameof(knowledge));
        }

        return Build(planner, model, knowledge, links: null, parents: null);
    }

    /// <summary>Rebuilds <c>--rdp-breakdown</c> prints (<see cref="RebuildsFromParentLinks"/>): at 100k, seeds 1-5, the third and fourth differ by 0.07 at most.</summary>
    public const int ParentLinkRebuilds = 4;

    /// <summary>One construction of <see cref="RebuildsFromParentLinks"/>: its result and the (peer, shard) edges whose parent differs from the plan before it.</summary>
    public readonly record struct Rebuild(Result Result, long Moved);

    /// <summary>
    /// <paramref name="rebuilds"/> constructions in a row with <see cref="Knowledge.ParentLinksInClusters"/>,
    /// as a coordinator would make them if it carried each one out and then refitted: the first
    /// fits the local coordinates to the RTTs of the planner's parent links (within a cluster), every
    /// later one also to those of each earlier construction's parent links (as heartbeats report
    /// them once the peers moved there). The RTTs are the model's; each rebuild counts the edges
    /// whose parent changed from the plan before it (the planner's for the first).
    /// </summary>
    public static IReadOnlyList<Rebuild> RebuildsFromParentLinks(Planner planner, WorldLatencyModel model, int rebuilds)
    {
        var k = planner.ShardCount;
        var peers = planner.Peers.ToArray();
        var n = peers.Length;
        var index = new Dictionary<int, int>(n);
        for (var i = 0; i < n; i++)
        {
            index[peers[i]] = i;
        }

        var before = new int[k][];
        var links = new List<(int A, int B, double Rtt)>();
        for (var s = 0; s < k; s++)
        {
            before[s] = new int[n];
            for (var i = 0; i < n; i++)
            {
                var p = planner.ParentOf(peers[i], s);
                before[s][i] = p > 0 && index.TryGetValue(p, out var j) ? j : -1;
            }
        }

        var result = new List<Rebuild>();
        for (var r = 0; r < rebuilds; r++)
        {
            AddLinks(before);
            var after = new int[k][];
            var built = Build(planner, model, Knowledge.ParentLinksInClusters, links, after);
            long moved = 0;
            for (var s = 0; s < k; s++)
            {
                for (var i = 0; i < n; i++)
                {
                    moved += after[s][i] != before[s][i] ? 1 : 0;
                }
            }

            result.Add(new Rebuild(built, moved));
            before = after;
        }

        return result;

        void AddLinks(int[][] parents)
        {
            foreach (var tree in parents)
            {
                for (var i = 0; i < n; i++)
                {
                    if (tree[i] >= 0)
                    {
                        links.Add((i, tree[i], model.RttMs(peers[i], peers[tree[i]])));
                    }
                }
            }
        }
    }

    private static Result Build(Planner planner, WorldLatencyModel model, Knowledge knowledge, List<(int A, int B, double Rtt)>? links, int[][]? parents)
    {
        var k = planner.ShardCount;
        var peers = planner.Peers.ToArray();
        var n = peers.Length;
        var b = new RegionConstruction.Builder(n, WorldLatencyModel.Regions.Length);
        var srcRegion = model.RegionOf(0);
        var regions = WorldLatencyModel.Regions.Length;
        var direct = new double[n];
        var trueRegion = new int[n];
        for (var i = 0; i < n; i++)
        {
            var p = peers[i];
            (b.Region[i], b.X[i], b.Y[i]) = model.PointOf(p);
            trueRegion[i] = b.Region[i];
            b.Access[i] = model.AccessMs(p);
            b.Home[i] = planner.HomeShard(p);
            b.Cap[i] = planner.Budget(p);
            direct[i] = model.RttMs(0, p) / 2;
        }

        if (knowledge != Knowledge.Model)
        {
            var x = new double[n];
            var y = new double[n];
            var sourceCluster = -1;
            if (knowledge is Knowledge.LocalCoordinatesInClusters or Knowledge.ParentLinksInClusters)
            {
                // Clusters of the planner's plane, the source's cluster by measured RTT.
                var core = new double[n];
                var sourceHeight = planner.CoordinateOf(Planner.Source).Height;
                for (var i = 0; i < n; i++)
                {
                    var c = planner.CoordinateOf(peers[i]);
                    (x[i], y[i]) = (c.X, c.Y);
                    core[i] = planner.RecordedSourceRtt(peers[i]) - c.Height - sourceHeight;
                }

                regions = RegionConstruction.ClusterPlane(x, y, b.Region);
                (regions, sourceCluster) = RegionConstruction.SourceCluster(x, y, core, b.Region, regions, b.Cap.DefaultIfEmpty(1).Max());
            }

            var local = knowledge switch
            {
                Knowledge.LocalCoordinatesInModelRegions or Knowledge.LocalCoordinatesInClusters => LocalCoordinates(planner, model, peers, b.Region, LocalPings, LocalRounds),
                Knowledge.ParentLinksInClusters => LinkCoordinates(planner, peers, b.Region, links!),
                _ => null,
            };
            for (var i = 0; i < n; i++)
            {
                var c = local is null ? planner.CoordinateOf(peers[i]) : local[i];
                (x[i], y[i], b.Access[i]) = (c.X, c.Y, c.Height);
            }

            if (knowledge == Knowledge.Coordinates)
            {
                regions = RegionConstruction.ClusterPlane(x, y, b.Region);
            }

            // Points relative to their region's centre (the model's are relative to its hub).
            var cx = new double[regions];
            var cy = new double[regions];
            var count = new int[regions];
            for (var i = 0; i < n; i++)
            {
                cx[b.Region[i]] += x[i];
                cy[b.Region[i]] += y[i];
                count[b.Region[i]]++;
            }

            for (var r = 0; r < regions; r++)
            {
                (cx[r], cy[r]) = count[r] == 0 ? (0, 0) : (cx[r] / count[r], cy[r] / count[r]);
            }

            for (var i = 0; i < n; i++)
            {
                b.X[i] = x[i] - cx[b.Region[i]];
                b.Y[i] = y[i] - cy[b.Region[i]];
            }

            var source = planner.CoordinateOf(Planner.Source);
            srcRegion = sourceCluster >= 0 ? sourceCluster : knowledge is Knowledge.Coordinates or Knowledge.LocalCoordinatesInClusters or Knowledge.ParentLinksInClusters
                ? Enumerable.Range(0, regions).Where(r => count[r] > 0).MinBy(r => Dist(cx[r], cy[r], source.X, source.Y))
                : srcRegion;
            (b.CentreX, b.CentreY) = (cx, cy);
            (b.SourceX, b.SourceY) = (source.X - cx[srcRegion], source.Y - cy[srcRegion]);
        }

        var worst = new double[n];
        double treeSum = 0;
        var maxDepth = 0;
        var overBudget = 0;
        var delay = new double[n];
        var depth = new int[n];
        for (var s = 0; s < k; s++)
        {
            b.Tree(s, srcRegion, regions);

            // Delays along the tree (parents are attached before their children).
            foreach (var i in b.Order)
            {
                var parent = b.Parent[i];
                var (pNode, pDelay, pDepth) = parent < 0 ? (Planner.Source, 0.0, 0) : (peers[parent], delay[parent], depth[parent]);
                delay[i] = pDelay + (model.RttMs(pNode, peers[i]) / 2);
                depth[i] = pDepth + 1;
                maxDepth = Math.Max(maxDepth, depth[i]);
                worst[i] = s == 0 ? delay[i] : Math.Max(worst[i], delay[i]);
                treeSum += delay[i] / direct[i];
            }

            if (parents is not null)
            {
                parents[s] = (int[])b.Parent.Clone();
            }

            if (b.Order.Count != n)
            {
                throw new InvalidOperationException($"construction placed {b.Order.Count} of {n} peers in tree {s}");
            }

            overBudget += b.OverBudget();
        }

        double sum = 0, inSum = 0, inN = 0;
        var modelSource = model.RegionOf(0);
        for (var i = 0; i < n; i++)
        {
            var rdp = worst[i] / direct[i];
            sum += rdp;
            if (trueRegion[i] == modelSource)
            {
                inSum += rdp;
                inN++;
            }
        }

        return new Result(sum / n, inN == 0 ? 0 : inSum / inN, n == inN ? 0 : (sum - inSum) / (n - inN), treeSum / k / n, maxDepth, overBudget, regions);
    }

    /// <summary>
    /// Local coordinates from parent links (<see cref="RegionConstruction.LinkCoordinates"/>, <see cref="LocalRounds"/>
    /// rounds), starting from the planner's coordinates.
    /// </summary>
    private static NetworkCoordinate[] LinkCoordinates(Planner planner, int[] peers, int[] region, List<(int A, int B, double Rtt)> links)
    {
        var coords = new NetworkCoordinate[peers.Length];
        for (var i = 0; i < peers.Length; i++)
        {
            coords[i] = planner.CoordinateOf(peers[i]);
        }

        RegionConstruction.LinkCoordinates(coords, region, links, LocalRounds);
        return coords;
    }

    /// <summary>
    /// Peers of its own region each peer measures for its local coordinate (at 100k, seeds 1-5:
    /// 8 gave a mean RDP of 1.92-2.36 for the construction, 16 1.53-1.82; 32 gave 1.70 on seed 1).
    /// </summary>
    public const int LocalPings = 16;

    /// <summary>Rounds of one sample to each of those peers (as repeated pings over time would give).</summary>
    public const int LocalRounds = 20;

    /// <summary>
    /// Local coordinates: every peer starts from the planner's coordinate and measures
    /// <paramref name="pings"/> random peers of its own region (a seeded draw), then
    /// <paramref name="rounds"/> rounds in which each peer takes one Vivaldi sample to each of them
    /// (the RTTs are the model's; the other side moves too, as a ping is a sample for both).
    /// </summary>
    internal static NetworkCoordinate[] LocalCoordinates(Planner planner, WorldLatencyModel model, int[] peers, int[] region, int pings, int rounds)
    {
        var n = peers.Length;
        var coords = new NetworkCoordinate[n];
        var members = new Dictionary<int, List<int>>();
        for (var i = 0; i < n; i++)
        {
            coords[i] = planner.CoordinateOf(peers[i]);
            if (!members.TryGetValue(region[i], out var list))
            {
                members[region[i]] = list = [];
            }

            list.Add(i);
        }

        var random = new Random(7);
        var neighbours = new int[n][];
        var rtts = new double[n][];
        for (var i = 0; i < n; i++)
        {
            var list = members[region[i]];
            var count = Math.Min(pings, list.Count - 1);
            neighbours[i] = new int[Math.Max(0, count)];
            rtts[i] = new double[neighbours[i].Length];
            for (var j = 0; j < neighbours[i].Length; j++)
            {
                int other;
                do
                {
                    other = list[random.Next(list.Count)];
                }
                while (other == i);
                neighbours[i][j] = other;
                rtts[i][j] = model.RttMs(peers[i], peers[other]);
            }
        }

        var vivaldi = new Vivaldi(7);
        for (var round = 0; round < rounds; round++)
        {
            for (var i = 0; i < n; i++)
            {
                for (var j = 0; j < neighbours[i].Length; j++)
                {
                    var other = neighbours[i][j];
                    var mine = coords[i];
                    coords[i] = vivaldi.Update(mine, coords[other], rtts[i][j]);
                    coords[other] = vivaldi.Update(coords[other], mine, rtts[i][j]);
                }
            }
        }

        return coords;
    }

    /// <summary>
    /// How well the planner's coordinates know a region from the inside: over 20,000 random pairs
    /// of live peers of one model region (a seeded draw), the median and 90th percentile of
    /// |estimated RTT - RTT| (ms), the median relative error, and the median error of the plane
    /// distance against the model's distance of the two points (ms).
    /// </summary>
    public static (double Median, double P90, double MedianRelative, double PlaneMedian) SameRegionError(Planner planner, WorldLatencyModel model, int seed)
    {
        var peers = planner.Peers.ToArray();
        var random = new Random(seed);
        var error = new List<double>();
        var relative = new List<double>();
        var plane = new List<double>();
        for (var tries = 0; error.Count < 20_000 && peers.Length > 1 && tries < 2_000_000; tries++)
        {
            var a = peers[random.Next(peers.Length)];
            var c = peers[random.Next(peers.Length)];
            var (ra, ax, ay) = model.PointOf(a);
            var (rc, bx, by) = model.PointOf(c);
            if (a == c || ra != rc)
            {
                continue;
            }

            var rtt = model.RttMs(a, c);
            var ca = planner.CoordinateOf(a);
            var cc = planner.CoordinateOf(c);
            error.Add(Math.Abs(ca.EstimateRtt(cc) - rtt));
            relative.Add(Math.Abs(ca.EstimateRtt(cc) - rtt) / rtt);
            plane.Add(Math.Abs(Dist(ax, ay, bx, by) - Dist(ca.X, ca.Y, cc.X, cc.Y)));
        }

        if (error.Count == 0)
        {
            return (0, 0, 0, 0);
        }

        error.Sort();
        relative.Sort();
        plane.Sort();
        return (error[error.Count / 2], error[error.Count * 9 / 10], relative[relative.Count / 2], plane[plane.Count / 2]);
    }

    private static double Dist(double ax, double ay, double bx, double by) => RegionConstruction.Dist(ax, ay, bx, by);
}

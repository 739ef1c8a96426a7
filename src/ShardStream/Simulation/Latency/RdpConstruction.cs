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

    /// <summary>Leader clustering's radius (ms in the plane): a point farther than this from every cluster's first point opens a new one.</summary>
    public const double ClusterRadiusMs = 60;

    /// <summary>Clusters whose centres lie closer than this (ms) are merged (nearest pair first).</summary>
    public const double ClusterMergeMs = 50;

    /// <summary>Mean RDP over peers (slowest tree), of the source's region's peers and of the others, per single tree, the deepest peer, the peers whose children exceed their budget in a tree (0: the plan is valid), and the regions it built (clusters with <see cref="Knowledge.Coordinates"/>).</summary>
    public readonly record struct Result(double MeanRdp, double SourceRegionRdp, double OtherRegionsRdp, double MeanTreeRdp, int MaxDepth, int OverBudget, int Regions);

    /// <summary>
    /// Most ms of core RTT to the source (its measured RTT less both coordinates' heights) for a
    /// peer to be in the source's cluster (<see cref="LatencyPlacement.NeighbourhoodMs"/>: less
    /// than between any two hubs of the world model).
    /// </summary>
    public const double SourceClusterMs = LatencyPlacement.NeighbourhoodMs;

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
        var b = new Builder(n);
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

                regions = ClusterPlane(x, y, b.Region);
                (regions, sourceCluster) = SourceCluster(x, y, core, b.Region, regions, b.Cap.DefaultIfEmpty(1).Max());
            }

            var local = knowledge switch
            {
                Knowledge.LocalCoordinatesInModelRegions or Knowledge.LocalCoordinatesInClusters => LocalCoordinates(planner, model, peers, b.Region, LocalPings, LocalRounds),
                Knowledge.ParentLinksInClusters => LinkCoordinates(planner, peers, b.Region, links!, LocalRounds),
                _ => null,
            };
            for (var i = 0; i < n; i++)
            {
                var c = local is null ? planner.CoordinateOf(peers[i]) : local[i];
                (x[i], y[i], b.Access[i]) = (c.X, c.Y, c.Height);
            }

            if (knowledge == Knowledge.Coordinates)
            {
                regions = ClusterPlane(x, y, b.Region);
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
            b.Begin(s);
            var byRegion = new List<int>[regions];
            for (var r = 0; r < regions; r++)
            {
                byRegion[r] = [];
            }

            for (var i = 0; i < n; i++)
            {
                byRegion[b.Region[i]].Add(i);
            }

            // The first relay: the source's region's best (any region's if it has none).
            var r1 = b.Best(byRegion[srcRegion], b.SourceX, b.SourceY) is var best && best >= 0 ? best : b.Best([.. Enumerable.Range(0, n)], b.SourceX, b.SourceY);
            b.Attach(r1, -1);
            var slots = b.Cap[r1];
            var ordered = Enumerable.Range(0, regions).Where(r => r != srcRegion && byRegion[r].Count > 0).OrderByDescending(r => byRegion[r].Count).ToList();
            // More regions than the first relay has slots for entries (clusters can be): the others
            // join the nearest region that has one, or the source's if that is nearer.
            var entered = ordered.Take(Math.Max(0, slots - 1)).ToList();
            foreach (var r in ordered.Skip(entered.Count))
            {
                var near = entered.Append(srcRegion).MinBy(e => Dist(b.CentreX[e], b.CentreY[e], b.CentreX[r], b.CentreY[r]));
                byRegion[near].AddRange(byRegion[r]);
                byRegion[r].Clear();
            }

            var rest = new List<int>(byRegion[srcRegion]);
            rest.Remove(r1);
            foreach (var r in entered)
            {
                var members = byRegion[r];
                members.Remove(r1);
                var entry = slots > 1 ? b.Best(members, 0, 0) : -1;
                if (entry < 0)
                {
                    rest.AddRange(members); // no slot or no relay of its own: fed with the source's region
                    continue;
                }

                b.Attach(entry, r1);
                slots--;
                members.Remove(entry);
                b.FillRegion(entry, members);
            }

            b.FillRegion(r1, rest);
            b.Leftovers();

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
    /// Regions from points of the plane alone (<paramref name="region"/>[i] set for every point;
    /// returns the number of regions): leader clustering in id order with
    /// <see cref="ClusterRadiusMs"/>, 8 rounds of Lloyd's k-means in which clusters of fewer than
    /// 1/400 of the points dissolve into the nearest, then clusters whose centres are closer than
    /// <see cref="ClusterMergeMs"/> merge. A region of the model has a radius of 15-30 ms and any two
    /// hubs are 56 ms apart or more; the plane, which cannot hold the hub table exactly, splits
    /// some regions and brings others together, so clusters are regions only roughly. (On seed 1 at
    /// 100k, four settings tried: radius 60 with merges at 40 or 50, radius 40 with merges at 45,
    /// radius 80 without merges; this one gave the lowest mean RDP.)
    /// </summary>
    internal static int ClusterPlane(double[] x, double[] y, int[] region)
    {
        var n = x.Length;
        var cx = new List<double>();
        var cy = new List<double>();
        for (var i = 0; i < n; i++)
        {
            var best = -1;
            var bestD = double.MaxValue;
            for (var c = 0; c < cx.Count; c++)
            {
                var d = Dist(cx[c], cy[c], x[i], y[i]);
                if (d < bestD)
                {
                    (bestD, best) = (d, c);
                }
            }

            if (best < 0 || bestD > ClusterRadiusMs)
            {
                cx.Add(x[i]);
                cy.Add(y[i]);
                best = cx.Count - 1;
            }

            region[i] = best;
        }

        var m = cx.Count;
        var count = new int[m];
        var sx = new double[m];
        var sy = new double[m];
        for (var round = 0; round < 8; round++)
        {
            Array.Clear(sx);
            Array.Clear(sy);
            Array.Clear(count);
            for (var i = 0; i < n; i++)
            {
                sx[region[i]] += x[i];
                sy[region[i]] += y[i];
                count[region[i]]++;
            }

            var kept = new List<int>();
            for (var c = 0; c < m; c++)
            {
                if (count[c] > 0)
                {
                    (cx[c], cy[c]) = (sx[c] / count[c], sy[c] / count[c]);
                }

                if (count[c] >= Math.Max(1, n / 400))
                {
                    kept.Add(c);
                }
            }

            if (kept.Count == 0)
            {
                break;
            }

            for (var i = 0; i < n; i++)
            {
                var best = kept[0];
                var bestD = double.MaxValue;
                foreach (var c in kept)
                {
                    var d = Dist(cx[c], cy[c], x[i], y[i]);
                    if (d < bestD)
                    {
                        (bestD, best) = (d, c);
                    }
                }

                region[i] = best;
            }
        }

        Array.Clear(count);
        foreach (var c in region)
        {
            count[c]++;
        }

        // Clusters whose centres are closer than ClusterMergeMs merge, nearest pair first.
        var into = Enumerable.Range(0, m).ToArray();
        while (true)
        {
            var (ba, bb, bd) = (-1, -1, ClusterMergeMs);
            for (var a = 0; a < m; a++)
            {
                for (var c = a + 1; c < m; c++)
                {
                    if (count[a] > 0 && count[c] > 0 && Dist(cx[a], cy[a], cx[c], cy[c]) is var d && d < bd)
                    {
                        (ba, bb, bd) = (a, c, d);
                    }
                }
            }

            if (ba < 0)
            {
                break;
            }

            var total = count[ba] + count[bb];
            cx[ba] = ((cx[ba] * count[ba]) + (cx[bb] * count[bb])) / total;
            cy[ba] = ((cy[ba] * count[ba]) + (cy[bb] * count[bb])) / total;
            (count[ba], count[bb]) = (total, 0);
            for (var c = 0; c < m; c++)
            {
                if (into[c] == bb)
                {
                    into[c] = ba;
                }
            }
        }

        // Dense region numbers.
        var number = new int[m];
        var regions = 0;
        for (var c = 0; c < m; c++)
        {
            number[c] = count[c] > 0 ? regions++ : -1;
        }

        for (var i = 0; i < n; i++)
        {
            region[i] = number[into[region[i]]];
        }

        return regions;
    }

    /// <summary>
    /// The source's cluster from what the coordinator measures itself: every peer whose RTT to the
    /// source (the least of its control link's, or its join's; <see cref="Planner.RecordedSourceRtt"/>)
    /// less both coordinates' heights (<paramref name="coreToSource"/>, NaN if none) is within
    /// <see cref="SourceClusterMs"/> leaves its cluster of the plane (<paramref name="region"/>) for
    /// a cluster of its own. Then, while more than <paramref name="maxRegions"/> clusters have peers
    /// (the first relay feeds one entry per region and the source's region: its budget), the
    /// smallest other than the source's joins the nearest other than the source's (centres in the
    /// plane). Returns the number of clusters (numbered densely) and the source's (-1 if no peer
    /// is near the source by its RTT: then nothing changed).
    /// </summary>
    /// <remarks>
    /// Why: the plane's clusters are regions only roughly, and the source's region suffers most
    /// from a wrong one (its peers' direct delay is a few ms). On seeds 3 and 5 at 100k the
    /// construction from plane clusters alone gave its peers an RDP of 20-36; the RTT the
    /// coordinator measures to each peer tells them apart (10,020 peers on seed 3: 78 of another
    /// region, 2 of the source's missed; 15,202 on seed 5: 100 and 0). The merge keeps a cluster
    /// from being fed through the source's region's subtree, where it would sit high by its
    /// distance to its own centre (the construction's rule for clusters beyond the entries).
    /// </remarks>
    internal static (int Regions, int Source) SourceCluster(double[] x, double[] y, double[] coreToSource, int[] region, int regions, int maxRegions)
    {
        var n = x.Length;
        var source = regions;
        var any = false;
        for (var i = 0; i < n; i++)
        {
            if (coreToSource[i] <= SourceClusterMs)
            {
                region[i] = source;
                any = true;
            }
        }

        if (!any)
        {
            return (regions, -1);
        }

        var m = regions + 1;
        var sx = new double[m];
        var sy = new double[m];
        var count = new int[m];
        while (true)
        {
            Array.Clear(sx);
            Array.Clear(sy);
            Array.Clear(count);
            for (var i = 0; i < n; i++)
            {
                sx[region[i]] += x[i];
                sy[region[i]] += y[i];
                count[region[i]]++;
            }

            var others = Enumerable.Range(0, m).Where(c => c != source && count[c] > 0).ToList();
            if (others.Count + 1 <= maxRegions || others.Count < 2)
            {
                break;
            }

            var small = others.MinBy(c => count[c]);
            var into = others.Where(c => c != small).MinBy(c => Dist(sx[c] / count[c], sy[c] / count[c], sx[small] / count[small], sy[small] / count[small]));
            for (var i = 0; i < n; i++)
            {
                region[i] = region[i] == small ? into : region[i];
            }
        }

        var number = new int[m];
        var dense = 0;
        for (var c = 0; c < m; c++)
        {
            number[c] = count[c] > 0 ? dense++ : -1;
        }

        for (var i = 0; i < n; i++)
        {
            region[i] = number[region[i]];
        }

        return (dense, number[source]);
    }

    /// <summary>
    /// Local coordinates from parent links: every peer starts from the planner's coordinate, and
    /// <paramref name="rounds"/> rounds follow in which every link of <paramref name="links"/>
    /// (peer indices and RTT) whose two ends are in one cluster (<paramref name="region"/>) is one
    /// Vivaldi sample for both ends. A coordinator can fit these itself from what heartbeats report
    /// (the RTT of each peer's link to each parent); repeated reports of one link are the rounds.
    /// </summary>
    internal static NetworkCoordinate[] LinkCoordinates(Planner planner, int[] peers, int[] region, List<(int A, int B, double Rtt)> links, int rounds)
    {
        var n = peers.Length;
        var coords = new NetworkCoordinate[n];
        for (var i = 0; i < n; i++)
        {
            coords[i] = planner.CoordinateOf(peers[i]);
        }

        var vivaldi = new Vivaldi(7);
        for (var round = 0; round < rounds; round++)
        {
            foreach (var (a, c, rtt) in links)
            {
                if (region[a] != region[c])
                {
                    continue;
                }

                var mine = coords[a];
                coords[a] = vivaldi.Update(mine, coords[c], rtt);
                coords[c] = vivaldi.Update(coords[c], mine, rtt);
            }
        }

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

    private static double Dist(double ax, double ay, double bx, double by) => Math.Sqrt(((ax - bx) * (ax - bx)) + ((ay - by) * (ay - by)));

    private sealed class Builder(int n)
    {
        // Regions' centres and the source's point relative to its region's centre (the model's
        // points are relative to their hub, where the source sits: all zero).
        public double[] CentreX = new double[WorldLatencyModel.Regions.Length], CentreY = new double[WorldLatencyModel.Regions.Length];
        public double SourceX, SourceY;
        public readonly int[] Region = new int[n], Home = new int[n], Cap = new int[n], Parent = new int[n], Children = new int[n];
        public readonly double[] X = new double[n], Y = new double[n], Access = new double[n];
        public readonly List<int> Order = new(n);
        private int _shard;

        public void Begin(int shard)
        {
            _shard = shard;
            Order.Clear();
            Array.Fill(Parent, -2);
            Array.Clear(Children);
        }

        public bool IsRelay(int i) => Home[i] == _shard && Cap[i] > 0;

        // Per node, its one-way delay from its region's entry (ms; 0 for an entry and the first
        // relay), by the same-region rule of the world model from what the construction is given:
        // 2 ms, the distance of the two points and both access delays, halved.
        private readonly double[] _inner = new double[n];

        /// <summary>One-way delay (ms) of an edge between two nodes of one region, by the knowledge given.</summary>
        private double Edge(int a, int b) => (2 + Math.Sqrt(((X[a] - X[b]) * (X[a] - X[b])) + ((Y[a] - Y[b]) * (Y[a] - Y[b]))) + Access[a] + Access[b]) / 2;

        public void Attach(int i, int parent)
        {
            Parent[i] = parent;
            if (parent >= 0)
            {
                Children[parent]++;
                _inner[i] = Region[i] == Region[parent] ? _inner[parent] + Edge(parent, i) : 0;
            }
            else
            {
                _inner[i] = 0;
            }

            Order.Add(i);
        }

        public int OverBudget()
        {
            var over = 0;
            for (var i = 0; i < Children.Length; i++)
            {
                over += Children[i] > (IsRelay(i) ? Cap[i] : 0) ? 1 : 0;
            }

            return over;
        }

        /// <summary>The relay among <paramref name="members"/> with the least access plus half its detour from (qx, qy) to their centroid; -1 if none.</summary>
        public int Best(IReadOnlyList<int> members, double qx, double qy)
        {
            double cx = 0, cy = 0;
            foreach (var i in members)
            {
                cx += X[i];
                cy += Y[i];
            }

            if (members.Count > 0)
            {
                cx /= members.Count;
                cy /= members.Count;
            }

            var straight = Math.Sqrt(((cx - qx) * (cx - qx)) + ((cy - qy) * (cy - qy)));
            var best = -1;
            var bestCost = double.MaxValue;
            foreach (var i in members)
            {
                if (!IsRelay(i))
                {
                    continue;
                }

                var detour = Math.Sqrt(((X[i] - qx) * (X[i] - qx)) + ((Y[i] - qy) * (Y[i] - qy)))
                    + Math.Sqrt(((cx - X[i]) * (cx - X[i])) + ((cy - Y[i]) * (cy - Y[i]))) - straight;
                var cost = Access[i] + (detour / 2);
                if (cost < bestCost)
                {
                    bestCost = cost;
                    best = i;
                }
            }

            return best;
        }

        private readonly List<int> _left = [];

        private int Free(int i) => (IsRelay(i) ? Cap[i] : 0) - Children[i];

        private double Key(int i) => Access[i] + (Math.Sqrt((X[i] * X[i]) + (Y[i] * Y[i])) / 2);

        private double Angle(int i) => Math.Atan2(Y[i], X[i]);

        /// <summary>
        /// Below <paramref name="entry"/> (attached, at its region's hub end), the region's
        /// <paramref name="members"/>: its relays level by level, by access delay plus half their
        /// distance to the hub (short links and central places first), each under the relay of the
        /// level above with a free slot through which its delay from the entry is least
        /// (<see cref="Quickest"/>); then the others, each likewise under a relay of the last two
        /// levels with a free slot. Members no slot of the region holds wait for
        /// <see cref="Leftovers"/>.
        /// </summary>
        public void FillRegion(int entry, List<int> members)
        {
            var relays = members.Where(IsRelay).OrderBy(Key).ToList();
            var leaves = members.Where(i => !IsRelay(i)).OrderBy(Key).ToList();
            var level = new List<int> { entry };
            level.RemoveAll(i => Free(i) <= 0);
            var next = new List<int>();
            foreach (var r in relays)
            {
                if (level.Count == 0)
                {
                    (level, next) = (next, []);
                    level.Sort((a, c) => Angle(a).CompareTo(Angle(c)));
                }

                if (level.Count == 0)
                {
                    _left.Add(r);
                    continue;
                }

                var parent = Quickest(level, r);
                Attach(r, parent);
                next.Add(r);
                if (Free(parent) <= 0)
                {
                    level.Remove(parent);
                }
            }

            var open = level.Concat(next).Where(i => Free(i) > 0).ToList();
            open.Sort((a, c) => Angle(a).CompareTo(Angle(c)));
            foreach (var leaf in leaves)
            {
                if (open.Count == 0)
                {
                    _left.Add(leaf);
                    continue;
                }

                var parent = Quickest(open, leaf);
                Attach(leaf, parent);
                if (Free(parent) <= 0)
                {
                    open.Remove(parent);
                }
            }
        }

        /// <summary>
        /// Of the 16 members of <paramref name="sorted"/> (by angle around the hub, every one with a
        /// free slot) nearest <paramref name="i"/> by angle, the one through which <paramref name="i"/>'s
        /// delay from the region's entry is least (the member's own delay from the entry plus the
        /// edge): a parent a few ms farther but a level or a slow access link less deep wins.
        /// </summary>
        private int Quickest(List<int> sorted, int i)
        {
            var a = Angle(i);
            int lo = 0, hi = sorted.Count;
            while (lo < hi)
            {
                var mid = (lo + hi) / 2;
                if (Angle(sorted[mid]) < a)
                {
                    lo = mid + 1;
                }
                else
                {
                    hi = mid;
                }
            }

            var best = sorted[lo % sorted.Count];
            var bestD = double.MaxValue;
            for (var d = -8; d < 8; d++)
            {
                var c = sorted[(((lo + d) % sorted.Count) + sorted.Count) % sorted.Count];
                var delay = _inner[c] + Edge(c, i);
                if (delay < bestD)
                {
                    bestD = delay;
                    best = c;
                }
            }

            return best;
        }

        /// <summary>Members no slot of their region held: under any relay of the tree with a free slot (or over budget, counted, if none).</summary>
        public void Leftovers()
        {
            var at = 0;
            foreach (var i in _left)
            {
                while (at < Order.Count && Free(Order[at]) <= 0)
                {
                    at++;
                }

                Attach(i, at < Order.Count ? Order[at] : Order[0]);
            }

            _left.Clear();
        }
    }
}

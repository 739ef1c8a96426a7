using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace ShardStream.Topology;

/// <summary>
/// A construction of whole shard trees by regions (docs/topology.md, "The construction with the
/// quickest parent"): the source feeds one entry relay per region near its centre, and each
/// region's subtree is filled level by level, relays with short access links and central places
/// first, each under the relay of the level above through which its delay from the region's entry
/// is least. Regions are clusters of a coordinate plane (<see cref="ClusterPlane"/>, the source's by
/// measured RTT: <see cref="SourceCluster"/>); inside a cluster, local coordinates
/// (<see cref="LinkCoordinates"/>). The simulator's analysis (<c>RdpConstruction</c>) and the
/// planner's rebuild (<see cref="Planner.RebuildLatency"/>) share it.
/// </summary>
internal static class RegionConstruction
{
    /// <summary>Leader clustering's radius (ms in the plane): a point farther than this from every cluster's first point opens a new one.</summary>
    public const double ClusterRadiusMs = 60;

    /// <summary>Clusters whose centres lie closer than this (ms) are merged (nearest pair first).</summary>
    public const double ClusterMergeMs = 50;

    /// <summary>
    /// Most ms of core RTT to the source (its measured RTT less both coordinates' heights) for a
    /// peer to be in the source's cluster (<see cref="LatencyPlacement.NeighbourhoodMs"/>: less
    /// than between any two hubs of the world model).
    /// </summary>
    public const double SourceClusterMs = LatencyPlacement.NeighbourhoodMs;

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
    internal static int ClusterPlane(double[] x, double[] y, int[] region, CancellationToken cancellationToken = default)
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
            cancellationToken.ThrowIfCancellationRequested();
            SumByRegion(x, y, region, sx, sy, count);

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
    /// source (the least of its control link's, or its join's; <c>Planner.RecordedSourceRtt</c>)
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
            SumByRegion(x, y, region, sx, sy, count);

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
    /// Local coordinates from parent links: <paramref name="coords"/> (every peer's start) are
    /// moved by <paramref name="rounds"/> rounds in which every link of <paramref name="links"/>
    /// (peer indices and RTT) whose two ends are in one cluster (<paramref name="region"/>) is one
    /// Vivaldi sample for both ends. A coordinator can fit these itself from what heartbeats report
    /// (the RTT of each peer's link to each parent); repeated reports of one link are the rounds.
    /// </summary>
    internal static void LinkCoordinates(NetworkCoordinate[] coords, int[] region, List<(int A, int B, double Rtt)> links, int rounds, CancellationToken cancellationToken = default)
    {
        var vivaldi = new Vivaldi(7);
        var all = CollectionsMarshal.AsSpan(links);
        for (var round = 0; round < rounds; round++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            for (var j = 0; j < all.Length; j++)
            {
                // A link's far end is a peer read at random (32 MB of coordinates at 1M peers):
                // one a few links ahead is requested now, so that its read overlaps these updates.
                if (j + LinkPrefetchAhead < all.Length)
                {
                    Prefetch(coords, region, all[j + LinkPrefetchAhead].B);
                }

                var (a, c, rtt) = all[j];
                if (region[a] != region[c])
                {
                    continue;
                }

                var mine = coords[a];
                coords[a] = vivaldi.Update(mine, coords[c], rtt);
                coords[c] = vivaldi.Update(coords[c], mine, rtt);
            }
        }
    }

    /// <summary>Links ahead of the one updated whose far end's coordinate and cluster <see cref="LinkCoordinates"/> requests.</summary>
    private const int LinkPrefetchAhead = 8;

    /// <summary>Starts reading peer index <paramref name="i"/>'s coordinate and cluster into the cache (a hint: no effect on the result).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void Prefetch(NetworkCoordinate[] coords, int[] region, int i)
    {
        if (Sse.IsSupported && (uint)i < (uint)coords.Length && (uint)i < (uint)region.Length)
        {
            Sse.Prefetch0(Unsafe.AsPointer(ref coords[i]));
            Sse.Prefetch0(Unsafe.AsPointer(ref region[i]));
        }
    }

    /// <summary>Distance of two points of the plane (ms).</summary>
    /// <summary>Each region's count of points and the sums of their x and y (for its centroid), into the arrays given.</summary>
    private static void SumByRegion(double[] x, double[] y, int[] region, double[] sx, double[] sy, int[] count)
    {
        Array.Clear(sx);
        Array.Clear(sy);
        Array.Clear(count);
        for (var i = 0; i < x.Length; i++)
        {
            sx[region[i]] += x[i];
            sy[region[i]] += y[i];
            count[region[i]]++;
        }
    }

    internal static double Dist(double ax, double ay, double bx, double by) => Math.Sqrt(((ax - bx) * (ax - bx)) + ((ay - by) * (ay - by)));

    /// <summary>
    /// The construction's state for one plan: per peer index its cluster, point (relative to its
    /// cluster's centre), access delay, home and budget, and per tree its parent and children.
    /// </summary>
    internal sealed class Builder(int n, int regions)
    {
        // Regions' centres and the source's point relative to its region's centre (the model's
        // points are relative to their hub, where the source sits: all zero).
        public double[] CentreX = new double[regions], CentreY = new double[regions];
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

        /// <summary>When set, the cap of peer index i in tree s is <c>CapByShard[s][i]</c> (a planner's per-tree caps); else its budget in its home tree, 0 elsewhere.</summary>
        public int[][]? CapByShard;

        /// <summary>How many children peer index <paramref name="i"/> may have in the tree being built.</summary>
        public int CapOf(int i) => CapByShard is { } caps ? caps[_shard][i] : (Home[i] == _shard ? Cap[i] : 0);

        /// <summary>True when peer index <paramref name="i"/> may feed children in the tree being built.</summary>
        public bool IsRelay(int i) => CapOf(i) > 0;

        // Per node, its one-way delay from its region's entry (ms; 0 for an entry and the first
        // relay), by the same-region rule of the world model from what the construction is given:
        // 2 ms, the distance of the two points and both access delays, halved.
        private readonly double[] _inner = new double[n];

        // Per node attached, its depth in the tree being built (1 for the source's children).
        private readonly int[] _depth = new int[n];

        /// <summary>The peers of each of the <paramref name="regions"/> regions, by <see cref="Region"/>.</summary>
        private List<int>[] ByRegion(int regions)
        {
            var byRegion = new List<int>[regions];
            for (var r = 0; r < regions; r++)
            {
                byRegion[r] = [];
            }

            for (var i = 0; i < n; i++)
            {
                byRegion[Region[i]].Add(i);
            }

            return byRegion;
        }

        /// <summary>
        /// Builds tree <paramref name="shard"/> over all peer indices (<see cref="Order"/>: parents
        /// before children; <see cref="Parent"/>: -1 for the source's children): the source feeds the
        /// best relay of <paramref name="srcRegion"/> and, with more than one of
        /// <paramref name="sourceSlots"/>, the entries of the largest other regions; that first relay
        /// feeds one entry per other region after them (the largest first, as its slots allow; the
        /// others join the nearest region that has one, or the source's) and the rest of its region;
        /// each region is filled by <see cref="FillRegion"/>. A tree in which no peer may relay (fewer
        /// peers than striped trees, or only viewers) has no first relay: nothing is attached, and
        /// <see cref="Order"/> stays empty.
        /// </summary>
        /// <remarks>
        /// The rebuild builds from one slot first (<see cref="RebuildSnapshot.Plan"/>) and from all
        /// of them only when neither that nor <see cref="BoundedTree"/> keeps the depth bound: the
        /// striped tree in which the source has two slots (K = 2-8, upload (K + 1) / K) is bounded a
        /// level less than the others, and from one slot small overlays ended past that bound
        /// (docs/topology.md, "The rebuild at small striped overlays").
        /// </remarks>
        public void Tree(int shard, int srcRegion, int regions, int sourceSlots = 1, CancellationToken cancellationToken = default)
        {
            Begin(shard);
            var byRegion = ByRegion(regions);
            // The first relay: the source's region's best (any region's if it has none).
            var r1 = Best(byRegion[srcRegion], SourceX, SourceY) is var best && best >= 0 ? best : Best([.. Enumerable.Range(0, n)], SourceX, SourceY);
            if (r1 < 0)
            {
                return; // no relay in this tree: it cannot be built this way
            }

            Attach(r1, -1);
            var slots = CapOf(r1);
            var fromSource = Math.Max(0, sourceSlots - 1);
            var ordered = Enumerable.Range(0, regions).Where(r => r != srcRegion && byRegion[r].Count > 0).OrderByDescending(r => byRegion[r].Count).ToList();
            // More regions than the source's other slots and the first relay's have room for
            // entries (clusters can be): the others join the nearest region that has one, or the
            // source's if that is nearer.
            var entered = ordered.Take(fromSource + Math.Max(0, slots - 1)).ToList();
            foreach (var r in ordered.Skip(entered.Count))
            {
                var near = entered.Append(srcRegion).MinBy(e => Dist(CentreX[e], CentreY[e], CentreX[r], CentreY[r]));
                byRegion[near].AddRange(byRegion[r]);
                byRegion[r].Clear();
            }

            var rest = new List<int>(byRegion[srcRegion]);
            rest.Remove(r1);
            foreach (var r in entered)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var members = byRegion[r];
                members.Remove(r1);
                var entry = fromSource > 0 || slots > 1 ? Best(members, 0, 0) : -1;
                if (entry < 0)
                {
                    rest.AddRange(members); // no slot or no relay of its own: fed with the source's region
                    continue;
                }

                if (fromSource > 0)
                {
                    Attach(entry, -1);
                    fromSource--;
                }
                else
                {
                    Attach(entry, r1);
                    slots--;
                }

                members.Remove(entry);
                FillRegion(entry, members);
            }

            cancellationToken.ThrowIfCancellationRequested();
            FillRegion(r1, rest);
            Leftovers();
        }

        /// <summary>
        /// Builds tree <paramref name="shard"/> as <see cref="Tree"/> does, for relays of few slots
        /// (binary trees, K = 2 and 3), within <paramref name="depthBound"/>: every cluster gets one
        /// entry, at most as deep as its size allows (its own subtree filled by levels must end
        /// within the bound), and the source's <paramref name="sourceSlots"/> reach the entries
        /// through a backbone of the source's region's relays (the best by access and place first):
        /// level by level, as many clusters as the rest still fits (Kraft's inequality with the
        /// backbone's least cap) take a slot of the level, the largest first, and the level's other
        /// slots that the rest needs get a backbone relay each. Then each cluster is filled from its
        /// entry (<see cref="FillRegion"/>), the source's region (its entry the best relay left
        /// near the source) with its members that are not in the backbone. Returns false when the
        /// clusters cannot be fitted within the bound: the tree is then not to be used (nor is one
        /// that the leftovers took deeper, which the caller finds from the tree's depth).
        /// </summary>
        public bool BoundedTree(int shard, int srcRegion, int regions, int sourceSlots, int depthBound, CancellationToken cancellationToken = default)
        {
            Begin(shard);
            _left.Clear();
            var byRegion = ByRegion(regions);
            var pending = new List<(int Region, int Deepest)>();
            for (var r = 0; r < regions; r++)
            {
                // A cluster with no relay is fed with the source's region.
                if (r != srcRegion && byRegion[r].Count > 0 && !byRegion[r].Exists(IsRelay))
                {
                    byRegion[srcRegion].AddRange(byRegion[r]);
                    byRegion[r].Clear();
                }
            }

            for (var r = 0; r < regions; r++)
            {
                if (byRegion[r].Count > 0 && (r != srcRegion || byRegion[r].Exists(IsRelay)))
                {
                    pending.Add((r, depthBound - Height(byRegion[r]) + 1));
                }
                else if (r == srcRegion)
                {
                    _left.AddRange(byRegion[r]); // no relay near the source: under any relay, at the end
                }
            }

            if (pending.Count == 0 || sourceSlots <= 0)
            {
                return false;
            }

            pending.Sort((a, c) => a.Deepest != c.Deepest ? a.Deepest.CompareTo(c.Deepest) : byRegion[c.Region].Count.CompareTo(byRegion[a.Region].Count));
            var backbone = byRegion[srcRegion].Where(i => CapOf(i) >= 2).OrderBy(i => Key(i)).ToList();
            var fan = backbone.Count == 0 ? 1 : backbone.Min(CapOf);
            var used = new HashSet<int>();
            var nextBackbone = 0;
            var entries = new List<(int Region, int Entry)>();
            var slots = Enumerable.Repeat(-1, sourceSlots).ToList();
            var at = 0;
            for (var d = 1; at < pending.Count; d++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                // The most clusters this level can take with the rest still fitting below it.
                var take = -1;
                var need = 0.0;
                for (var x = Math.Min(slots.Count, pending.Count - at); x >= 0 && take < 0; x--)
                {
                    var rest = 0.0;
                    var fits = true;
                    for (var j = at + x; j < pending.Count && fits; j++)
                    {
                        fits = pending[j].Deepest > d && fan >= 2;
                        rest += Math.Pow(fan, -(pending[j].Deepest - d));
                    }

                    if (fits && rest <= slots.Count - x + 1e-9)
                    {
                        (take, need) = (x, rest);
                    }
                }

                if (take < 0)
                {
                    return false;
                }

                var next = new List<int>();
                for (var j = 0; j < slots.Count; j++)
                {
                    if (j < take)
                    {
                        var (r, _) = pending[at + j];
                        var members = byRegion[r];
                        var entry = r == srcRegion ? Best([.. members.Where(i => !used.Contains(i))], SourceX, SourceY) : Best(members, 0, 0);
                        if (entry < 0)
                        {
                            return false;
                        }

                        used.Add(entry);
                        Attach(entry, slots[j]);
                        entries.Add((r, entry));
                    }
                    else if (j - take < Math.Ceiling(need - 1e-9))
                    {
                        while (nextBackbone < backbone.Count && used.Contains(backbone[nextBackbone]))
                        {
                            nextBackbone++;
                        }

                        if (nextBackbone == backbone.Count)
                        {
                            return false;
                        }

                        var relay = backbone[nextBackbone++];
                        used.Add(relay);
                        Attach(relay, slots[j]);
                        next.AddRange(Enumerable.Repeat(relay, CapOf(relay)));
                    }
                }

                at += take;
                slots = next;
            }

            foreach (var (r, entry) in entries)
            {
                cancellationToken.ThrowIfCancellationRequested();
                FillRegion(entry, [.. byRegion[r].Where(i => !used.Contains(i))]);
            }

            // What no cluster's subtree held: under any relay with a free slot (the caller checks
            // the depth of the tree built against the bound).
            Leftovers();
            return true;
        }

        /// <summary>
        /// The fewest levels a subtree of <paramref name="members"/> hung from one of them has when
        /// filled by levels, the largest caps first (<see cref="int.MaxValue"/> / 2 when they do not fit).
        /// </summary>
        private int Height(List<int> members)
        {
            var caps = members.Select(CapOf).OrderByDescending(c => c).ToList();
            var (placed, slots, depth) = (1, caps.Count > 0 ? caps[0] : 0, 1);
            while (placed < caps.Count)
            {
                if (slots == 0)
                {
                    return int.MaxValue / 2;
                }

                depth++;
                var take = Math.Min(slots, caps.Count - placed);
                slots = 0;
                for (var j = placed; j < placed + take; j++)
                {
                    slots += caps[j];
                }

                placed += take;
            }

            return depth;
        }

        /// <summary>One-way delay (ms) of an edge between two nodes of one region, by the knowledge given.</summary>
        private double Edge(int a, int b) => (2 + Dist(X[a], Y[a], X[b], Y[b]) + Access[a] + Access[b]) / 2;

        public void Attach(int i, int parent)
        {
            Parent[i] = parent;
            _depth[i] = parent >= 0 ? _depth[parent] + 1 : 1;
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
                over += Children[i] > CapOf(i) ? 1 : 0;
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

        private int Free(int i) => CapOf(i) - Children[i];

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

        /// <summary>
        /// Members no slot of their region held: each under the shallowest relay of the tree with a
        /// free slot (the first attached of those as shallow), or over budget, counted, if none.
        /// Until 2026-12-06 each went under the first relay attached with a free slot, which could
        /// be the first region's deepest while a relay a level or two higher had one: at 48 peers,
        /// K = 4, the plan ended a level past the bound of the tree where the source has two slots
        /// (docs/topology.md, "The rebuild at small striped overlays").
        /// </summary>
        public void Leftovers()
        {
            if (_left.Count == 0)
            {
                return;
            }

            var open = new PriorityQueue<int, (int Depth, int At)>();
            for (var j = 0; j < Order.Count; j++)
            {
                if (Free(Order[j]) > 0)
                {
                    open.Enqueue(Order[j], (_depth[Order[j]], j));
                }
            }

            foreach (var i in _left)
            {
                while (open.TryPeek(out var full, out _) && Free(full) <= 0)
                {
                    open.Dequeue();
                }

                Attach(i, open.TryPeek(out var parent, out _) ? parent : Order[0]);
                if (Free(i) > 0)
                {
                    open.Enqueue(i, (_depth[i], Order.Count - 1));
                }
            }

            _left.Clear();
        }
    }
}

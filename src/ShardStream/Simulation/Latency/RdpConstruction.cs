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
/// nearest relay (in the plane, among the 16 nearest by angle around the hub) of the level above
/// with a free slot; then every other peer of the region under the nearest relay of the last two
/// levels with a free slot. Peers no slot of their region holds go under any relay with one left
/// (none did in the runs of docs/topology.md). So a path crosses from the source's region to the
/// peer's once, near the hubs, then fans out through its region.
/// </remarks>
internal static class RdpConstruction
{
    /// <summary>Mean RDP over peers (slowest tree), of the source's region's peers and of the others, per single tree, the deepest peer, and the peers whose children exceed their budget in a tree (0: the plan is valid).</summary>
    public readonly record struct Result(double MeanRdp, double SourceRegionRdp, double OtherRegionsRdp, double MeanTreeRdp, int MaxDepth, int OverBudget);

    public static Result Build(Planner planner, WorldLatencyModel model)
    {
        var k = planner.ShardCount;
        var peers = planner.Peers.ToArray();
        var n = peers.Length;
        var b = new Builder(n);
        var srcRegion = model.RegionOf(0);
        var regions = WorldLatencyModel.Regions.Length;
        var direct = new double[n];
        for (var i = 0; i < n; i++)
        {
            var p = peers[i];
            (b.Region[i], b.X[i], b.Y[i]) = model.PointOf(p);
            b.Access[i] = model.AccessMs(p);
            b.Home[i] = planner.HomeShard(p);
            b.Cap[i] = planner.Budget(p);
            direct[i] = model.RttMs(0, p) / 2;
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
            var r1 = b.Best(byRegion[srcRegion], 0, 0) is var best && best >= 0 ? best : b.Best([.. Enumerable.Range(0, n)], 0, 0);
            b.Attach(r1, -1);
            var slots = b.Cap[r1];
            var rest = new List<int>(byRegion[srcRegion]);
            rest.Remove(r1);
            foreach (var r in Enumerable.Range(0, regions).Where(r => r != srcRegion && byRegion[r].Count > 0).OrderByDescending(r => byRegion[r].Count))
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

            if (b.Order.Count != n)
            {
                throw new InvalidOperationException($"construction placed {b.Order.Count} of {n} peers in tree {s}");
            }

            overBudget += b.OverBudget();
        }

        double sum = 0, inSum = 0, inN = 0;
        for (var i = 0; i < n; i++)
        {
            var rdp = worst[i] / direct[i];
            sum += rdp;
            if (b.Region[i] == srcRegion)
            {
                inSum += rdp;
                inN++;
            }
        }

        return new Result(sum / n, inN == 0 ? 0 : inSum / inN, n == inN ? 0 : (sum - inSum) / (n - inN), treeSum / k / n, maxDepth, overBudget);
    }

    private sealed class Builder(int n)
    {
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

        public void Attach(int i, int parent)
        {
            Parent[i] = parent;
            if (parent >= 0)
            {
                Children[parent]++;
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
        /// distance to the hub (short links and central places first), each under the nearest relay
        /// of the level above with a free slot; then the others, each under the nearest relay of the
        /// last two levels with a free slot. Members no slot of the region holds wait for
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

                var parent = Nearest(level, r);
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

                var parent = Nearest(open, leaf);
                Attach(leaf, parent);
                if (Free(parent) <= 0)
                {
                    open.Remove(parent);
                }
            }
        }

        /// <summary>The member of <paramref name="sorted"/> (by angle around the hub, every one with a free slot) nearest <paramref name="i"/> in the plane, among the 16 nearest by angle.</summary>
        private int Nearest(List<int> sorted, int i)
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
                var dist = ((X[c] - X[i]) * (X[c] - X[i])) + ((Y[c] - Y[i]) * (Y[c] - Y[i]));
                if (dist < bestD)
                {
                    bestD = dist;
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

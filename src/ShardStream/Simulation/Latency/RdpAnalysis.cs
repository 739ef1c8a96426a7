using ShardStream.Topology;

namespace ShardStream.Simulation;

/// <summary>
/// Where the mean RDP of a built overlay comes from under the <c>world</c> model, and a lower bound
/// of it that no placement within the budgets can beat (<c>simulate --rdp-breakdown</c>).
/// </summary>
/// <remarks>
/// <para>Breakdown: for every peer, its slowest tree's path (the one the RDP counts) is split into
/// the access delay of its two ends, the access delay of the relays on it (a relay's access link is
/// crossed twice, in and out: its whole access share of an RTT) and the core (the rest: distances
/// and hub-to-hub RTTs); peers of the source's region are reported apart.</para>
/// <para>Lower bound: a path's core delay is at least the direct one's under the metric closure of
/// the model (the hub table breaks the triangle inequality a little: Paris - Sydney 347 ms,
/// through Singapore 337), so RDP(p) &gt;= D*(p)/D(p) + A(p)/D(p), where A(p) is the relays' access
/// on p's slowest path, at least its mean over the K trees. In a tree whose source has c slots and
/// whose relays (its home peers) have at most F children, at most c(1 + F + ... + F^(j-1)) peers
/// sit at depth j or less, and a relay is the j-th ancestor of at most F^j peers; so the least sum
/// over peers of acc(j-th ancestor)/D(p) is found by rearrangement (the peers with the smallest
/// direct delay get the relays with the least access, F^j each; the c(F^j - 1)/(F - 1) with the
/// smallest direct delay are left out as possibly shallower). Summed over j and averaged over
/// the trees, that bounds the mean of A(p)/D(p) from below. Budgets and homes are the built plan's.</para>
/// <para>Per-hop base: a path of m hops to a peer of region R has a core of at least K(R, m) plus
/// the peer's distance to its hub (the plane parts add up to at least that: the source sits at its
/// hub), where K(R, m) is the least over c crossings of chain_c(S, R) + 2 (m - c): a hop inside a
/// region costs its 2 ms base, a crossing a hub RTT, chain_c the least sum of c of them from the
/// source's region S to R. Its envelope min over m' &gt;= m is nondecreasing and equals the closure
/// at m = 1, so a peer deeper than j pays at least half the envelope's step from j to j + 1 beyond
/// D*(p). At least N minus the places of depth &lt;= j are deeper than j: the smallest such
/// step/D(p) terms are summed, per level and tree. Each of the two terms is minimised on its own,
/// which can only lower the sum: still a bound.</para>
/// <para>With the aware planner, the mean RDP of <see cref="RdpConstruction"/> (a valid plan of the
/// same budgets from the model's true positions: an upper bound of the best) is printed too.</para>
/// </remarks>
internal static class RdpAnalysis
{

    public static void Write(Planner planner, WorldLatencyModel model, TextWriter o)
    {
        var k = planner.ShardCount;
        var peers = planner.Peers.ToArray();
        var n = peers.Length;
        var srcRegion = model.RegionOf(0);
        var accSrc = model.AccessMs(0);

        // The metric closure of the hub table (Floyd-Warshall over 10 hubs).
        var r = WorldLatencyModel.Regions.Length;
        var hub = new double[r, r];
        for (var a = 0; a < r; a++)
        {
            for (var b = 0; b < r; b++)
            {
                hub[a, b] = model.HubRtt(a, b);
            }
        }

        for (var m = 0; m < r; m++)
        {
            for (var a = 0; a < r; a++)
            {
                for (var b = 0; b < r; b++)
                {
                    hub[a, b] = Math.Min(hub[a, b], hub[a, m] + hub[m, b]);
                }
            }
        }

        var direct = new double[n];
        var directStar = new double[n];
        var index = new Dictionary<int, int>(n);
        for (var i = 0; i < n; i++)
        {
            var p = peers[i];
            index[p] = i;
            var rtt = model.RttMs(0, p);
            direct[i] = rtt / 2;
            var core = rtt - accSrc - model.AccessMs(p);
            var rp = model.RegionOf(p);
            var star = rp == srcRegion ? core : core - model.HubRtt(srcRegion, rp) + hub[srcRegion, rp];
            directStar[i] = (star + accSrc + model.AccessMs(p)) / 2;
        }

        // Decomposition of the worst tree's path, and the per-tree RDP.
        double sumRdp = 0, sumTreeRdp = 0, sumA = 0, sumE = 0, sumC = 0, sumD = 0, sumP = 0, sumDepth = 0;
        var inPaths = new Dictionary<string, (int Count, double Rdp)>();
        var outPaths = new Dictionary<string, (int Count, double Rdp)>();
        double inN = 0, inRdp = 0, outRdp = 0, inD = 0, inP = 0, inA = 0, outD = 0, outP = 0, outA = 0;
        for (var i = 0; i < n; i++)
        {
            var p = peers[i];
            double worst = -1, worstA = 0;
            var ws = 0;
            var worstDepth = 0;
            for (var s = 0; s < k; s++)
            {
                double path = 0, acc = 0;
                var depth = 0;
                var node = p;
                while (node != Planner.Source)
                {
                    var parent = planner.ParentOf(node, s);
                    path += model.RttMs(parent, node) / 2;
                    if (parent != Planner.Source)
                    {
                        acc += model.AccessMs(parent);
                    }

                    depth++;
                    node = parent;
                }

                sumTreeRdp += path / direct[i];
                if (path > worst)
                {
                    worst = path;
                    worstA = acc;
                    worstDepth = depth;
                    ws = s;
                }
            }

            {
                // The regions along the slowest tree's path, from the source down: S the source's
                // region, R the peer's own, X any other.
                var chain = new List<int>();
                for (var node = p; node != Planner.Source; node = planner.ParentOf(node, ws))
                {
                    chain.Add(model.RegionOf(node));
                }

                chain.Reverse();
                var own = model.RegionOf(p);
                var sig = string.Concat(chain.Select(r => r == srcRegion ? 'S' : r == own ? 'R' : 'X'));
                var paths = own == srcRegion ? inPaths : outPaths;
                var (count, rdp) = paths.GetValueOrDefault(sig);
                paths[sig] = (count + 1, rdp + (worst / direct[i]));
            }

            var e = (accSrc + model.AccessMs(p)) / 2;
            sumRdp += worst / direct[i];
            sumA += worstA;
            sumE += e;
            sumC += worst - worstA - e;
            sumD += direct[i];
            sumP += worst;
            sumDepth += worstDepth;
            if (model.RegionOf(p) == srcRegion)
            {
                inN++;
                inRdp += worst / direct[i];
                inD += direct[i];
                inP += worst;
                inA += worstA;
            }
            else
            {
                outRdp += worst / direct[i];
                outD += direct[i];
                outP += worst;
                outA += worstA;
            }
        }

        o.WriteLine($"rdp {(planner.LatencyAware ? "aware" : "blind")}: mean RDP (worst tree) {sumRdp / n:F2}, mean per-tree RDP {sumTreeRdp / n / k:F2}; worst tree: depth {sumDepth / n:F2}, path {sumP / n:F1} ms = endpoints' access {sumE / n:F1} + relays' access {sumA / n:F1} + core {sumC / n:F1}; direct {sumD / n:F1} ms");
        o.WriteLine($"    source region ({inN / n:P0} of peers): RDP {inRdp / inN:F2}, direct {inD / inN:F1} ms, path {inP / inN:F1} ms, relays' access {inA / inN:F1} ms; other regions: RDP {outRdp / (n - inN):F2}, direct {outD / (n - inN):F1}, path {outP / (n - inN):F1}, relays' access {outA / (n - inN):F1}");

        static string Top(Dictionary<string, (int Count, double Rdp)> paths, double n) =>
            string.Join(", ", paths.OrderByDescending(x => x.Value.Count).Take(4).Select(x => $"{x.Key} {x.Value.Count / n:P0} (RDP {x.Value.Rdp / x.Value.Count:F2})"));
        o.WriteLine($"    slowest tree's path by region from the source (S source's, R peer's own, X other): source region {Top(inPaths, inN)}; other regions {Top(outPaths, n - inN)}");

        // Lower bound (see remarks): peers by 1/D descending, each tree's relays by access ascending.
        var weights = new double[n];
        double starSum = 0;
        for (var i = 0; i < n; i++)
        {
            weights[i] = 1 / direct[i];
            starSum += directStar[i] / direct[i];
        }

        // Per-hop base (see remarks): the least core of a path of m hops from the source to a peer
        // of region R, less its plane part, is K(R, m) = min over c crossings of chain_c(S, R) +
        // 2 (m - c); its lower envelope over m' >= m is nondecreasing, and a peer deeper than j
        // pays at least half its step from j to j + 1 (one-way) over the direct route's closure.
        var regionOf = new int[n];
        for (var i = 0; i < n; i++)
        {
            regionOf[i] = model.RegionOf(peers[i]);
        }

        var step = HopSteps(model, srcRegion, hopLevels: 64);
        var hopByReach = new Dictionary<long, double>();
        var values = new double[n];

        Array.Sort(weights);
        Array.Reverse(weights);
        double relaySum = 0, hopSum = 0;
        for (var s = 0; s < k; s++)
        {
            var sourceCap = planner.ChildrenOf(Planner.Source, s).Count();
            var relays = peers.Where(p => planner.HomeShard(p) == s && planner.Budget(p) > 0).Select(p => (Acc: model.AccessMs(p), Cap: planner.Budget(p))).OrderBy(x => x.Acc).ToArray();
            var fan = relays.Length == 0 ? 1 : relays.Max(x => x.Cap);
            long reach = sourceCap; // most peers at depth <= level
            long span = 1; // most peers below a relay at exactly `level` levels
            for (var level = 1; reach < n; level++)
            {
                // The hop base: at least n - reach peers are deeper than `level`; the least sum of
                // their steps over their direct delay takes the smallest such terms.
                if (level < step.GetLength(1))
                {
                    var key = (reach * 64) + level;
                    if (!hopByReach.TryGetValue(key, out var h))
                    {
                        for (var i = 0; i < n; i++)
                        {
                            values[i] = step[regionOf[i], level] / direct[i];
                        }

                        Array.Sort(values);
                        h = 0;
                        for (var i = 0; i < n - reach; i++)
                        {
                            h += values[i];
                        }

                        hopByReach[key] = h;
                    }

                    hopSum += h;
                }

                span *= fan;
                // Peers deeper than `level`: all but the `reach` with the smallest direct delay.
                var w = (int)Math.Min(reach, n);
                var ri = 0;
                long used = 0;
                for (var j = w; j < n && relays.Length > 0; j++)
                {
                    if (used == span * relays[ri].Cap / fan)
                    {
                        ri++;
                        used = 0;
                        if (ri == relays.Length)
                        {
                            break; // fewer terms: still a lower bound
                        }
                    }

                    relaySum += weights[j] * relays[ri].Acc;
                    used++;
                }

                reach += sourceCap * span;
                if (level > 40)
                {
                    break;
                }
            }
        }

        o.WriteLine($"    lower bound of the mean RDP for these budgets: direct-path core {starSum / n:F3} + relays' access {relaySum / k / n:F3} + per-hop base {hopSum / k / n:F3} = {(starSum + (relaySum / k) + (hopSum / k)) / n:F3}");
        if (planner.LatencyAware)
        {
            // The same budgets, homes and source, built offline from the model (RdpConstruction).
            var c = RdpConstruction.Build(planner, model);
            o.WriteLine($"    offline construction from the model's true positions (an upper bound of the best; not a planner): mean RDP {c.MeanRdp:F2} (source region {c.SourceRegionRdp:F2}, other regions {c.OtherRegionsRdp:F2}; per single tree {c.MeanTreeRdp:F2}), max depth {c.MaxDepth}, peers over budget {c.OverBudget}");
            // The same construction from what a coordinator knows: the planner's coordinates.
            var fromCoordinates = RdpConstruction.Build(planner, model, RdpConstruction.Knowledge.Coordinates);
            o.WriteLine($"    the same construction from the planner's coordinates (points, heights; regions: {fromCoordinates.Regions} clusters of the plane): mean RDP {fromCoordinates.MeanRdp:F2} (source region {fromCoordinates.SourceRegionRdp:F2}, other regions {fromCoordinates.OtherRegionsRdp:F2}; per single tree {fromCoordinates.MeanTreeRdp:F2}), max depth {fromCoordinates.MaxDepth}, peers over budget {fromCoordinates.OverBudget}");
            var inRegions = RdpConstruction.Build(planner, model, RdpConstruction.Knowledge.CoordinatesInModelRegions);
            o.WriteLine($"    the same from the planner's coordinates within the model's true regions: mean RDP {inRegions.MeanRdp:F2} (source region {inRegions.SourceRegionRdp:F2}, other regions {inRegions.OtherRegionsRdp:F2}; per single tree {inRegions.MeanTreeRdp:F2}), max depth {inRegions.MaxDepth}, peers over budget {inRegions.OverBudget}");
            var (median, p90, relative, plane) = RdpConstruction.SameRegionError(planner, model, seed: 5);
            o.WriteLine($"    coordinates inside a region (random pairs of one region): |estimate - RTT| median {median:F1} ms (relative {relative:F3}), p90 {p90:F1} ms; plane distance against the model's: median error {plane:F1} ms");
            var local = RdpConstruction.Build(planner, model, RdpConstruction.Knowledge.LocalCoordinatesInModelRegions);
            o.WriteLine($"    the same from local coordinates within the model's true regions ({RdpConstruction.LocalPings} peers of its region measured by each peer, {RdpConstruction.LocalRounds} rounds): mean RDP {local.MeanRdp:F2} (source region {local.SourceRegionRdp:F2}, other regions {local.OtherRegionsRdp:F2}; per single tree {local.MeanTreeRdp:F2}), max depth {local.MaxDepth}, peers over budget {local.OverBudget}");
            // What a coordinator can know: clusters of the plane, the source's by its measured RTTs.
            var inClusters = RdpConstruction.Build(planner, model, RdpConstruction.Knowledge.LocalCoordinatesInClusters);
            o.WriteLine($"    the same from local coordinates within clusters of the plane, the source's by measured RTT to it ({inClusters.Regions} clusters; {RdpConstruction.LocalPings} peers of its cluster measured by each peer): mean RDP {inClusters.MeanRdp:F2} (source region {inClusters.SourceRegionRdp:F2}, other regions {inClusters.OtherRegionsRdp:F2}; per single tree {inClusters.MeanTreeRdp:F2}), max depth {inClusters.MaxDepth}, peers over budget {inClusters.OverBudget}");
            var rebuilds = RdpConstruction.RebuildsFromParentLinks(planner, model, RdpConstruction.ParentLinkRebuilds);
            for (var i = 0; i < rebuilds.Count; i++)
            {
                var (e, moved) = rebuilds[i];
                o.WriteLine($"    rebuild {i + 1} from parent links only (the same clusters; local coordinates fitted to the RTTs of the parent links within a cluster of the planner's plan{(i switch { 0 => "", 1 => " and rebuild 1", _ => $" and rebuilds 1-{i}" })}): mean RDP {e.MeanRdp:F2} (source region {e.SourceRegionRdp:F2}, other regions {e.OtherRegionsRdp:F2}; per single tree {e.MeanTreeRdp:F2}), max depth {e.MaxDepth}, peers over budget {e.OverBudget}, edges whose parent changed {moved}");
            }
        }
    }

    /// <summary>
    /// For every region R and depth j (up to <paramref name="hopLevels"/>), the least one-way core
    /// delay a peer of R deeper than j pays for its hop from depth j to j + 1 beyond the direct
    /// route's metric closure: half the step of the nondecreasing envelope of K(R, m) (see remarks).
    /// </summary>
    private static double[,] HopSteps(WorldLatencyModel model, int srcRegion, int hopLevels)
    {
        var r = WorldLatencyModel.Regions.Length;
        const double Base = WorldLatencyModel.IntraRegionBaseMs;
        var far = hopLevels * 1000.0; // beyond any path the envelope looks at
        // chain[c, R]: least sum of hub RTTs over c crossings from the source's region to R
        // (consecutive regions differ; 0 crossings only to the source's own region).
        var limit = hopLevels * 8; // K(R, m) >= 2 m, beyond any K(R, j) with j <= hopLevels
        var chain = new double[limit + 1, r];
        for (var b = 0; b < r; b++)
        {
            chain[0, b] = b == srcRegion ? 0 : double.PositiveInfinity;
        }

        for (var c = 1; c <= limit; c++)
        {
            for (var b = 0; b < r; b++)
            {
                var best = double.PositiveInfinity;
                for (var a = 0; a < r; a++)
                {
                    if (a != b)
                    {
                        best = Math.Min(best, chain[c - 1, a] + model.HubRtt(a, b));
                    }
                }

                chain[c, b] = best;
            }
        }

        var steps = new double[r, hopLevels];
        for (var b = 0; b < r; b++)
        {
            // K(R, m) for m = 1..limit, then its envelope from above: min over m' >= m.
            var kk = new double[limit + 1];
            for (var m = 1; m <= limit; m++)
            {
                var best = far;
                for (var c = 0; c <= m; c++)
                {
                    best = Math.Min(best, chain[c, b] + (Base * (m - c)));
                }

                kk[m] = best;
            }

            for (var m = limit - 1; m >= 1; m--)
            {
                kk[m] = Math.Min(kk[m], kk[m + 1]);
            }

            for (var j = 1; j < hopLevels; j++)
            {
                steps[b, j] = (kk[j + 1] - kk[j]) / 2;
            }
        }

        return steps;
    }
}

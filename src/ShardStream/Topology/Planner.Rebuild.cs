namespace ShardStream.Topology;

/// <summary>
/// Rebuilding a latency-aware plan by regions over time (docs/topology.md, "The rebuild by
/// regions"): the greedy join rules leave a mean RDP about twice what the same budgets allow, and a
/// leaf's move cannot change the shape of the trees. A rebuild computes whole trees as
/// <see cref="RegionConstruction"/> does, from what the coordinator knows (coordinates, the RTT it
/// measures to every peer, and the RTTs peers report of their parent links), and carries them out
/// as Moves, top down, at most a cap of them per call.
/// </summary>
public sealed partial class Planner
{
    /// <summary>Rounds of the local coordinates' fit to the reported parent-link RTTs, per rebuild.</summary>
    public const int RebuildFitRounds = 20;

    /// <summary>
    /// A new rebuild is planned only when its estimated mean delay from the source (slowest tree,
    /// local coordinates inside a cluster) is lower than the plan's by at least this share: a rebuild
    /// moves most edges, so one that gains little is not worth it (and estimates that wobble do not
    /// make the overlay churn).
    /// </summary>
    public const double RebuildMinGainShare = 0.02;

    /// <summary>Fewest live peers for a rebuild by default (<see cref="PlannerOptions.RebuildMinPeers"/>): below, the join and move rules do as well, and clusters are not regions.</summary>
    public const int RebuildMinPeers = 1000;

    /// <summary>
    /// Calls of <see cref="RebuildLatency"/> after a rebuild ended before the next of its series
    /// (<see cref="RebuildSeries"/>) is planned: the peers' new parent links get their samples first
    /// (<see cref="ImproveMinSamples"/>, about 14 s at one heartbeat a second), and planning, which
    /// reads every peer, runs at most once a minute at one call a second.
    /// </summary>
    public const int RebuildPauseCalls = 60;

    /// <summary>
    /// Rebuilds in a series: each one's parent links sharpen the next one's local coordinates, so
    /// they run one after another (at 100k peers, seeds 1-5, mean RDP under 2.0 after 2-4 of them).
    /// A series ends after this many, or at the first planned rebuild not worth carrying out; the
    /// next series starts once joins and leaves since the last one's start reach a tenth of the
    /// peers (a plan that did not change is not rebuilt again and again).
    /// </summary>
    public const int RebuildSeries = 4;

    private RebuildPlan? _rebuild;
    private int _rebuildPause;
    private int _rebuildsInSeries;
    private bool _rebuildSeriesOver;
    private long _rebuildSeriesChurn;
    /// <summary>
    /// Parent links remembered per peer for the local coordinates' fit (the latest ones, their
    /// RTTs as reported): a rebuild's fit uses the links of the plans before it as well, since the
    /// links of one plan alone (about 8 a peer, mostly to a few near relays) leave a cluster's
    /// inside loosely tied (docs/topology.md, "The rebuild by regions").
    /// </summary>
    public const int RebuildLinksKept = 32;

    private int[] _linkPeer = [];
    private float[] _linkRtt = [];
    private byte[] _linkNext = [];
    private int _rebuildsPlanned;

    /// <summary>Rebuilds planned so far (<see cref="RebuildLatency"/>), including those not worth carrying out.</summary>
    public int RebuildsPlanned => _rebuildsPlanned;

    private int _rebuildsDone;

    /// <summary>Rebuilds carried out to their end so far (<see cref="RebuildLatency"/>: every planned edge moved or skipped).</summary>
    public int RebuildsDone => _rebuildsDone;

    /// <summary>True while a planned rebuild still has edges to move.</summary>
    public bool RebuildInProgress => _rebuild is not null;

    /// <summary>
    /// Moves at most <paramref name="maxMoves"/> (peer, shard) edges towards a rebuild of every tree
    /// by regions. With no rebuild under way it plans one: clusters of the coordinate plane, the
    /// source's made of the peers whose RTT to the source (<see cref="SetSourceRtt"/>) says they are
    /// near it (<see cref="RegionConstruction.SourceCluster"/>); local coordinates, kept from one
    /// rebuild to the next, fitted to the RTT each peer reports of its link to each parent
    /// (<paramref name="measuredRtt"/>, with at least <see cref="ImproveMinSamples"/> samples) within
    /// a cluster; then each tree by <see cref="RegionConstruction.Builder.Tree"/> within the
    /// per-tree caps the plan has now. It is kept only if its estimated mean delay is lower than the
    /// plan's by <see cref="RebuildMinGainShare"/>; rebuilds run in series (<see cref="RebuildSeries"/>,
    /// <see cref="RebuildPauseCalls"/> apart). Then, top down in every tree (a node's new
    /// parent is in place before it), each node whose parent differs moves under its new one; when
    /// that parent is full, one of its children that is not yet in place takes the moving node's
    /// old place (two Moves). A move whose new parent is gone, or would be in the node's own subtree
    /// (joins and repairs change the plan meanwhile), is skipped. Empty for a latency-blind plan.
    /// </summary>
    /// <param name="maxMoves">At most this many (peer, shard) edges move in this call.</param>
    /// <param name="measuredRtt">What a peer reported it measured to a parent (null when nothing).</param>
    /// <returns>Every (peer, shard, new parent) change, already applied.</returns>
    public IReadOnlyList<Reattachment> RebuildLatency(int maxMoves, Func<int, int, MeasuredEdgeRtt?> measuredRtt)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxMoves);
        ArgumentNullException.ThrowIfNull(measuredRtt);
        _moves.Clear();
        if (_latency is null || _pristine || maxMoves == 0 || _peerCount < Options.RebuildMinPeers)
        {
            return [];
        }

        if (_rebuild is null)
        {
            if (_rebuildPause > 0)
            {
                _rebuildPause--;
                return [];
            }

            // Joins and leaves so far: every id ever given joined, the ones not alive left.
            var churn = (2L * (_nextId - 1)) - _peerCount;
            if (_rebuildSeriesOver)
            {
                if (churn - _rebuildSeriesChurn < _peerCount / 10)
                {
                    return [];
                }

                (_rebuildSeriesOver, _rebuildsInSeries) = (false, 0);
            }

            if (_rebuildsInSeries == 0)
            {
                _rebuildSeriesChurn = churn;
            }

            _rebuild = PlanRebuild(measuredRtt);
            _rebuildsInSeries++;
            _rebuildSeriesOver = _rebuild is null || _rebuildsInSeries >= RebuildSeries;
            if (_rebuild is null)
            {
                return [];
            }
        }

        var moved = 0;
        var plan = _rebuild;
        while (moved < maxMoves && plan.Shard < ShardCount)
        {
            var order = plan.Order[plan.Shard];
            if (plan.At >= order.Length)
            {
                plan.Shard++;
                plan.At = 0;
                continue;
            }

            var node = order[plan.At];
            var target = plan.Target[plan.Shard][node];
            var step = MoveTowards(node, target, plan.Shard, plan);
            if (step >= 0)
            {
                plan.At++;
                moved += step;
            }
            else
            {
                break; // a swap needs two moves and one is left: next call
            }
        }

        if (plan.Shard >= ShardCount)
        {
            _rebuild = null;
            _rebuildPause = RebuildPauseCalls;
            _rebuildsDone++;
        }

        return Summarize(_moves, []);

        int MoveTowards(int node, int target, int shard, RebuildPlan plan)
        {
            if (!_forest.IsAlive(node) || !_forest.IsAttached(node, shard) || (target != Source && (!_forest.IsAlive(target) || !_forest.IsAttached(target, shard))))
            {
                return 0;
            }

            var parent = _forest.Parent(node, shard);
            if (parent == target)
            {
                return 0;
            }

            // The new parent must not hang below the node (the plan changed since it was planned).
            for (var up = target; up != None; up = _forest.Parent(up, shard))
            {
                if (up == node)
                {
                    return 0;
                }
            }

            if (_forest.HasFreeSlot(target, shard))
            {
                _forest.Detach(node, shard);
                _forest.Attach(node, target, shard);
                _moves.Add(new Reattachment(node, shard, target));
                return 1;
            }

            // A swap takes up to 3 moves. Under a cap of fewer (--latency-moves 1 or 2) it never
            // fits a call: the node stays where it is (waiting for it, the rebuild stood still at
            // its first such node for good, and leaf moves with it).
            if (maxMoves < 3)
            {
                return 0;
            }

            if (maxMoves - moved < 3)
            {
                return -1;
            }

            // Full: a child of the new parent not yet in place takes the node's old place, when it
            // is not above the node (then the node's old parent is not in its subtree either).
            var ancestor = None;
            for (var child = _forest.FirstChild(target, shard); child != None; child = _forest.NextSibling(child, shard))
            {
                if (plan.Target[shard].Length > child && plan.Target[shard][child] == target)
                {
                    continue;
                }

                var above = false;
                for (var up = parent; up != None && !above; up = _forest.Parent(up, shard))
                {
                    above = up == child;
                }

                if (above)
                {
                    ancestor = child;
                    continue;
                }

                ExchangeParents(node, target, child, parent, shard);
                return 2;
            }

            // The only one is above the node (at the top of a tree, every node's is): the node takes
            // its place and it hangs under the node, whose child, if the node is full, takes the
            // node's old place. A node that feeds nobody in this tree cannot: skipped.
            if (ancestor != None && _forest.Cap(node, shard) > 0)
            {
                var count = 2;
                _forest.Detach(node, shard);
                if (!_forest.HasFreeSlot(node, shard))
                {
                    var child = _forest.FirstChild(node, shard);
                    _forest.Detach(child, shard);
                    _forest.Attach(child, parent, shard);
                    _moves.Add(new Reattachment(child, shard, parent));
                    count++;
                }

                _forest.Detach(ancestor, shard);
                _forest.Attach(node, target, shard);
                _forest.Attach(ancestor, node, shard);
                _moves.Add(new Reattachment(node, shard, target));
                _moves.Add(new Reattachment(ancestor, shard, node));
                return count;
            }

            return 0;
        }
    }

    /// <summary>A rebuild under way: per tree the new parent of every node id (<see cref="None"/> if none planned) and the order (parents first) in which nodes move.</summary>
    private sealed class RebuildPlan(int[][] target, int[][] order)
    {
        public readonly int[][] Target = target;
        public readonly int[][] Order = order;
        public int Shard;
        public int At;
    }

    /// <summary>Plans a rebuild (see <see cref="RebuildLatency"/>), or null when it would not gain enough.</summary>
    private RebuildPlan? PlanRebuild(Func<int, int, MeasuredEdgeRtt?> measuredRtt)
    {
        var latency = _latency!;
        var k = ShardCount;
        var peers = new List<int>(_peerCount);
        for (var id = 1; id < _nextId; id++)
        {
            if (_forest.IsAlive(id))
            {
                peers.Add(id);
            }
        }

        var n = peers.Count;
        var index = new int[_nextId];
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
        var sourceHeight = latency.CoordinateOf(Source).Height;
        var maxBudget = 1;
        for (var i = 0; i < n; i++)
        {
            var c = latency.CoordinateOf(peers[i]);
            (x[i], y[i]) = (c.X, c.Y);
            core[i] = latency.MeasuredSourceRtt(peers[i]) - c.Height - sourceHeight;
            maxBudget = Math.Max(maxBudget, _forest.Budget(peers[i]));
        }

        var regions = RegionConstruction.ClusterPlane(x, y, region);
        (regions, var sourceCluster) = RegionConstruction.SourceCluster(x, y, core, region, regions, maxBudget);

        // Local coordinates: from the plan's coordinates, fitted to the parent links within a
        // cluster that peers reported, now and at earlier rebuilds (the latest RebuildLinksKept).
        if (_linkNext.Length < _nextId)
        {
            var size = Math.Max(_nextId, _linkNext.Length * 2);
            Array.Resize(ref _linkPeer, size * RebuildLinksKept);
            Array.Resize(ref _linkRtt, size * RebuildLinksKept);
            Array.Resize(ref _linkNext, size);
        }

        for (var i = 0; i < n; i++)
        {
            var id = peers[i];
            for (var s = 0; s < k; s++)
            {
                var p = _forest.Parent(id, s);
                if (p > 0 && Array.IndexOf(_linkPeer, p, id * RebuildLinksKept, RebuildLinksKept) < 0 && measuredRtt(id, p) is { } m && m.Samples >= ImproveMinSamples)
                {
                    var at = (id * RebuildLinksKept) + _linkNext[id];
                    _linkPeer[at] = p;
                    _linkRtt[at] = (float)Math.Min(m.SmoothedMs, m.MinMs);
                    _linkNext[id] = (byte)((_linkNext[id] + 1) % RebuildLinksKept);
                }
            }
        }

        var local = new NetworkCoordinate[n];
        var links = new List<(int A, int B, double Rtt)>();
        for (var i = 0; i < n; i++)
        {
            local[i] = latency.CoordinateOf(peers[i]);
            for (var j = 0; j < RebuildLinksKept; j++)
            {
                var at = (peers[i] * RebuildLinksKept) + j;
                var p = _linkPeer[at];
                if (_linkRtt[at] > 0 && p > 0 && p < _nextId && index[p] >= 0 && region[index[p]] == region[i])
                {
                    links.Add((i, index[p], _linkRtt[at]));
                }
            }
        }

        RegionConstruction.LinkCoordinates(local, region, links, RebuildFitRounds);

        // The construction, within the plan's per-tree caps.
        var b = new RegionConstruction.Builder(n, regions);
        var caps = new int[k][];
        for (var s = 0; s < k; s++)
        {
            caps[s] = new int[n];
            for (var i = 0; i < n; i++)
            {
                caps[s][i] = _forest.Cap(peers[i], s);
            }
        }

        b.CapByShard = caps;
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
            b.Home[i] = _homes?.HomeOf(peers[i]) ?? 0;
            b.Cap[i] = _forest.Budget(peers[i]);
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

        var source = latency.CoordinateOf(Source);
        var srcRegion = sourceCluster >= 0 ? sourceCluster : Enumerable.Range(0, regions).Where(r => count[r] > 0).MinBy(r => RegionConstruction.Dist(cx[r], cy[r], source.X, source.Y));
        (b.CentreX, b.CentreY) = (cx, cy);
        (b.SourceX, b.SourceY) = (source.X - cx[srcRegion], source.Y - cy[srcRegion]);

        var target = new int[k][];
        var order = new int[k][];
        var newDelay = new double[n];
        for (var s = 0; s < k; s++)
        {
            b.Tree(s, srcRegion, regions);
            if (b.Order.Count != n || b.OverBudget() > 0)
            {
                return null; // not a valid plan within the caps (none happened in the runs of docs/topology.md)
            }

            target[s] = new int[_nextId];
            Array.Fill(target[s], None);
            order[s] = new int[n];
            for (var j = 0; j < n; j++)
            {
                var i = b.Order[j];
                order[s][j] = peers[i];
                target[s][peers[i]] = b.Parent[i] < 0 ? Source : peers[b.Parent[i]];
            }
        }

        // Kept only when it is estimated to gain enough over the plan as it is.
        var before = EstimatedMeanDelay(peers, index, region, local, s => p => _forest.Parent(p, s));
        var after = EstimatedMeanDelay(peers, index, region, local, s => p => target[s][p]);
        _rebuildsPlanned++;
        return after <= before * (1 - Options.RebuildMinGainShare) ? new RebuildPlan(target, order) : null;
    }

    /// <summary>
    /// Mean over peers of the estimated delay from the source in the slowest tree, given each tree's
    /// parents: half the estimated RTT of each edge, from the local coordinates within a cluster and
    /// from the plan's coordinates across clusters and from the source.
    /// </summary>
    private double EstimatedMeanDelay(List<int> peers, int[] index, int[] region, NetworkCoordinate[] local, Func<int, Func<int, int>> parentIn)
    {
        var latency = _latency!;
        var n = peers.Count;
        var worst = new double[n];
        var delay = new double[n];
        var stamp = new int[n];
        var stack = new List<int>();
        for (var s = 0; s < ShardCount; s++)
        {
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
                    at = p == Source || p == None || index[p] < 0 ? -1 : index[p];
                    if (stack.Count > n)
                    {
                        return double.MaxValue; // not a tree
                    }
                }

                for (var j = stack.Count - 1; j >= 0; j--)
                {
                    var c = stack[j];
                    var p = parentOf(peers[c]);
                    double edge;
                    if (p == Source || p == None || index[p] < 0)
                    {
                        edge = latency.CoordinateOf(Source).EstimateRtt(latency.CoordinateOf(peers[c])) / 2;
                        delay[c] = edge;
                    }
                    else
                    {
                        var pi = index[p];
                        edge = region[pi] == region[c] ? local[pi].EstimateRtt(local[c]) / 2 : latency.CoordinateOf(p).EstimateRtt(latency.CoordinateOf(peers[c])) / 2;
                        delay[c] = delay[pi] + edge;
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

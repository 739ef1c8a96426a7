using Microsoft.Extensions.Logging;
using ShardStream.Topology;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Reachability: a joiner that other peers could not connect to is not made a parent (a dial-back
/// probe before it is placed), a child that cannot connect to its parent gets another one, and a
/// parent that several children cannot reach becomes a leaf.
/// </summary>
public sealed partial class Coordinator
{
    /// <summary>A parent that this many children could not connect to (each after a second attempt) is made a leaf.</summary>
    private const int UnreachableChildrenBeforeLeaf = 2;

    /// <summary>How long the dial-back may take: half the heartbeat timeout (the joiner waits twice its own for the welcome).</summary>
    private TimeSpan ProbeTimeout => _options.HeartbeatTimeout / 2;

    /// <summary>The round trip of the last successful probe per address (hello sent to welcome read), for the overlay's view.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, TimeSpan> _probeRtts = new();

    /// <summary>
    /// Connects to <paramref name="address"/>, where the coordinator is about to send other peers
    /// for the joiner's shards, and checks that the very joiner answers there: it must echo the
    /// token of its Join (another node at that address, e.g. another peer behind the same NAT
    /// address, would answer with its own). Null when it does; else why not, in words.
    /// </summary>
    private async Task<string?> ProbeAsync(string address, ulong token)
    {
        using var timeout = new CancellationTokenSource(ProbeTimeout, Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, Stopping);
        Link? link = null;
        try
        {
            link = NewLink(await Transport.ConnectForControlAsync(address, linked.Token).ConfigureAwait(false), $"probe {address}");
            long sent = Time.GetTimestamp();
            await link.WriteNowAsync(new Hello(Protocol.ProbeVersion, Protocol.Version, HelloRole.Probe, 0, 0, [], ListenAddress).Write, linked.Token).ConfigureAwait(false);
            var (type, body) = await link.ReadOneAsync(linked.Token).ConfigureAwait(false);
            var rtt = Time.GetElapsedTime(sent);
            var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(body));
            if (type != FrameType.Welcome || !Welcome.TryRead(ref reader, out var answer)) return $"something answered at {address}, but not as a ShardStream peer ({type} frame)";
            if (answer.PeerId != token) return $"another ShardStream node answers at {address}, not this peer";
            ShardStreamMetrics.ProbeRtt.Record(rtt.TotalSeconds);
            _probeRtts[address] = rtt;
            return null;
        }
        catch (OperationCanceledException) when (!Stopping.IsCancellationRequested)
        {
            return $"no answer within {ProbeTimeout.TotalSeconds:0.#} s";
        }
        catch (Exception e) when (e is ConnectionFailedException or IOException or ProtocolException or System.Net.Sockets.SocketException)
        {
            return e.Message;
        }
        finally
        {
            if (link is not null) _ = CloseProbeAsync(link);
        }
    }

    private static async Task CloseProbeAsync(Link link)
    {
        await link.ShutdownAsync("probe done").ConfigureAwait(false);
        await link.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// <paramref name="child"/> could not connect to <paramref name="parent"/> twice in a row: the
    /// planner takes the edge out (<see cref="Planner.DropEdge"/>) and the moves go out. Called
    /// under the gate. True when the parent should now be made a leaf. <paramref name="stranded"/>:
    /// the lost shards the plan still gives to that parent (no other node had room).
    /// </summary>
    private bool DropUnreachableEdges(PeerSession child, PeerSession parent, ShardStart[] lost, out ShardStart[] stranded)
    {
        var moves = new List<Reattachment>();
        var noOther = new List<ShardStart>();
        foreach (var s in lost)
        {
            if (s.Shard >= _options.ShardCount || _planner.ParentOf(child.Id, s.Shard) != parent.Id) continue;
            var dropped = _planner.DropEdge(child.Id, s.Shard);
            if (dropped.Count == 0) ReachabilityLog.NoOtherParent(Log, child.Id, parent.Id, parent.Address, s.Shard);
            moves.AddRange(dropped);
        }
        // A shard still under the same parent (no other node had room, or an earlier shard's drop moved it already) is not moved.
        foreach (var s in lost)
            if (s.Shard < _options.ShardCount && _planner.ParentOf(child.Id, s.Shard) == parent.Id) noOther.Add(s);
        stranded = [.. noOther];
        if (moves.Count == 0) return false;
        // One entry per (peer, shard), with the parent the plan gives it now.
        var final = moves.Select(m => (m.Peer, m.Shard)).Distinct().Select(x => new Reattachment(x.Peer, x.Shard, _planner.ParentOf(x.Peer, x.Shard))).ToList();
        SendMoves(final);
        ReachabilityLog.EdgeDropped(Log, child.Id, parent.Id, parent.Address,
            string.Join(",", final.Where(m => m.Peer == child.Id).Select(m => $"{m.Shard}->{m.NewParent}")));
        parent.UnreachableBy.Add(child.Id);
        return parent.UnreachableBy.Count >= UnreachableChildrenBeforeLeaf && _planner.Contains(parent.Id) && _planner.Budget(parent.Id) > 0;
    }

    /// <summary>Several peers (children, or joiners that measured it) could not connect to this peer: it relays nothing from now on, and is told why.</summary>
    private void DemoteUnreachable(PeerSession parent)
    {
        int count;
        lock (_gate) count = parent.UnreachableBy.Count;
        ReachabilityLog.UnreachableParentDemoted(Log, count, parent.Id, parent.Address);
        Demote(parent.Id, $"{count} peers could not connect to it at {parent.Address}");
        if (parent.Version >= Protocol.ProbeVersion)
            parent.Control.Send(new Notice(NoticeCode.Leaf, $"{count} other peers could not connect to it at {parent.Address}, so its children were moved to other parents").Write);
    }
}

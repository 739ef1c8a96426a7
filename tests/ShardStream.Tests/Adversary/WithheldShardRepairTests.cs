using System.Diagnostics;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Topology;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// What happens after a relay withholds a shard: the children it starved are repaired and every
/// honest viewer ends with every byte of the source, and the plan stays a set of trees.
/// </summary>
public class WithheldShardRepairTests
{
    private const long Bound = 1024 * 1024;

    /// <summary>
    /// The victim of a relay that withholds shard 0 (chunks and End) cuts it off when its bound
    /// fills; the relay's other children lose it too. Every orphan must get a new parent and every
    /// viewer must write the whole source. Several runs (bounded in count and time): the repair
    /// once left an orphan without a parent in about one run in four.
    /// </summary>
    [Fact]
    public async Task After_a_withholding_relay_is_cut_off_every_viewer_gets_every_byte()
    {
        var clock = Stopwatch.StartNew();
        for (int run = 0; run < 6 && (run < 2 || clock.Elapsed < TimeSpan.FromMinutes(2)); run++)
            await RunAsync(run, withholdEnd: true, mib: 8);
    }

    /// <summary>
    /// A relay withholds the chunks of shard 0 from one child and then passes on the genuine End of
    /// the stream: the child must not take the End as "those chunks will never come" from the
    /// parent that never sent them; it gets them elsewhere and writes the whole source.
    /// </summary>
    [Fact]
    public async Task A_child_that_gets_the_end_while_chunks_are_missing_gets_them_from_another_parent()
    {
        await RunAsync(0, withholdEnd: false, mib: 0);
    }

    private static async Task RunAsync(int run, bool withholdEnd, int mib)
    {
        var logs = new LogCapture();
        try
        {
            await RunAsync(run, withholdEnd, mib, logs);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // What the nodes said about repairs, for the one who reads a failure.
            var lines = logs.Lines.Where(l => l.Level >= Microsoft.Extensions.Logging.LogLevel.Information && !l.Message.Contains("joined at offset", StringComparison.Ordinal));
            throw new Xunit.Sdk.XunitException($"run {run}: {e.GetType().Name}: {e.Message}\n{string.Join("\n", lines.Select(l => $"{l.Category} {l.Level}: {l.Message}"))}");
        }
    }

    private static async Task RunAsync(int run, bool withholdEnd, int mib, LogCapture logs)
    {
        const int shards = 2;
        await using var overlay = await Overlay.StartAsync(shards: shards, minPeers: 9, loggers: logs.Factory);
        var liar = new TamperingTransport(overlay.Network.Host("liar"), (t, f) =>
            withholdEnd || t != ShardStream.Wire.FrameType.End ? Attacks.WithholdShard(0, t, f) : [f]);
        await using var relay = new Peer(new PeerOptions
        {
            JoinAddress = overlay.Coordinator.ListenAddress,
            ListenAddress = "liar:1",
            HeartbeatTimeout = TimeSpan.FromSeconds(10),
            HeartbeatInterval = TimeSpan.FromSeconds(2),
        }, liar, logs.Factory);
        await relay.StartAsync(CancellationToken.None);
        var relayRun = Task.Run(() => relay.RunAsync(Stream.Null, CancellationToken.None));
        for (int i = 0; i < 8; i++) await overlay.AddPeerAsync(configure: o => o with { MaxReassemblyBytes = Bound });
        overlay.StartStreaming();
        var victim = overlay.Peers.Single(p => p.Peer.ParentIds().All(id => id == relay.Id));
        liar.OnlyTo = victim.Host;

        await overlay.WriteAsync(Overlay.RandomBytes(100_000, seed: run));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten > 0), "every viewer wrote the first bytes");
        liar.Active = true;
        if (mib > 0)
        {
            for (int i = 0; i < mib * 16; i++)
            {
                await overlay.WriteAsync(Overlay.RandomBytes(64 * 1024, seed: 100 + i + run * 1000));
                await Task.Delay(5);
                AssertTrees(overlay.Coordinator.Snapshot(), $"run {run}, part {i}");
            }
            await Overlay.WaitUntilAsync(() => victim.Peer.PeakReassemblyBytes >= Bound - 64 * 1024, "the victim held chunks up to its bound");
        }
        else
        {
            // Well under the bound: the victim keeps waiting for shard 0, and nothing cuts the liar off.
            for (int i = 0; i < 4; i++) await overlay.WriteAsync(Overlay.RandomBytes(64 * 1024, seed: 100 + i));
            await Overlay.WaitUntilAsync(() => liar.Rewritten >= 2, "the liar withheld chunks of shard 0");
            // The victim's word reaches the coordinator after the liar's own goodbye (it finishes
            // at the end like everyone): the victim is then repaired as the orphan of a peer that left.
            overlay.Network.SetLatency(victim.Host, "coord", TimeSpan.FromMilliseconds(300));
        }
        await overlay.WriteAsync(Overlay.RandomBytes(300_000, seed: 7 + run));
        await overlay.EndAsync();
        AssertTrees(overlay.Coordinator.Snapshot(), $"run {run}, at the end");
        foreach (var p in overlay.Peers)
        {
            var finished = await Task.WhenAny(p.Run, Task.Delay(Overlay.Deadline));
            Assert.True(finished == p.Run, $"run {run}: peer {p.Peer.Id} did not finish; its parents now: {string.Join(",", p.Peer.ParentIds())}; wrote {p.Peer.BytesWritten} of {overlay.Written.Length - p.Peer.StartOffset}");
            await overlay.AssertIdenticalAsync(p);
        }
    }

    /// <summary>Every peer's parent chain in every shard reaches the coordinator without a cycle.</summary>
    private static void AssertTrees(OverlaySnapshot snapshot, string when)
    {
        var parents = snapshot.Nodes.ToDictionary(n => n.Id, n => n.Parents);
        foreach (var node in snapshot.Nodes.Where(n => n.Id != Planner.Source))
        {
            for (int s = 0; s < snapshot.ShardCount; s++)
            {
                var path = new List<int> { node.Id };
                int at = node.Id;
                while (at != Planner.Source)
                {
                    Assert.True(parents.ContainsKey(at), $"{when}: peer {at} in shard {s} has parent outside the plan (path {string.Join(" -> ", path)})");
                    at = parents[at][s];
                    Assert.True(at != Planner.None, $"{when}: no parent in shard {s} on the path {string.Join(" -> ", path)}");
                    Assert.True(!path.Contains(at), $"{when}: cycle in shard {s}: {string.Join(" -> ", path)} -> {at}");
                    path.Add(at);
                }
            }
        }
    }
}

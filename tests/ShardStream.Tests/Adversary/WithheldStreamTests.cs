using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A relay that joined honestly sends its children nothing of the stream (no chunk, hash list or
/// End) and keeps its links alive with heartbeats: no failure detector fires, and with one shard
/// no other shard fills the reassembler's bound. Before protocol version 14 its children stalled
/// for as long as it stayed (100,000 bytes written of 755,360 after 20 s, while every other peer
/// kept up). Now the coordinator's heartbeats carry the stream's head, and a child that got
/// nothing of a shard for two heartbeat timeouts while the source had made it cuts the parent off
/// (event 9202); repaired, it writes the whole stream.
/// </summary>
public class WithheldStreamTests
{
    /// <summary>
    /// What the liar sends in place of each frame it withholds. The node behind its transport
    /// sends a heartbeat only on a link quiet for a heartbeat interval (<c>Link.Tick</c>), and it
    /// takes the frames the transport drops for sent: with nothing in their place, its children
    /// heard nothing for as long as its sends came closer together than that, and on a loaded
    /// machine that lasted a heartbeat timeout; their failure detectors took it for dead (2 s)
    /// before the withheld check (4 s), and the test found no 9202 cut (ci309).
    /// </summary>
    private static readonly byte[] HeartbeatFrame = Attacks.Frames(w => new Heartbeat(0).Write(w));

    [Fact]
    public Task The_children_of_a_relay_that_sends_them_nothing_but_heartbeats_cut_it_off_and_write_the_whole_stream() => CutOffAsync(viewersTime: null);

    /// <summary>
    /// The same, on a loaded host: the viewers' tick loops do not run for 0.7 s out of every 2 s
    /// (event 8001), more often than the 4 s a shard may get nothing. Each pause excuses its own
    /// length, as the failure detector excuses it; before, it started every shard's wait again, so
    /// the liar's children never cut it off (nor judged it a trickle: a third of every window
    /// paused), and at load 70-100 a child cut it off only once the chunks it lacked were older than
    /// every replay window (ci283: 966,656 bytes counted lost). The cut's line says both the running
    /// time the shard got nothing for and the wall time, with what was paused: it said "for 4 s"
    /// after more than that had passed.
    /// </summary>
    [Fact]
    public Task The_children_of_a_relay_that_sends_them_nothing_cut_it_off_though_their_host_pauses_often() =>
        CutOffAsync(new PausingTime(every: TimeSpan.FromSeconds(2), pause: TimeSpan.FromSeconds(0.7)));

    private static async Task CutOffAsync(TimeProvider? viewersTime)
    {
        var heartbeatTimeout = TimeSpan.FromSeconds(2);
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, heartbeatTimeout: heartbeatTimeout, loggers: logs.Factory);
        var liar = new TamperingTransport(overlay.Network.Host("liar"), (type, frame) =>
            type is FrameType.Chunk or FrameType.End or FrameType.Hashes ? [HeartbeatFrame] : [frame]);
        var (relay, victims) = await LiarRelay.StartAsync(overlay, liar, heartbeatTimeout, Overlay.Loggers, viewersTime: viewersTime);
        await using var _ = relay;
        liar.Active = true;

        // A live source: 16 KiB every 100 ms until each victim has written 400,000 bytes more than before the liar began.
        using var writing = new CancellationTokenSource();
        int seed = 100;
        var source = Task.Run(async () =>
        {
            while (!writing.IsCancellationRequested)
            {
                await overlay.WriteAsync(Overlay.RandomBytes(16 * 1024, seed: seed++));
                await Task.Delay(100);
            }
        });
        long then = overlay.Written.Length;
        await Overlay.WaitUntilAsync(() => victims.All(v => v.Peer.BytesWritten > then + 400_000), "the liar's children write past what the liar withheld", TimeSpan.FromSeconds(120));
        await writing.CancelAsync();
        await source;
        Assert.True(liar.Rewritten > 0, "the liar never withheld a frame");
        var cuts = logs.Lines.Where(l => l.Message.Contains("cutting it off, it sent no chunk of shard", StringComparison.Ordinal)).Select(l => l.Message).ToList();
        Assert.True(cuts.Count > 0, $"no child cut the liar off for withholding the shard (9202); its children said of it: {string.Join(" | ", logs.Lines.Where(l => l.Category == "peer" && (l.Message.Contains("(liar:1)", StringComparison.Ordinal) || l.Message.Contains("lost parent", StringComparison.Ordinal))).Select(l => l.Message))}");
        // On the pausing host a wait spans pauses (0.7 s of every 2 s, and it is 4 s of running time).
        if (viewersTime is not null)
            Assert.True(cuts.Any(c => c.Contains(" s of running time (", StringComparison.Ordinal) && c.Contains(" s paused)", StringComparison.Ordinal)),
                $"the cuts' lines do not say the wall time and what was paused: {string.Join(" | ", cuts)}");
        await overlay.EndAsync(TimeSpan.FromSeconds(120));
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

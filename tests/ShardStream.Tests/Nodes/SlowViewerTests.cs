using System.Diagnostics;
using System.Text.RegularExpressions;
using ShardStream.Nodes;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// One viewer whose download is far below the stream rate, among fast ones, on a live source: it
/// must cost only itself. It is demoted to a leaf within seconds, then stopped with the reason;
/// everyone else gets every byte at the live rate.
/// </summary>
public sealed partial class SlowViewerTests(ITestOutputHelper output)
{
    private const int Rate = 1024 * 1024;          // the live source: 1 MiB/s
    private const int Seconds = 16;
    private const int Piece = 64 * 1024;           // written every 1/16 s

    [Fact]
    public async Task A_viewer_below_the_stream_rate_is_demoted_then_stopped_and_the_others_keep_the_live_rate()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 9);
        overlay.Network.SetDownloadRate("p1", Rate / 16);
        var slow = await overlay.AddPeerAsync();              // joins first: the coordinator's child, with children of its own
        for (int i = 0; i < 8; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.Any(n => n.Id != 0 && n.Parents[0] == slow.Id), "the slow viewer feeds someone");

        // The live source: a fixed rate by the wall clock, whatever the overlay does.
        var data = Overlay.RandomBytes(Rate * Seconds, seed: 9);
        var clock = Stopwatch.StartNew();
        TimeSpan? demotedAt = null;
        for (int i = 0; i < data.Length / Piece; i++)
        {
            var due = TimeSpan.FromSeconds((double)i * Piece / Rate);
            if (due > clock.Elapsed) await Task.Delay(due - clock.Elapsed);
            await overlay.WriteAsync(data[(i * Piece)..((i + 1) * Piece)]);
            if (demotedAt is null && overlay.Coordinator.Snapshot().Nodes.FirstOrDefault(n => n.Id == slow.Id) is { Budget: 0 }) demotedAt = clock.Elapsed;
        }
        var sourceEnd = clock.Elapsed;
        var ending = overlay.EndAsync();

        // When each fast viewer has written the whole stream to its output (what its user sees);
        // its Run goes on a little longer, closing links and waiting for its children.
        var fast = overlay.Peers.Where(p => p.Peer != slow).ToList();
        var finished = new TimeSpan?[fast.Count];
        await Overlay.WaitUntilAsync(() =>
        {
            for (int i = 0; i < fast.Count; i++)
                if (finished[i] is null && fast[i].Peer.StartOffset + fast[i].Peer.BytesWritten == data.Length) finished[i] = clock.Elapsed;
            return finished.All(f => f is not null) || fast.Any(p => p.Run.IsFaulted);
        }, "every fast viewer has written the whole stream");
        foreach (var p in fast) await overlay.AssertIdenticalAsync(p);
        var lastFinish = finished.Max()!.Value;
        output.WriteLine($"source {sourceEnd.TotalSeconds:0.0} s; fast viewers done at {string.Join(", ", finished.Select(f => f!.Value.TotalSeconds.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)))} s; slow viewer demoted at {demotedAt?.TotalSeconds:0.0} s");

        var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => overlay.Peers[0].Run.WaitAsync(Overlay.Deadline));
        var figures = BelowRate().Match(stopped.Message);
        Assert.True(figures.Success, $"the slow viewer stopped with: {stopped.Message}");
        double download = double.Parse(figures.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        double stream = double.Parse(figures.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(download < stream / 4, $"measured {download} vs {stream} Mbit/s");
        Assert.InRange(stream, 4, 16);   // 1 MiB/s = 8.4 Mbit/s

        Assert.True(demotedAt is not null, "the slow viewer was never demoted");
        await ending;
        // The fast viewers followed the live source: the last of them done soon after it ended
        // (generous: a run with the slow viewer holding the source back ends ~25 s late).
        Assert.True(lastFinish - sourceEnd < TimeSpan.FromSeconds(10), $"the source ended at {sourceEnd.TotalSeconds:0.0} s, the last fast viewer finished at {lastFinish.TotalSeconds:0.0} s; demoted at {demotedAt?.TotalSeconds:0.0} s");
    }

    [GeneratedRegex(@"your download is below the stream rate: ([0-9.]+) vs ([0-9.]+) Mbit/s")]
    private static partial Regex BelowRate();
}

using Microsoft.Extensions.Logging;
using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using ShardStream.Nodes;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// One viewer whose download is far below the stream rate, among fast ones, on a live source: it
/// must cost only itself. It is demoted to a leaf within seconds, then stopped with the reason;
/// everyone else gets every byte at the live rate.
/// </summary>
[RunsLong(185)]
public sealed partial class SlowViewerTests(ITestOutputHelper output)
{
    private const int Rate = 1024 * 1024;          // the live source: 1 MiB/s
    private const int Piece = 64 * 1024;           // written every 1/16 s
    private const int MaxSourceSeconds = 60;

    [Fact]
    public async Task A_viewer_below_the_stream_rate_is_demoted_then_stopped_and_the_others_keep_the_live_rate()
    {
        // Joins first: the coordinator's child, which demotes it itself.
        var (slowParent, _) = await RunAsync(before: 0, after: 8, seconds: 16);
        Assert.Equal(0, slowParent);
    }

    [Fact]
    public async Task A_slow_viewer_under_a_peer_is_reported_by_that_peer_demoted_by_the_coordinator_and_stopped()
    {
        // Joins third: under a peer, which reports it (SlowChild) for the coordinator to demote. Its
        // Move (a leaf elsewhere) crosses its slow link too, and its new parent must find it slow
        // again before stopping it: a longer stream, so that this happens before the end (after
        // the end a demoted viewer is left to drain at its own pace).
        var (slowParent, _) = await RunAsync(before: 2, after: 5, seconds: 30);
        Assert.NotEqual(0, slowParent);
    }

    /// <summary>
    /// <paramref name="before"/> fast viewers, then the slow one, then <paramref name="after"/> fast
    /// ones; then <paramref name="seconds"/> of a live 1 MiB/s source. Returns the slow viewer's
    /// parent when the stream started, and when it was demoted.
    /// </summary>
    private async Task<(int SlowParent, TimeSpan DemotedAt)> RunAsync(int before, int after, int seconds)
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: before + 1 + after, loggers: logs.Factory);
        overlay.Network.SetDownloadRate($"p{before + 1}", Rate / 16);
        for (int i = 0; i < before; i++) await overlay.AddPeerAsync();
        var slow = await overlay.AddPeerAsync();
        for (int i = 0; i < after; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.Any(n => n.Id != 0 && n.Parents[0] == slow.Id), "the slow viewer feeds someone");
        int slowParent = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == slow.Id).Parents[0];

        // The live source: a fixed rate by the wall clock, whatever the overlay does, for at least
        // the given time and until the slow viewer has been stopped (at most MaxSourceSeconds).
        // A slow viewer is stopped only while the stream goes on (after the end its queue no longer
        // grows, and it is left to drain): its stop comes ~10 s after its demotion, whose Move
        // crosses its slow link, so a stream of fixed length raced the stop on a loaded machine
        // (seen in CI at load ~40: demoted at 3.7 s, the 16 s stream ended first).
        var data = Overlay.RandomBytes(Rate * MaxSourceSeconds, seed: 9);
        var slowRun = overlay.Peers.Single(p => p.Peer == slow).Run;
        long start = Stopwatch.GetTimestamp();
        int pieces = 0;
        // How far this test's own writer fell behind the wall clock: a process starved of CPU (the
        // nodes run in it too) shows here, whatever the slow viewer does.
        var writerLate = TimeSpan.Zero;
        var fast = overlay.Peers.Where(p => p.Peer != slow).ToList();
        // What the fast viewers had written when the slow viewer stopped (the longest it could
        // hold them back), against what the coordinator had read then.
        (TimeSpan At, long Read, long Least)? atStop = null;
        (TimeSpan, long, long) Progress() => (Stopwatch.GetElapsedTime(start), overlay.Coordinator.BytesStreamed, fast.Min(p => p.Peer.StartOffset + p.Peer.BytesWritten));
        while (pieces < data.Length / Piece && (pieces < Rate * seconds / Piece || !slowRun.IsCompleted))
        {
            var due = TimeSpan.FromSeconds((double)pieces * Piece / Rate);
            var now = Stopwatch.GetElapsedTime(start);
            if (due > now) await Task.Delay(due - now);
            var late = Stopwatch.GetElapsedTime(start) - due;
            if (late > writerLate) writerLate = late;
            await overlay.WriteAsync(data[(pieces * Piece)..((pieces + 1) * Piece)]);
            pieces++;
            if (atStop is null && slowRun.IsCompleted) atStop = Progress();
        }
        atStop ??= Progress();
        long length = (long)pieces * Piece;
        var ending = overlay.EndAsync();

        // A CLI viewer exits when it is stopped, which closes its links; in process the stopped
        // viewer's object lives on, and a link it still had from a new parent (after its Move) kept
        // that parent, a fast viewer, waiting out its 60 s drain timeout after the end. So it is
        // disposed as soon as it stops, as the CLI would.
        async Task<StreamInterruptedException> SlowStopsAsync()
        {
            var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => slowRun.WaitAsync(Overlay.Deadline));
            await slow.DisposeAsync();
            return stopped;
        }
        var slowStops = SlowStopsAsync();
        try
        {
            await Overlay.WaitUntilAsync(() => fast.All(p => p.Peer.StartOffset + p.Peer.BytesWritten == length) || fast.Any(p => p.Run.IsFaulted),
                "every fast viewer has written the whole stream");
        }
        catch (TimeoutException e)
        {
            // Says which fast viewer is short and what may be why (a byte range lost, its run over
            // or still going, under which parent): a CI failure of this wait (load 40-100) kept no log.
            var nodes = overlay.Coordinator.Snapshot().Nodes;
            string Where(Peer peer) => nodes.FirstOrDefault(n => n.Id == peer.Id) is { } n ? $"parent {n.Parents[0]}" : "not in the plan";
            static string RunOf(Task run) => run.IsCompleted ? run.Status.ToString() : "running";
            throw new TimeoutException($"{e.Message}: the source ended at {length} bytes; "
                + string.Join("; ", fast.Select(p => $"peer {p.Peer.Id} wrote up to {p.Peer.StartOffset + p.Peer.BytesWritten}, lost {p.Peer.LostBytes}, {RunOf(p.Run)}, {Where(p.Peer)}"))
                + $"; the slow viewer (peer {slow.Id}, first under peer {slowParent}): {RunOf(slowRun)}, {Where(slow)}; the test's writer at most {writerLate.TotalSeconds:0.00} s behind the wall clock", e);
        }
        foreach (var p in fast) await overlay.AssertIdenticalAsync(p);

        var stopped = await slowStops;
        var figures = BelowRateMessage.Pattern().Match(stopped.Message);
        Assert.True(figures.Success, $"the slow viewer stopped with: {stopped.Message}");
        double download = BelowRateMessage.DownloadOf(figures);
        double stream = BelowRateMessage.StreamOf(figures);
        Assert.True(download < stream / 4, $"measured {download} vs {stream} Mbit/s");
        Assert.InRange(stream, 4, 16);   // 1 MiB/s = 8.4 Mbit/s
        await ending;

        // When things happened, by the nodes' own log times (each line is stamped as the node logs
        // it), not by when this test got round to looking, which a held-up test host does late: the
        // coordinator's demotion of the slow viewer, its reading of the source's end, and each fast
        // viewer's "stream complete" (logged once its output has the last byte; the stopped slow
        // viewer logs none).
        var lines = logs.Lines;
        TimeSpan At(long timestamp) => Stopwatch.GetElapsedTime(start, timestamp);
        TimeSpan? Logged(string category, string text) =>
            lines.FirstOrDefault(l => l.Category == category && l.Message.StartsWith(text, StringComparison.Ordinal)) is { Message: not null } line ? At(line.Timestamp) : null;
        var demotedAt = Logged("coordinator", $"peer {slow.Id} demoted to a leaf");
        var sourceEnd = Logged("coordinator", "source ended after") ?? throw new InvalidOperationException("the coordinator did not log the end of the source");
        var finished = lines.Where(l => l.Category == "peer" && l.Message.StartsWith("stream complete", StringComparison.Ordinal)).Select(l => At(l.Timestamp)).ToList();
        output.WriteLine($"slow viewer (peer {slow.Id}) under {(slowParent == 0 ? "the coordinator" : $"peer {slowParent}")}; source ended at {sourceEnd.TotalSeconds:0.0} s; "
            + $"fast viewers done at {string.Join(", ", finished.Select(f => f.TotalSeconds.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)))} s; slow viewer demoted at {demotedAt?.TotalSeconds:0.0} s; "
            + $"the test's writer at most {writerLate.TotalSeconds:0.00} s behind the wall clock");
        Assert.True(demotedAt is not null, "the slow viewer was never demoted");
        // Stopped, it is out: the coordinator keeps no place for it to join again (its drain after
        // the end waited the whole 40 s rejoin grace for it when its link ended in a reset).
        Assert.False(logs.Has(LogLevel.Information, $"peer {slow.Id}: control link broken on its side"),
            string.Join("\n", lines.Where(l => l.Category == "coordinator" && l.Message.Contains($"peer {slow.Id}", StringComparison.Ordinal)).Select(l => l.Message)));
        Assert.Equal(fast.Count, finished.Count);
        // The fast viewers were not held to the slow viewer's pace (1/16 of the rate) while it was
        // in the overlay: when it stopped, each had written more than a quarter of what the
        // coordinator had read. Not a time bound: the last of them done within 10 s of the source's
        // end (0.1 s on a quiet machine) failed in ci233, a CI run at load 60-110 that took 28
        // minutes (its test writer up to 3 s late): done 9.7-12.3 s after the end, at 29.2 s.
        var (stopAt, read, least) = atStop.Value;
        output.WriteLine($"when the slow viewer stopped ({stopAt.TotalSeconds:0.0} s), the coordinator had read {read} bytes and every fast viewer had written at least {least}");
        Assert.True(least * 4 > read, $"when the slow viewer stopped ({stopAt.TotalSeconds:0.0} s), a fast viewer had written {least} of the {read} bytes the coordinator had read; the source ended at {sourceEnd.TotalSeconds:0.0} s, the last fast viewer finished at {finished.Max().TotalSeconds:0.0} s; "
            + $"demoted at {demotedAt?.TotalSeconds:0.0} s; the test's writer at most {writerLate.TotalSeconds:0.00} s behind the wall clock");
        return (slowParent, demotedAt!.Value);
    }

    [Fact]
    public async Task A_slow_child_report_from_a_peer_that_is_not_the_childs_parent_demotes_no_one()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1);
        var a = await overlay.AddPeerAsync();
        var b = await overlay.AddPeerAsync();
        // A stranger that speaks the protocol joins (under a, the coordinator's two slots taken) and lies.
        var connection = await overlay.Network.Host("liar").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0, Hello.DefaultUpload, [], "liar:1").Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
        Assert.Equal(FrameType.Welcome, type);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.True(Welcome.TryRead(ref reader, out var welcome));
        int liar = (int)welcome.PeerId;
        Assert.Equal(a.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == liar).Parents[0]);

        // b hangs under the coordinator, a is the liar's own parent: neither is the liar's child.
        new SlowChild((ulong)b.Id, 60_000).Write(connection.Pipe.Output);
        new SlowChild((ulong)a.Id, 60_000).Write(connection.Pipe.Output);
        // Frames of one link are handled in order: once the leave is done, so are the reports.
        new Leave((ulong)liar).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.All(n => n.Id != liar), "the liar has left");

        var nodes = overlay.Coordinator.Snapshot().Nodes;
        Assert.Equal(2, nodes.Single(n => n.Id == a.Id).Budget);
        Assert.Equal(2, nodes.Single(n => n.Id == b.Id).Budget);
        await connection.DisposeAsync();
    }

    /// <summary>
    /// A relay takes one of the coordinator's two slots, a viewer that uploads nothing the other;
    /// the next leaf can only go under the relay, whose reports a test writes itself (with no
    /// other free slot, a report about the leaf behind for the grace stops it at once).
    /// </summary>
    private static async Task<(Peer Relay, Peer Watcher, Peer Leaf)> LeafUnderRelayAsync(Overlay overlay)
    {
        var relay = await overlay.AddPeerAsync();
        var watcher = await overlay.AddPeerAsync(upload: 0);
        var leaf = await overlay.AddPeerAsync(upload: 0);
        Assert.Equal(relay.Id, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == leaf.Id).Parents[0]);
        return (relay, watcher, leaf);
    }

    /// <summary>
    /// A busy machine makes healthy peers fall behind for a second or two after each repair that
    /// touches them; two such findings about one leaf must not add up to a stop (they did: a leaf
    /// found slow twice, 5 to 60 s apart, was stopped). Only a report that the leaf has been behind
    /// at its parent for the whole grace (its oldest queued chunk that old) stops it.
    /// </summary>
    [Fact]
    public async Task A_leaf_found_slow_twice_briefly_is_not_stopped_and_one_behind_for_the_whole_grace_is()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        var (relay, _, leaf) = await LeafUnderRelayAsync(overlay);
        void Report(uint queueAgeMs, uint downloadKbps) => ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)leaf.Id, queueAgeMs, (downloadKbps, 8_000)).Write);
        var leafRun = overlay.Peers.Single(p => p.Peer == leaf).Run;

        // Two short findings, one now and one after the grace (the old rule stopped it on the second).
        // Each is judged by the coordinator in a line about the leaf (906 stopped, 916 not yet, or
        // another "a leaf, is ..."): the test waits for those lines, not for a time.
        var grace = new CoordinatorOptions().SlowChildGrace;
        string about = $"peer {leaf.Id}, judged as a leaf, is ";
        List<(string Message, long Timestamp)> Judgements() => [.. logs.Lines.Where(l => l.Category == "coordinator" && l.Message.StartsWith(about, StringComparison.Ordinal)).Select(l => (l.Message, l.Timestamp))];
        string Said() => string.Join("\n", Judgements().Select(j => j.Message));
        Report(2_000, 800);
        await Overlay.WaitUntilAsync(() => Judgements().Count >= 1, "the coordinator judged the first finding");
        long first = Judgements()[0].Timestamp;
        // Held on purpose: the old rule counted the time between two findings, so the second must
        // reach the coordinator more than the grace after it judged the first (checked below on
        // the lines' own times, whatever this delay turns out to be on a loaded machine).
        var held = grace + TimeSpan.FromSeconds(1) - Stopwatch.GetElapsedTime(first);
        if (held > TimeSpan.Zero) await Task.Delay(held);
        Report(2_100, 900);
        await Overlay.WaitUntilAsync(() => Judgements().Count >= 2 || leafRun.IsCompleted, "the coordinator judged the second finding");
        var judgements = Judgements();
        Assert.True(judgements.Count == 2 && judgements.All(j => j.Message.Contains("not stopped yet", StringComparison.Ordinal)), $"a leaf found slow twice, briefly, was not just noted: {Said()}");
        Assert.True(Stopwatch.GetElapsedTime(first, judgements[1].Timestamp) > grace, $"the two findings were judged less than the grace apart: {Said()}");
        Assert.False(logs.Has(LogLevel.Warning, "stopping it ("), $"a leaf found slow twice, briefly, was stopped: {Said()}");
        Assert.False(leafRun.IsCompleted, $"a leaf found slow twice, briefly, was stopped: {leafRun.Exception?.InnerException?.Message}");
        Assert.Contains(overlay.Coordinator.Snapshot().Nodes, n => n.Id == leaf.Id);

        // Behind at its parent for longer than the grace: stopped, with the figures.
        Report((uint)(grace.TotalMilliseconds + 1_000), 700);
        var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => leafRun.WaitAsync(Overlay.Deadline));
        Assert.Matches(BelowRateMessage.Pattern(), stopped.Message);
        // The higher of this finding's and the last one's, in the coordinator's line (the leaf is told its own figure).
        Assert.True(logs.Has(LogLevel.Warning, "its parents measured 0.9 vs"), $"the stop did not quote the higher finding: {Said()}");
        await leaf.DisposeAsync();
    }

    /// <summary>
    /// A viewer with upload to give but no children, at the bottom of an overlay with no other
    /// free slot (a chain: the coordinator with --upload 1, every peer --upload 1), cannot be
    /// demoted (the overlay would have no room for one more viewer) and nobody can take its
    /// place. It relays nothing, so it is judged as a leaf: stopped once behind at its parent for
    /// the grace. Across network namespaces (10.242.0.0/16, a 550 kbit/s publish, the third peer
    /// of such a chain behind a 300 kbit/s tbf) it was "not demoted (…): the overlay has no spare
    /// upload to re-place its children" eight times in 30 s, never stopped, 18 s behind and
    /// growing, its parent queueing for it all the while.
    /// </summary>
    [Fact]
    public async Task A_slow_viewer_with_upload_but_no_children_that_cannot_be_demoted_is_judged_as_a_leaf_and_stopped()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(upload: 1);
        var viewer = await overlay.AddPeerAsync(upload: 1);
        var snapshot = overlay.Coordinator.Snapshot();
        Assert.True(snapshot.Nodes.Single(n => n.Id == viewer.Id).Parents[0] == relay.Id, string.Join(", ", snapshot.Nodes.Select(n => $"{n.Id}<-{n.Parents[0]} ({n.Budget})")));
        var viewerRun = overlay.Peers.Single(p => p.Peer == viewer).Run;
        ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)viewer.Id, (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 1_000), (300, 550)).Write);
        await Overlay.WaitUntilAsync(() => viewerRun.IsCompleted || logs.Has(LogLevel.Warning, $"peer {viewer.Id} is not demoted"), "the coordinator judged the viewer");
        Assert.False(logs.Has(LogLevel.Warning, "re-place its children"), $"a viewer with no children was kept for its children:\n{string.Join("\n", logs.Lines.Select(l => l.Message))}");
        var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => viewerRun.WaitAsync(Overlay.Deadline));
        Assert.Matches(BelowRateMessage.Pattern(), stopped.Message);
        await viewer.DisposeAsync();
    }

    /// <summary>
    /// A leaf whose download keeps up with the stream is not the cause of its backlog: its parent
    /// is. In the 200-peer demo a parent stalled for 20 s toward all nine of its children, and one
    /// of them was stopped with "your download is below the stream rate: 0.5 vs 0.4 Mbit/s".
    /// </summary>
    [Fact]
    public async Task A_leaf_behind_whose_download_is_not_below_the_stream_rate_is_not_stopped()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        var (relay, _, leaf) = await LeafUnderRelayAsync(overlay);
        void Report(uint downloadKbps) => ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)leaf.Id, (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 1_000), (downloadKbps, 400)).Write);
        var leafRun = overlay.Peers.Single(p => p.Peer == leaf).Run;

        // Behind for longer than the grace, but it took 0.5 Mbit/s of a 0.4 Mbit/s stream.
        Report(500);
        string judged = $"peer {leaf.Id}, judged as a leaf, is still slow";
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, judged) || leafRun.IsCompleted, "the coordinator judged the leaf");
        Assert.False(leafRun.IsCompleted, $"a leaf whose download kept up was stopped: {leafRun.Exception?.InnerException?.Message}");
        Assert.True(logs.Has(LogLevel.Warning, "is not below the stream rate, 0.4"), "the coordinator did not say why it kept the leaf");
        Assert.Contains(overlay.Coordinator.Snapshot().Nodes, n => n.Id == leaf.Id);
    }

    /// <summary>
    /// A source that starts with a burst (4 s of a 2 Mbit/s stream buffered before the coordinator
    /// read it, as stdin written ahead, an RTMP publisher's first GOP, or a file piped in), then
    /// runs at the live rate. A leaf that takes 2.2 Mbit/s, above the live rate, and is behind at its
    /// parent for the grace (the burst queued for it) is not judged below the stream rate. Before,
    /// the source's rate counted the burst over the whole window and read 3.3 Mbit/s or so 6 s in:
    /// the leaf was taken as slow (a test whose source was made to burst saw a viewer stopped with
    /// "3.1 vs 3.3 Mbit/s" for a 2.1 Mbit/s stream). The parent's report says 6 Mbit/s were queued
    /// (burst included): only the coordinator's own reading of the source can keep the leaf.
    /// </summary>
    [Fact]
    public async Task A_leaf_just_above_the_live_rate_of_a_source_that_started_with_a_burst_is_not_judged_below_it()
    {
        const int liveRate = 250_000;                 // bytes/s: 2 Mbit/s
        const int piece = liveRate / 16;
        const int burstSeconds = 4;
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        var (relay, _, leaf) = await LeafUnderRelayAsync(overlay);
        var leafRun = overlay.Peers.Single(p => p.Peer == leaf).Run;
        overlay.StartStreaming();

        // The burst at once, then a piece every 1/16 s by the wall clock until stopped.
        var data = Overlay.RandomBytes(liveRate * (burstSeconds + MaxSourceSeconds), seed: 17);
        await overlay.WriteAsync(data[..(liveRate * burstSeconds)]);
        using var stop = new CancellationTokenSource();
        var writing = Task.Run(async () =>
        {
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; !stop.IsCancellationRequested && (burstSeconds * 16 + i + 1) * piece <= data.Length; i++)
            {
                var due = TimeSpan.FromSeconds(i / 16.0) - Stopwatch.GetElapsedTime(start);
                if (due > TimeSpan.Zero) await Task.Delay(due);
                int at = (burstSeconds * 16 + i) * piece;
                await overlay.WriteAsync(data[at..(at + piece)]);
            }
        });
        // 6 s of live stream read after the burst: a leaf is judged no sooner (found slow after 1.5 s,
        // then behind for the 5 s grace). The rate over the whole window read 3.3 Mbit/s then; the
        // median does not count the burst once most samples are past it, also when the burst took
        // a loaded machine a second or two to read (2 s in, it read 3.9 so in a CI-like run).
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.BytesStreamed >= liveRate * (burstSeconds + 6) || writing.IsCompleted, "the coordinator read 6 s of live stream after the burst");

        ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)leaf.Id, (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 1_000), (2_200, 6_000)).Write);
        string judged = $"peer {leaf.Id}, judged as a leaf, is still slow";
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, judged) || leafRun.IsCompleted, "the coordinator judged the leaf");
        await stop.CancelAsync();
        await writing;
        string said = string.Join("\n", logs.Lines.Where(l => l.Message.Contains(judged, StringComparison.Ordinal) == true).Select(l => l.Message));
        Assert.False(leafRun.IsCompleted, $"a leaf above the live rate was stopped: {leafRun.Exception?.InnerException?.Message}; {said}");
        Assert.True(logs.Has(LogLevel.Warning, "is not below the stream rate"), $"the coordinator did not keep the leaf for its download: {said}");
    }

    /// <summary>
    /// Many viewers behind at once point to a busy machine or a congested source, not to one
    /// viewer's download: in the 200-peer demo on the loaded 2-core machine (all nodes in one
    /// process), a healthy viewer was stopped ("0.9 vs 1.7 Mbit/s", the overlay then moving 0.8
    /// Mbit/s in all) while 31 other peers were found slow in the same 10 s, and the demo failed.
    /// A leaf behind for the whole grace is stopped only once the others keep up again.
    /// </summary>
    [Fact]
    public async Task A_leaf_behind_for_the_grace_while_many_others_are_found_slow_is_not_stopped_until_they_keep_up()
    {
        var logs = new LogCapture();
        // The default grace (5 s): the others' findings count for twice that, which leaves a
        // loaded machine ample time between the reports below.
        var grace = new CoordinatorOptions().SlowChildGrace;
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        // Two relays with four slots each take the coordinator's two; the eight leaves after them
        // fill their slots, and the test writes the relays' reports itself. The others found slow
        // are under the other relay: several children of one parent behind together would point
        // to that parent's upload instead (event 910, tested above).
        var relays = new[] { await overlay.AddPeerAsync(upload: 4), await overlay.AddPeerAsync(upload: 4) };
        var leaves = new List<Peer>();
        for (int i = 0; i < 8; i++) leaves.Add(await overlay.AddPeerAsync(upload: 0));
        var snapshot = overlay.Coordinator.Snapshot();
        Peer ParentOf(Peer leaf) => relays.Single(r => r.Id == snapshot.Nodes.Single(n => n.Id == leaf.Id).Parents[0]);
        void Report(Peer leaf, uint queueAgeMs, uint downloadKbps) => ((IPeerParents)ParentOf(leaf)).SendToCoordinator(new SlowChild((ulong)leaf.Id, queueAgeMs, (downloadKbps, 8_000)).Write);
        var behind = leaves.First(l => ParentOf(l) == relays[0]);
        var others = leaves.Where(l => ParentOf(l) == relays[1]).Take(3).ToList();
        Assert.Equal(3, others.Count);
        var behindRun = overlay.Peers.Single(p => p.Peer == behind).Run;

        // The machine is busy: three children of the other relay are found slow (behind for 1.5 s,
        // less than the grace), and this one has been behind for longer than the grace.
        foreach (var leaf in others) Report(leaf, 1_500, 100);
        // The two relays' reports travel on two links: a report about a peer that is not its
        // child, ignored and logged, tells when the coordinator has taken the other relay's.
        ((IPeerParents)relays[1]).SendToCoordinator(new SlowChild((ulong)relays[0].Id, 1_500).Write);
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {relays[1].Id} reported peer {relays[0].Id} as slow"), "the other relay's reports were taken");
        Report(behind, (uint)(grace.TotalMilliseconds * 3), 700);
        string judged = $"peer {behind.Id}, judged as a leaf, is still slow";
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, judged) || behindRun.IsCompleted, "the coordinator judged the leaf");
        Assert.False(behindRun.IsCompleted, $"a leaf behind while three other peers were found slow was stopped: {behindRun.Exception?.InnerException?.Message}");
        Assert.True(logs.Has(LogLevel.Warning, "not stopped: 3 other peer(s) were found slow"), "the coordinator did not say why it kept the leaf");
        Assert.Contains(overlay.Coordinator.Snapshot().Nodes, n => n.Id == behind.Id);

        // The others keep up (no more findings about them): once their findings are older than
        // the window, the same report stops the leaf, with the figures.
        int reports = 0;
        await Overlay.WaitUntilAsync(() =>
        {
            if (++reports % 20 == 0) Report(behind, (uint)(grace.TotalMilliseconds * 3), 700);
            return behindRun.IsCompleted;
        }, "the leaf is stopped once it is the only one behind");
        var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => behindRun);
        Assert.Matches(BelowRateMessage.Pattern(), stopped.Message);
        foreach (var leaf in others)
        {
            var run = overlay.Peers.Single(p => p.Peer == leaf).Run;
            Assert.False(run.IsCompleted, $"peer {leaf.Id} ended: {run.Exception?.InnerException?.Message}");
        }
        await behind.DisposeAsync();
    }

    /// <summary>
    /// Two children of one relay behind together point to the relay's upload, not to their
    /// downloads. Seen across network namespaces: a relay behind a 2 Mbit/s uplink fed two children
    /// of a 1.2 Mbit/s stream, and one of them, on an uncapped link, was stopped with "your download
    /// is below the stream rate: 0.8 vs 1.2 Mbit/s". The leaf stays, and the relay is the one
    /// demoted (here the others have no room for its children, so it keeps its place, and says so).
    /// </summary>
    [Fact]
    public async Task A_leaf_behind_while_its_parent_finds_a_sibling_slow_too_is_not_stopped_and_the_parent_is_demoted_instead()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        // The relay takes one of the coordinator's two slots, a viewer that uploads nothing the
        // other; the next two leaves fill the relay's two slots, and the test writes its reports.
        var relay = await overlay.AddPeerAsync();
        await overlay.AddPeerAsync(upload: 0);
        var leaf = await overlay.AddPeerAsync(upload: 0);
        var sibling = await overlay.AddPeerAsync(upload: 0);
        var snapshot = overlay.Coordinator.Snapshot();
        Assert.All(new[] { leaf, sibling }, p => Assert.Equal(relay.Id, snapshot.Nodes.Single(n => n.Id == p.Id).Parents[0]));
        void Report(Peer child, uint queueAgeMs, uint downloadKbps) => ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)child.Id, queueAgeMs, (downloadKbps, 1_200)).Write);
        var leafRun = overlay.Peers.Single(p => p.Peer == leaf).Run;

        Report(sibling, 2_200, 400);
        Report(leaf, (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 300), 800);
        bool ParentJudged() => logs.Has(LogLevel.Warning, $"peer {relay.Id} is not demoted") || logs.Has(LogLevel.Warning, $"peer {relay.Id} demoted");
        await Overlay.WaitUntilAsync(() => ParentJudged() || logs.Has(LogLevel.Warning, "stopping it (your download") || leafRun.IsCompleted, "the coordinator judged the leaf or its parent");
        Assert.False(logs.Has(LogLevel.Warning, "stopping it (your download"), "a leaf behind a relay that found its sibling slow too was stopped");
        Assert.False(leafRun.IsCompleted, $"the leaf ended: {leafRun.Exception?.InnerException?.Message}");
        Assert.True(logs.Has(LogLevel.Warning, $"its parent, peer {relay.Id}, found 1 other child(ren) slow"), "the coordinator did not say why it kept the leaf");
        Assert.True(ParentJudged(), "the relay's demotion was not tried");
        Assert.Contains(overlay.Coordinator.Snapshot().Nodes, n => n.Id == leaf.Id);
    }

    /// <summary>
    /// A child excused under one parent (event 910) is not excused again under the next: two slow
    /// parents in a row point to the child, and two viewers that read slowly together could
    /// otherwise get relay after relay demoted (security.md). Here the first parent is demoted and
    /// the leaf moves under the second; found slow there with a sibling, it is judged on its own.
    /// The first parent's finding is no evidence of its download (that parent's upload was found
    /// short: event 922), so it is moved once more, and stopped when its next parent finds it slow too.
    /// </summary>
    [Fact]
    public async Task A_leaf_excused_under_one_parent_is_judged_on_its_own_when_the_next_parent_finds_it_slow_with_a_sibling()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: logs.Factory);
        // Three relays of four slots (room to spare, so that one can be demoted), four viewers.
        var relays = new[] { await overlay.AddPeerAsync(upload: 4), await overlay.AddPeerAsync(upload: 4), await overlay.AddPeerAsync(upload: 4) };
        var leaves = new List<Peer>();
        for (int i = 0; i < 4; i++) leaves.Add(await overlay.AddPeerAsync(upload: 0));
        int ParentOf(Peer p) => overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == p.Id).Parents[0];
        string Plan() => string.Join(", ", overlay.Coordinator.Snapshot().Nodes.Select(n => $"{n.Id}<-{n.Parents[0]} ({n.Budget})"));
        var first = relays.First(r => leaves.Count(l => ParentOf(l) == r.Id) >= 2);
        var leaf = leaves.First(l => ParentOf(l) == first.Id);
        var sibling = leaves.First(l => l != leaf && ParentOf(l) == first.Id);
        void Report(Peer parent, Peer child, uint queueAgeMs) => ((IPeerParents)parent).SendToCoordinator(new SlowChild((ulong)child.Id, queueAgeMs, (100, 8_000)).Write);
        uint late = (uint)(new CoordinatorOptions().SlowChildGrace.TotalMilliseconds + 300);
        var leafRun = overlay.Peers.Single(p => p.Peer == leaf).Run;

        // Under the first parent: excused, and that parent is demoted; its children move to the second.
        Report(first, sibling, 2_200);
        Report(first, leaf, late);
        try
        {
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {first.Id} demoted"), "the first parent was demoted");
        }
        finally
        {
            foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Warning)) output.WriteLine(l.Message);
            output.WriteLine(Plan());
        }
        Assert.True(logs.Has(LogLevel.Warning, $"its parent, peer {first.Id}, found 1 other child(ren) slow"), "the leaf was not excused under its first parent");
        await Overlay.WaitUntilAsync(() => ParentOf(leaf) != first.Id, "the leaf moved under another parent");
        var second = relays.Single(r => r.Id == ParentOf(leaf));
        output.WriteLine(Plan());

        // Under the second: a sibling found slow there too, then the leaf, late. Not excused again.
        var other = leaves.First(l => l != leaf && ParentOf(l) == second.Id);
        Report(second, other, 2_200);
        Report(second, leaf, late);
        string moved = $"peer {leaf.Id}, judged as a leaf, is still slow: its oldest chunk queued at its parent, peer {second.Id}";
        await Overlay.WaitUntilAsync(() => leafRun.IsCompleted || logs.Has(LogLevel.Warning, moved) || logs.Has(LogLevel.Warning, $"its parent, peer {second.Id}, found 1 other child(ren) slow"), "the coordinator judged the leaf under its second parent");
        Assert.False(logs.Has(LogLevel.Warning, $"its parent, peer {second.Id}, found 1 other child(ren) slow"), "the leaf was excused again under another parent, and that parent was taken for slow");
        Assert.True(logs.Has(LogLevel.Warning, $"peer {leaf.Id} was excused"), "the coordinator did not say why it judged the leaf on its own");
        Assert.False(leafRun.IsCompleted, $"the leaf was stopped on the word of a parent whose upload was found short: {leafRun.Exception?.InnerException?.Message}");
        Assert.True(logs.Has(LogLevel.Warning, moved), "the leaf was not moved away from its second parent");
        await Overlay.WaitUntilAsync(() => ParentOf(leaf) != second.Id, "the leaf moved under a third parent");
        var third = relays.Single(r => r.Id == ParentOf(leaf));
        output.WriteLine(Plan());

        // Found slow there too: two parents whose uploads were not found short point to its download.
        Report(third, leaf, late);
        var stopped = await Assert.ThrowsAsync<StreamInterruptedException>(() => leafRun);
        Assert.Matches(BelowRateMessage.Pattern(), stopped.Message);
        await leaf.DisposeAsync();
    }

    /// <summary>The same for a child that relays: it keeps its budget, and its parent is the one demoted.</summary>
    [Fact]
    public async Task A_relay_found_slow_while_its_parent_finds_a_sibling_slow_too_is_not_demoted_and_the_parent_is_instead()
    {
        var logs = new LogCapture();
        // The coordinator feeds one peer, the relay; its two slots take a viewer and a child that relays.
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync();
        var sibling = await overlay.AddPeerAsync(upload: 0);
        var child = await overlay.AddPeerAsync();
        var snapshot = overlay.Coordinator.Snapshot();
        Assert.True(new[] { child, sibling }.All(p => snapshot.Nodes.Single(n => n.Id == p.Id).Parents[0] == relay.Id),
            $"relay {relay.Id}, child {child.Id}, sibling {sibling.Id}: " + string.Join(", ", snapshot.Nodes.Select(n => $"{n.Id}<-{n.Parents[0]} ({n.Budget})")));
        void Report(Peer slow, uint queueAgeMs) => ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)slow.Id, queueAgeMs, (400, 1_200)).Write);

        Report(sibling, 2_200);
        Report(child, 2_000);
        bool Judged(Peer p) => logs.Has(LogLevel.Warning, $"peer {p.Id} is not demoted") || logs.Has(LogLevel.Warning, $"peer {p.Id} demoted");
        await Overlay.WaitUntilAsync(() => Judged(relay) || Judged(child), "the coordinator judged the relay's child or the relay");
        Assert.False(logs.Has(LogLevel.Warning, $"peer {child.Id} demoted"), "a relay whose parent found its sibling slow too was demoted");
        Assert.Equal(2, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == child.Id).Budget);
        Assert.True(Judged(relay), "the relay's demotion was not tried");
        Assert.True(logs.Has(LogLevel.Warning, $"peer {child.Id} is slow"), "the coordinator did not say why it kept the child a relay");
    }

    /// <summary>
    /// A relay whose upload does not carry its children: the first child found slow, a relay, is
    /// demoted (nothing yet points to its parent); the second, found slow by the same parent while
    /// the first finding stands, shows that the parent's upload is the cause. The parent is demoted
    /// then, not held back by the spacing between demotions (one demotion at a time) that the
    /// child's demotion, caused by the same parent's report, started. Before, it was held back; in
    /// a CI run (ci159, SlowViewerTests' slow-uplink case) the next finding came 10.0 s after the
    /// child's demotion, was held back again, and once the child had moved elsewhere nothing
    /// pointed to the parent any more: it kept its place.
    /// </summary>
    [Fact]
    public async Task A_relay_whose_second_child_is_found_slow_right_after_the_first_was_demoted_is_demoted_at_once()
    {
        var logs = new LogCapture();
        // The coordinator feeds one peer, the relay; its two slots take two children that relay.
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync();
        var first = await overlay.AddPeerAsync();
        var second = await overlay.AddPeerAsync();
        string Plan() => string.Join(", ", overlay.Coordinator.Snapshot().Nodes.Select(n => $"{n.Id}<-{n.Parents[0]} ({n.Budget})"));
        Assert.True(new[] { first, second }.All(p => overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == p.Id).Parents[0] == relay.Id), Plan());
        void Report(Peer slow, uint queueAgeMs) => ((IPeerParents)relay).SendToCoordinator(new SlowChild((ulong)slow.Id, queueAgeMs, (400, 1_200)).Write);

        Report(first, 2_200);
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {first.Id} demoted"), "the first child, found slow alone, is demoted");
        Report(second, 2_200);
        bool Judged() => logs.Has(LogLevel.Warning, $"peer {relay.Id} is not demoted") || logs.Has(LogLevel.Warning, $"peer {relay.Id} demoted");
        try
        {
            await Overlay.WaitUntilAsync(Judged, "the coordinator judged the relay");
        }
        finally
        {
            foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Warning)) output.WriteLine(l.Message);
            output.WriteLine(Plan());
        }
        Assert.False(logs.Has(LogLevel.Warning, $"peer {relay.Id} is not demoted"), "the relay whose upload does not carry its children was not demoted");
        Assert.Equal(0, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == relay.Id).Budget);
        Assert.Equal(2, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == second.Id).Budget);
    }

    /// <summary>
    /// The spacing between demotions lets a parent through only when it is demoted because a
    /// second child of it is slow too (event 910), not when it is found slow itself: a chain of
    /// relays each found slow by its parent, as on a busy machine, is demoted one per 10 s. Before,
    /// the exception held for any demotion of the parent that found the last demoted peer slow, and
    /// each demotion let through named the next parent up: here the three relays of a chain went
    /// at once.
    /// </summary>
    [Fact]
    public async Task A_chain_of_relays_each_found_slow_by_its_parent_is_demoted_one_at_a_time()
    {
        var logs = new LogCapture();
        // The coordinator feeds one peer, and every peer has two slots: the eighth peer joins at
        // depth 4, the bottom of a chain of four relays.
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1 }, loggers: logs.Factory);
        var peers = new List<Peer>();
        for (int i = 0; i < 8; i++) peers.Add(await overlay.AddPeerAsync());
        var nodes = overlay.Coordinator.Snapshot().Nodes;
        string Plan() => string.Join(", ", overlay.Coordinator.Snapshot().Nodes.Select(n => $"{n.Id}<-{n.Parents[0]} ({n.Budget})"));
        int ParentOf(int id) => nodes.Single(n => n.Id == id).Parents[0];
        var chain = new List<Peer>();
        for (int id = peers[^1].Id; id > 0; id = ParentOf(id)) chain.Insert(0, peers.Single(p => p.Id == id));
        Assert.True(chain.Count == 4 && nodes.Where(n => chain.Any(c => c.Id == n.Id)).All(n => n.Budget == 2), Plan());
        void Report(Peer parent, Peer slow) => ((IPeerParents)parent).SendToCoordinator(new SlowChild((ulong)slow.Id, 2_200, (400, 1_200)).Write);
        bool Judged(Peer p) => logs.Has(LogLevel.Warning, $"peer {p.Id} is not demoted") || logs.Has(LogLevel.Warning, $"peer {p.Id} demoted");

        try
        {
            // From the bottom up: each relay of the chain found slow alone, by its parent.
            Report(chain[2], chain[3]);
            await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {chain[3].Id} demoted"), "the bottom relay, found slow alone, is demoted");
            Report(chain[1], chain[2]);
            await Overlay.WaitUntilAsync(() => Judged(chain[2]), "the coordinator judged the relay above");
            Report(chain[0], chain[1]);
            await Overlay.WaitUntilAsync(() => Judged(chain[1]), "the coordinator judged the relay above that");
        }
        finally
        {
            foreach (var l in logs.Lines.Where(l => l.Level >= LogLevel.Warning)) output.WriteLine(l.Message);
            output.WriteLine(Plan());
        }
        foreach (var held in chain.Take(3).Skip(1))
        {
            Assert.True(logs.Has(LogLevel.Warning, $"peer {held.Id} is not demoted"), $"peer {held.Id}, found slow by its parent within 10 s of another demotion, was demoted");
            Assert.Equal(2, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == held.Id).Budget);
        }
    }
}

using System.Diagnostics;
using ShardStream.Rtmp;
using ShardStream.Tests.Rtmp;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// RTMP ingest of the real CLI, published to by the real ffmpeg (issue 11): what a peer several
/// hops down writes decodes with no error, and bad input on the RTMP port while a stream runs
/// closes only that connection, with a logged reason.
/// </summary>
[Collection(CliCollection.Name)]
public sealed class CliRtmpTests(ITestOutputHelper output) : IDisposable
{
    private const string Key = "obs-Key-7f3a";
    private static readonly TimeSpan Startup = TimeSpan.FromSeconds(60);
    private readonly string _dir = Directory.CreateTempSubdirectory("ss-rtmp-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A coordinator with --rtmp, and peers in a chain (every node uploads one stream), each joined before the next.</summary>
    private async Task<(FileOutProcess Coordinator, string RtmpAddress, List<FileOutProcess> Peers)> StartChainAsync(int peers, params string[] extra)
    {
        var coordinator = FileOutProcess.Start(_dir, "coordinator", ["coordinator", "-l", "127.0.0.1:0", "--upload", "1", "--rtmp", "127.0.0.1:0", "--rtmp-key", Key, .. extra]);
        string address = await coordinator.WaitForLogAsync(@"coordinator listening on (\S+?),", Startup);
        string rtmp = await coordinator.WaitForLogAsync(@"rtmp: listening on (\S+) ", Startup);
        var list = new List<FileOutProcess>();
        for (int i = 1; i <= peers; i++)
        {
            list.Add(FileOutProcess.Start(_dir, $"peer{i}", ["peer", "-c", address, "-l", "127.0.0.1:0", "--upload", "1", .. extra]));
            await coordinator.WaitForLogAsync($@"peer {i} \(.*joined", Startup);
        }
        return (coordinator, rtmp, list);
    }

    private static Process StartFfmpeg(string[] args)
    {
        var info = new ProcessStartInfo("ffmpeg") { UseShellExecute = false, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in args) info.ArgumentList.Add(a);
        return Process.Start(info) ?? throw new InvalidOperationException("could not start ffmpeg");
    }

    private static async Task WaitForSameLengthAsync(FileOutProcess a, FileOutProcess b)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        while (a.StdoutLength == 0 || a.StdoutLength != b.StdoutLength)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"outputs of {a.StdoutLength} and {b.StdoutLength} bytes\n{b.Stderr}");
            await Task.Delay(200);
        }
    }

    [Fact]
    public async Task An_ffmpeg_publish_reaches_a_peer_three_hops_down_and_decodes_with_no_error()
    {
        if (RequiresTool.Missing(output, Ffmpeg.Missing())) return;
        var (coordinator, rtmp, peers) = await StartChainAsync(3);
        await using var _ = coordinator;
        try
        {
            Assert.Contains("from peer 2", await coordinator.WaitForLogAsync(@"peer 3 \(.*joined.*", Startup));
            using var ffmpeg = StartFfmpeg(Ffmpeg.PublishArgs($"rtmp://{rtmp}/live/{Key}", seconds: 6));
            string ffmpegErrors = await ffmpeg.StandardError.ReadToEndAsync();
            await ffmpeg.WaitForExitAsync();
            Assert.True(ffmpeg.ExitCode == 0, $"ffmpeg exited with {ffmpeg.ExitCode}: {ffmpegErrors}\n{coordinator.Stderr}");
            await coordinator.WaitForLogAsync("publishing ended", Startup);
            await WaitForSameLengthAsync(peers[0], peers[2]);
            foreach (var p in peers) await p.StopAsync();

            Assert.Equal(File.ReadAllBytes(peers[0].StdoutPath), File.ReadAllBytes(peers[2].StdoutPath));
            var (exit, errors) = Ffmpeg.Decode(peers[2].StdoutPath);
            Assert.True(exit == 0 && errors.Length == 0, $"ffmpeg -xerror: exit {exit}: {errors}");
            var (video, audio) = Ffmpeg.CountFrames(peers[2].StdoutPath);
            output.WriteLine($"peer 3 wrote {peers[2].StdoutLength} bytes: {video} video frames, {audio} audio frames");
            Assert.Equal(180, video); // 6 s at 30 fps
            Assert.InRange(audio, 250, 290); // 6 s of AAC at 44.1 kHz: 1024 samples a frame
            Assert.DoesNotContain(Key, coordinator.Stderr);
        }
        finally
        {
            foreach (var p in peers) await p.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_player_that_joins_mid_stream_plays_from_a_peer_two_hops_down_and_from_the_coordinator()
    {
        if (RequiresTool.Missing(output, Ffmpeg.Missing())) return;
        var (coordinator, rtmp, peers) = await StartChainAsync(2, "--rtmp-play", "127.0.0.1:0");
        await using var _ = coordinator;
        try
        {
            // The publish goes on until the test stops it, however long a loaded machine takes to
            // get the players going (a publish of fixed length could end under them).
            using var ffmpeg = StartFfmpeg(Ffmpeg.PublishArgs($"rtmp://{rtmp}/live/{Key}", seconds: 600, gop: 30));
            var publishErrors = ffmpeg.StandardError.ReadToEndAsync();
            await coordinator.WaitForLogAsync("publishing started", Startup);
            // The players join mid-stream: once the peer two hops down has written 5 s of it (the
            // coordinator, upstream of it, has at least that), many keyframes after the first.
            int before = await UntilVideoPacketsAsync(peers[1].StdoutPath, 150);
            Assert.True(before >= 150, $"peer 2 wrote {before} video frames of the stream within {Startup.TotalSeconds} s, not 150\n{peers[1].Stderr}");
            output.WriteLine($"the players join when peer 2 has written {before} video frames");
            // Both players at once, 4 s each: one from the peer, one from the coordinator.
            var plays = await Task.WhenAll(new[] { peers[1], coordinator }.Select(async node =>
            {
                string play = await node.WaitForLogAsync(@"rtmp: listening on (\S+) \(play\)", Startup);
                string copy = Path.Combine(_dir, $"played-{Path.GetFileName(node.StdoutPath)}.flv");
                var started = Stopwatch.StartNew();
                var r = await Task.Run(() => RequiresTool.Run("ffmpeg", ["-hide_banner", "-v", "error", "-xerror", "-i", $"rtmp://{play}/live/stream", "-t", "4", "-c", "copy", "-f", "flv", copy], TimeSpan.FromMinutes(2)));
                return (Node: node, Play: play, Copy: copy, Run: r, Ms: started.ElapsedMilliseconds);
            }));
            foreach (var (node, play, copy, r, ms) in plays)
            {
                Assert.True(r.ExitCode == 0 && r.Stderr.Trim().Length == 0, $"ffmpeg playing from {play}: exit {r.ExitCode}: {r.Stderr}\n{node.Stderr}");
                var (exit, errors) = Ffmpeg.Decode(copy);
                Assert.True(exit == 0 && errors.Length == 0, $"decode of what was played: {errors}");
                var (video, audio) = Ffmpeg.CountPackets(copy);
                output.WriteLine($"played 4 s from {play} in {ms} ms: {video} video frames, {audio} audio frames");
                Assert.InRange(video, 118, 122); // 4 s at 30 fps, starting at a keyframe
            }
            ffmpeg.Kill();
            await ffmpeg.WaitForExitAsync();
            await publishErrors;
        }
        finally
        {
            foreach (var p in peers) await p.DisposeAsync();
        }
    }

    /// <summary>
    /// The README's recipe starts a player right after the peer (<c>peer … --rtmp-play … &amp;
    /// ffplay rtmp://…</c>): the peer listens for players before its join, not after it, so a player
    /// that comes while the join is still going on waits for the stream instead of being refused.
    /// The join is held by stopping the coordinator (SIGSTOP) until the player is in.
    /// </summary>
    [Fact]
    public async Task A_player_that_comes_while_the_peer_is_still_joining_waits_for_the_stream()
    {
        if (RequiresTool.Missing(output, Ffmpeg.Missing())) return;
        var (coordinator, rtmp, _) = await StartChainAsync(0);
        await using var _c = coordinator;
        using var ffmpeg = StartFfmpeg(Ffmpeg.PublishArgs($"rtmp://{rtmp}/live/{Key}", seconds: 600, gop: 30));
        var publishErrors = ffmpeg.StandardError.ReadToEndAsync();
        try
        {
            await coordinator.WaitForLogAsync("publishing started", Startup);
            string address = await coordinator.WaitForLogAsync(@"coordinator listening on (\S+?),", Startup);
            await coordinator.SignalAsync("STOP");
            await using var peer = FileOutProcess.Start(_dir, "peer", ["peer", "-c", address, "-l", "127.0.0.1:0", "--rtmp-play", "127.0.0.1:0"]);
            string play;
            try
            {
                play = await peer.WaitForLogAsync(@"rtmp: listening on (\S+) \(play\)", Startup);
            }
            catch (TimeoutException e)
            {
                throw new TimeoutException($"the peer did not listen for players while its join was held: {e.Message}");
            }
            Assert.DoesNotContain("joined as peer", peer.Stderr);
            string copy = Path.Combine(_dir, "played.flv");
            var player = Task.Run(() => RequiresTool.Run("ffmpeg", ["-hide_banner", "-v", "error", "-xerror", "-i", $"rtmp://{play}/live/stream", "-t", "4", "-c", "copy", "-f", "flv", copy], TimeSpan.FromMinutes(2)));
            await peer.WaitForLogAsync("playing started", Startup);
            await coordinator.SignalAsync("CONT");
            var r = await player;
            Assert.True(r.ExitCode == 0 && r.Stderr.Trim().Length == 0, $"ffmpeg playing from {play}: exit {r.ExitCode}: {r.Stderr}\n{peer.Stderr}");
            Assert.Contains("joined as peer", peer.Stderr);
            var (exit, errors) = Ffmpeg.Decode(copy);
            Assert.True(exit == 0 && errors.Length == 0, $"decode of what was played: {errors}");
            var (video, _) = Ffmpeg.CountPackets(copy);
            output.WriteLine($"played 4 s from a peer the player reached before its join: {video} video frames");
            Assert.InRange(video, 118, 122); // 4 s at 30 fps, starting at a keyframe
        }
        finally
        {
            await coordinator.SignalAsync("CONT");
            ffmpeg.Kill();
            await ffmpeg.WaitForExitAsync();
            await publishErrors;
        }
    }

    [Fact]
    public async Task A_publisher_that_leaves_and_comes_back_is_one_stream_a_viewer_decodes_across()
    {
        if (RequiresTool.Missing(output, Ffmpeg.Missing())) return;
        var (coordinator, rtmp, peers) = await StartChainAsync(1);
        await using var _ = coordinator;
        await using var peer = peers[0];
        for (int i = 1; i <= 2; i++)
        {
            using var ffmpeg = StartFfmpeg(Ffmpeg.PublishArgs($"rtmp://{rtmp}/live/{Key}", seconds: 4));
            string errors = await ffmpeg.StandardError.ReadToEndAsync();
            await ffmpeg.WaitForExitAsync();
            Assert.True(ffmpeg.ExitCode == 0, $"publish {i}: ffmpeg exited with {ffmpeg.ExitCode}: {errors}\n{coordinator.Stderr}");
        }
        await coordinator.WaitForLogAsync("publishing ended", Startup);
        for (var deadline = DateTime.UtcNow + Startup; coordinator.Stderr.Split('\n').Count(l => l.Contains("publishing ended")) < 2;)
        {
            Assert.True(DateTime.UtcNow < deadline, coordinator.Stderr);
            await Task.Delay(100);
        }
        await UntilVideoPacketsAsync(peer.StdoutPath, 240);
        await peer.StopAsync();
        Assert.Equal(2, coordinator.Stderr.Split('\n').Count(l => l.Contains("publishing started")));
        var (exit, decodeErrors) = Ffmpeg.Decode(peer.StdoutPath);
        Assert.True(exit == 0 && decodeErrors.Length == 0, $"ffmpeg -xerror across the reconnect: exit {exit}: {decodeErrors}");
        Assert.Equal(240, Ffmpeg.CountPackets(peer.StdoutPath).Video);
    }

    [Fact]
    public async Task A_publisher_that_comes_back_with_new_headers_reaches_the_viewers_and_a_later_joiner_gets_the_new_header()
    {
        if (RequiresTool.Missing(output, Ffmpeg.Missing())) return;
        var (coordinator, rtmp, peers) = await StartChainAsync(1);
        await using var _ = coordinator;
        await using var first = peers[0];
        // The first publish at 640x360, then another at 320x240: new onMetaData and a new AVC sequence header.
        using (var ffmpeg = StartFfmpeg(Ffmpeg.PublishArgs($"rtmp://{rtmp}/live/{Key}", seconds: 4)))
        {
            string errors = await ffmpeg.StandardError.ReadToEndAsync();
            await ffmpeg.WaitForExitAsync();
            Assert.True(ffmpeg.ExitCode == 0, $"publish 1: ffmpeg exited with {ffmpeg.ExitCode}: {errors}\n{coordinator.Stderr}");
        }
        using var second = StartFfmpeg(Ffmpeg.PublishArgs($"rtmp://{rtmp}/live/{Key}", seconds: 8, size: "320x240"));
        var secondErrors = second.StandardError.ReadToEndAsync();
        for (var deadline = DateTime.UtcNow + Startup; coordinator.Stderr.Split('\n').Count(l => l.Contains("publishing started")) < 2;)
        {
            Assert.True(DateTime.UtcNow < deadline, coordinator.Stderr);
            await Task.Delay(100);
        }
        // A viewer that joins during the second publish, once the first peer has 2 s of it (120 + 60 frames).
        await UntilVideoPacketsAsync(first.StdoutPath, 180);
        string address = await coordinator.WaitForLogAsync(@"coordinator listening on (\S+?),", Startup);
        await using var joiner = FileOutProcess.Start(_dir, "joiner", ["peer", "-c", address, "-l", "127.0.0.1:0", "--upload", "1"]);
        await coordinator.WaitForLogAsync(@"peer 2 \(.*joined", Startup);
        await second.WaitForExitAsync();
        Assert.True(second.ExitCode == 0, $"publish 2: ffmpeg exited with {second.ExitCode}: {await secondErrors}");
        await UntilVideoPacketsAsync(first.StdoutPath, 360);
        await first.StopAsync();
        await joiner.StopAsync();

        // The viewer from the start decodes across the change and ends in the new size.
        var (exit, errors1) = Ffmpeg.Decode(first.StdoutPath);
        Assert.True(exit == 0 && errors1.Length == 0, $"ffmpeg -xerror across the new headers: exit {exit}: {errors1}");
        var sizes = Ffmpeg.FrameSizes(first.StdoutPath);
        Assert.Equal(360, sizes.Count);
        Assert.Equal(["640x360", "320x240"], sizes.Distinct());
        // The joiner was handed the new header (not the first publish's): its first byte decodes, all at 320x240.
        Assert.Contains("stream header", joiner.Stderr);
        var (exit2, errors2) = Ffmpeg.Decode(joiner.StdoutPath);
        Assert.True(exit2 == 0 && errors2.Length == 0, $"the joiner's output: ffmpeg -xerror exit {exit2}: {errors2}\n{joiner.Stderr}");
        var joinerSizes = Ffmpeg.FrameSizes(joiner.StdoutPath);
        Assert.NotEmpty(joinerSizes);
        Assert.All(joinerSizes, size => Assert.Equal("320x240", size));
    }

    [Fact]
    public async Task Bad_input_on_the_RTMP_port_closes_that_connection_with_a_reason_and_the_stream_goes_on()
    {
        if (RequiresTool.Missing(output, Ffmpeg.Missing())) return;
        // -v: each bad connection's reason is a debug line (1101); the warning counts them (1113).
        var (coordinator, rtmp, peers) = await StartChainAsync(1, "-v");
        await using var _ = coordinator;
        await using var peer = peers[0];
        using var ffmpeg = StartFfmpeg(Ffmpeg.PublishArgs($"rtmp://{rtmp}/live/{Key}", seconds: 20));
        var ffmpegErrors = ffmpeg.StandardError.ReadToEndAsync();
        await coordinator.WaitForLogAsync("publishing started", Startup);

        // A client that stops in the handshake: closed by the handshake timeout while the rest runs.
        await using var stalled = await RtmpTestClient.ConnectAsync(rtmp);
        await stalled.SendRawAsync([3, 0, 0, 0]);

        var cases = new (string What, Func<RtmpTestClient, Task> Send, string Reason)[]
        {
            ("random bytes", c => c.SendRawAsync([0x47, .. Enumerable.Range(0, 2000).Select(i => (byte)(i * 7919))]), "not RTMP's 3"),
            ("chunk size 0", c => AfterConnect(c, RtmpMessageType.SetChunkSize, RtmpControl.UInt32(0)), "invalid chunk size 0 "),
            ("chunk size 2^31", c => AfterConnect(c, RtmpMessageType.SetChunkSize, RtmpControl.UInt32(0x80000000)), "invalid chunk size 2147483648"),
            ("message over the limit", c => AfterConnect(c, null, Hex.Bytes("06 000000 FFFFFF 09 01000000")), "16777215 bytes on chunk stream 6, over the limit of 8388608"),
            ("AMF junk", c => AfterConnect(c, RtmpMessageType.CommandAmf0, Hex.Bytes("02 0007 636F6E6E65 FF")), "AMF0 value cut short"),
            ("deep nesting", c => AfterConnect(c, RtmpMessageType.CommandAmf0,
                [.. Amf0Writer.Encode("createStream", 2.0), .. Hex.Bytes(string.Concat(Enumerable.Repeat("03 0001 61", 1000)))]), "AMF0 nesting deeper than 16"),
            ("wrong key", c => Publish(c, "not-" + Key), "publish refused: wrong stream key"),
            ("second publisher", c => Publish(c, Key), "publish refused: another publisher is live"),
            ("play of an unknown stream", c => Play(c, "anything"), "play refused: this node does not serve players"),
        };
        foreach (var (what, send, reason) in cases)
        {
            await using var client = await RtmpTestClient.ConnectAsync(rtmp);
            await send(client);
            Assert.True(await client.ClosedAsync(), what);
            string line = await coordinator.WaitForLogAsync($"closed: .*{System.Text.RegularExpressions.Regex.Escape(reason)}", Startup);
            output.WriteLine($"{what}: {line}");
        }
        output.WriteLine(await coordinator.WaitForLogAsync("closed: handshake not finished within 10 s", Startup));
        output.WriteLine(await coordinator.WaitForLogAsync(@"rtmp: 7 connection\(s\) closed so far for bad input", Startup));

        string errors = await ffmpegErrors;
        await ffmpeg.WaitForExitAsync();
        Assert.True(ffmpeg.ExitCode == 0, $"the publisher was disturbed: ffmpeg exited with {ffmpeg.ExitCode}: {errors}");
        await coordinator.WaitForLogAsync("publishing ended", Startup);
        await UntilVideoPacketsAsync(peer.StdoutPath, 600);
        await peer.StopAsync();
        var (exit, decodeErrors) = Ffmpeg.Decode(peer.StdoutPath);
        Assert.True(exit == 0 && decodeErrors.Length == 0, $"ffmpeg -xerror: exit {exit}: {decodeErrors}");
        Assert.Equal(600, Ffmpeg.CountFrames(peer.StdoutPath).Video);
        Assert.Single(coordinator.Stderr.Split('\n'), l => l.Contains("publishing started"));
        Assert.DoesNotContain(Key, coordinator.Stderr);
    }

    /// <summary>
    /// Waits (up to <see cref="Startup"/>) until the output at <paramref name="path"/> holds
    /// <paramref name="expected"/> video packets (the last chunks reached the peer); returns how
    /// many it holds. An output ffprobe cannot read yet (nothing, or not a whole header) holds none.
    /// </summary>
    private static async Task<int> UntilVideoPacketsAsync(string path, int expected)
    {
        int video;
        for (var deadline = DateTime.UtcNow + Startup; (video = Ffmpeg.VideoPacketsSoFar(path)) < expected && DateTime.UtcNow < deadline;)
            await Task.Delay(200);
        return video;
    }

    private static async Task AfterConnect(RtmpTestClient c, RtmpMessageType? type, byte[] payload)
    {
        await Connect(c);
        if (type is { } t) await c.SendAsync(2, t, 0, 0, payload);
        else await c.SendRawAsync(payload);
    }

    private static async Task Connect(RtmpTestClient c)
    {
        await c.HandshakeAsync();
        await c.CommandAsync(0, "connect", 1.0, new AmfObject { { "app", "live" } });
        while (await c.ReadCommandAsync() is { } m && m[0] as string != "_result") { }
    }

    private static async Task Publish(RtmpTestClient c, string name)
    {
        await Connect(c);
        await c.CommandAsync(0, "createStream", 2.0, null);
        await c.ReadCommandAsync();
        await c.CommandAsync(1, "publish", 3.0, null, name, "live");
    }

    private static async Task Play(RtmpTestClient c, string name)
    {
        await Connect(c);
        await c.CommandAsync(0, "createStream", 2.0, null);
        await c.ReadCommandAsync();
        await c.CommandAsync(1, "play", 3.0, null, name);
    }
}

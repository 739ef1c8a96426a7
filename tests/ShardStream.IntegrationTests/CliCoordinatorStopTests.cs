using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// Stopping a coordinator with SIGTERM (or Ctrl-C) ends its stream: the source is taken as ended
/// at the bytes read so far, the coordinator exits 0 after its viewers finish, and every viewer
/// exits 0 with "stream complete" and exactly the bytes the coordinator streamed, for stdin that
/// is still open and for an RTMP publish that is still going (which has no end of input). A
/// coordinator killed with SIGKILL still leaves its viewers joining again
/// (RejoinNetnsTests.Viewers_on_other_hosts_rejoin_a_coordinator_restarted_mid_stream_and_write_both_runs).
/// Also the bounds and edges of the stop: the 15 s wait for a frozen viewer, exit 143 for SIGTERM
/// before the stream started, a signal after stdin's end, one stop delivered twice, and the
/// coordinator's own HTTP viewers (one that stopped reading, one that reads).
/// Real CLI processes on 127.88.0.0/16 and 127.86.1.0/24; viewers join again for 5 s only, so that
/// a viewer that lost the coordinator instead of seeing the end fails in seconds. Every wait is for
/// a condition, except the half-second after a signal that must be past the repeat window.
/// </summary>
[Collection(CliCollection.Name)]
public sealed partial class CliCoordinatorStopTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(90);
    private const string Key = "obs-Key-stop";
    private readonly string _dir = Directory.CreateTempSubdirectory("ss-stop-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Sigterm_ends_a_stdin_stream_that_is_still_open_and_every_viewer_exits_0_with_the_bytes_streamed()
    {
        // 64 MiB at 1 MiB/s: the source is still being written when the test stops the coordinator.
        var source = new byte[64 << 20];
        new Random(7).NextBytes(source);
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.88.0.1:0", "--min-peers", "3", "--latency-aware", "false");
        string address = await coordinator.WaitForListenAddressAsync(Deadline);
        var viewers = new List<CliProcess>();
        try
        {
            for (int i = 0; i < 3; i++) viewers.Add(CliProcess.Start("peer", "-c", address, "-l", "127.88.0.1:0", "--rejoin-seconds", "5"));
            using var stopWriting = new CancellationTokenSource();
            var writing = WritePacedAsync(coordinator.StandardInput, source, 1 << 20, stopWriting.Token);
            await UntilAsync(() => viewers.All(v => v.StdoutBytes > 2 << 20) || viewers.Any(v => v.HasExited), () => string.Join("\n", viewers.Select(v => v.Stderr)));
            Assert.All(viewers, v => Assert.False(v.HasExited, v.Stderr));

            await coordinator.SignalAsync("TERM");
            var (coordinatorExit, _) = await coordinator.WaitForExitAsync(Deadline);
            await stopWriting.CancelAsync();
            await writing;

            var exits = new List<(int Exit, string Sha)>();
            foreach (var viewer in viewers) exits.Add(await viewer.WaitForExitAsync(Deadline));
            foreach (var ((exit, _), i) in exits.Select((e, i) => (e, i))) Assert.True(exit == 0, $"viewer {i} exited with {exit}:\n{viewers[i].Stderr}");
            Assert.True(coordinatorExit == 0, $"coordinator exited with {coordinatorExit}:\n{coordinator.Stderr}");
            long ending = BytesIn(coordinator.Stderr, EndingRegex());
            long streamed = BytesIn(coordinator.Stderr, TotalsRegex());
            Assert.Equal(ending, streamed);
            Assert.InRange(streamed, 2 << 20, source.Length - 1);
            string expected = Convert.ToHexStringLower(SHA256.HashData(source.AsSpan(0, (int)streamed)));
            foreach (var (viewer, i) in viewers.Select((v, i) => (v, i)))
            {
                string sha = exits[i].Sha;
                Assert.Contains(viewer.StderrLines, l => l.Contains($"stream complete: {streamed} bytes", StringComparison.Ordinal));
                Assert.True(sha == expected, $"viewer {i} wrote {viewer.StdoutBytes} bytes, sha256 {sha}; the first {streamed} bytes of the source: {expected}\n{viewer.Stderr}");
            }
            output.WriteLine($"the coordinator ended the stream at {streamed} bytes on SIGTERM");
        }
        finally
        {
            foreach (var v in viewers) await v.DisposeAsync();
        }
    }

    [Fact]
    public async Task Sigterm_ends_an_RTMP_stream_while_ffmpeg_still_publishes_and_every_viewer_exits_0_with_the_same_bytes()
    {
        if (RequiresTool.Missing(output, Ffmpeg.Missing())) return;
        await using var coordinator = FileOutProcess.Start(_dir, "coordinator", ["coordinator", "-l", "127.88.0.2:0", "--upload", "1", "--rtmp", "127.88.0.2:0", "--rtmp-key", Key]);
        string address = await coordinator.WaitForLogAsync(@"coordinator listening on (\S+?),", Deadline);
        string rtmp = await coordinator.WaitForLogAsync(@"rtmp: listening on (\S+) ", Deadline);
        var viewers = new List<FileOutProcess>();
        Process? ffmpeg = null;
        try
        {
            // A chain: the coordinator -> viewer 1 -> viewer 2.
            for (int i = 1; i <= 2; i++)
            {
                viewers.Add(FileOutProcess.Start(_dir, $"viewer{i}", ["peer", "-c", address, "-l", "127.88.0.2:0", "--upload", "1", "--rejoin-seconds", "5"]));
                await coordinator.WaitForLogAsync($@"peer {i} \(.*joined", Deadline);
            }
            ffmpeg = StartFfmpeg(Ffmpeg.PublishArgs($"rtmp://{rtmp}/live/{Key}", seconds: 600));
            // 2 s of the publish has reached the end of the chain.
            for (var deadline = DateTime.UtcNow + Deadline; Ffmpeg.VideoPacketsSoFar(viewers[1].StdoutPath) < 60;)
            {
                Assert.True(DateTime.UtcNow < deadline && !ffmpeg.HasExited, $"the publish did not reach viewer 2:\n{coordinator.Stderr}\n{viewers[1].Stderr}");
                await Task.Delay(200);
            }

            await coordinator.StopAsync();
            int coordinatorExit = await coordinator.WaitForExitAsync(Deadline);
            var exits = new List<int>();
            foreach (var viewer in viewers) exits.Add(await viewer.WaitForExitAsync(Deadline));
            foreach (var (exit, i) in exits.Select((e, i) => (e, i))) Assert.True(exit == 0, $"viewer {i + 1} exited with {exit}:\n{viewers[i].Stderr}");
            Assert.True(coordinatorExit == 0, $"coordinator exited with {coordinatorExit}:\n{coordinator.Stderr}");
            long ending = BytesIn(coordinator.Stderr, EndingRegex());
            long streamed = BytesIn(coordinator.Stderr, TotalsRegex());
            Assert.Equal(ending, streamed);
            foreach (var viewer in viewers)
            {
                Assert.Contains(viewer.StderrLines, l => l.Contains($"stream complete: {streamed} bytes", StringComparison.Ordinal));
                Assert.Equal(streamed, viewer.StdoutLength);
            }
            Assert.Equal(File.ReadAllBytes(viewers[0].StdoutPath), File.ReadAllBytes(viewers[1].StdoutPath));
            var (decodeExit, errors) = Ffmpeg.Decode(viewers[1].StdoutPath);
            Assert.True(decodeExit == 0 && errors.Length == 0, $"ffmpeg -xerror: exit {decodeExit}: {errors}");
            output.WriteLine($"the coordinator ended the stream at {streamed} bytes on SIGTERM ({Ffmpeg.CountPackets(viewers[1].StdoutPath).Video} video packets)");
        }
        finally
        {
            if (ffmpeg is not null)
            {
                if (!ffmpeg.HasExited) ffmpeg.Kill();
                await ffmpeg.WaitForExitAsync();
                ffmpeg.Dispose();
            }
            foreach (var v in viewers) await v.DisposeAsync();
        }
    }

    [Fact]
    public async Task Sigterm_while_the_source_is_held_for_min_peers_exits_143()
    {
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.86.1.1:0", "--min-peers", "1");
        await coordinator.WaitForListenAddressAsync(Deadline);
        await UntilAsync(() => coordinator.StderrLines.Any(l => l.Contains("waiting for 1 peer", StringComparison.Ordinal)), () => coordinator.Stderr);
        await coordinator.SignalAsync("TERM");
        var (exit, _) = await coordinator.WaitForExitAsync(Deadline);
        Assert.True(exit == 143, $"coordinator exited with {exit} on SIGTERM before the stream started:\n{coordinator.Stderr}");
    }

    [Fact]
    public async Task A_frozen_viewer_holds_the_wait_after_sigterm_for_15_s_and_no_longer_and_the_coordinator_exits_0()
    {
        // The coordinator's heartbeat timeout (60 s) is longer than the drain bound: only the bound ends the wait.
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.86.1.2:0", "--min-peers", "2", "--latency-aware", "false", "--heartbeat-timeout", "60");
        string address = await coordinator.WaitForListenAddressAsync(Deadline);
        var viewers = new List<CliProcess>();
        try
        {
            for (int i = 0; i < 2; i++) viewers.Add(CliProcess.Start("peer", "-c", address, "-l", "127.86.1.2:0", "--rejoin-seconds", "5"));
            var source = new byte[1 << 20];
            new Random(11).NextBytes(source);
            await coordinator.StandardInput.WriteAsync(source);
            await coordinator.StandardInput.FlushAsync();
            await UntilAsync(() => viewers.All(v => v.StdoutBytes == source.Length) || viewers.Any(v => v.HasExited), () => string.Join("\n", viewers.Select(v => v.Stderr)));
            await viewers[1].SignalAsync("STOP");
            long signalled = Stopwatch.GetTimestamp();
            await coordinator.SignalAsync("TERM");
            var (exit, _) = await coordinator.WaitForExitAsync(Deadline);
            var took = Stopwatch.GetElapsedTime(signalled);
            await viewers[1].SignalAsync("CONT");
            Assert.True(exit == 0, $"coordinator exited with {exit} {took.TotalSeconds:0.0} s after SIGTERM:\n{coordinator.Stderr}");
            // The drain bound (15 s), not the process bound (20 s, which exits 143) nor the heartbeat timeout.
            Assert.InRange(took.TotalSeconds, 14.5, 19.5);
            var (viewerExit, _) = await viewers[0].WaitForExitAsync(Deadline);
            Assert.True(viewerExit == 0, $"viewer 0 exited with {viewerExit}:\n{viewers[0].Stderr}");
            output.WriteLine($"the coordinator exited {took.TotalSeconds:0.00} s after SIGTERM with a frozen viewer");
        }
        finally
        {
            foreach (var v in viewers) await v.DisposeAsync();
        }
    }

    [Fact]
    public async Task Sigterm_after_stdin_ended_says_the_stream_had_ended_and_a_second_one_a_second_later_quits_at_once_with_exit_0()
    {
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.86.1.3:0", "--min-peers", "1", "--heartbeat-timeout", "60");
        string address = await coordinator.WaitForListenAddressAsync(Deadline);
        await using var viewer = CliProcess.Start("peer", "-c", address, "-l", "127.86.1.3:0", "--rejoin-seconds", "5");
        var source = new byte[1 << 20];
        new Random(13).NextBytes(source);
        await coordinator.StandardInput.WriteAsync(source);
        await coordinator.StandardInput.FlushAsync();
        await UntilAsync(() => viewer.StdoutBytes == source.Length || viewer.HasExited, () => viewer.Stderr);
        // The viewer cannot finish: the coordinator waits for it after the end of its input.
        await viewer.SignalAsync("STOP");
        coordinator.StandardInput.Close();
        await UntilAsync(() => coordinator.StderrLines.Any(l => l.Contains("source ended after", StringComparison.Ordinal)), () => coordinator.Stderr);
        await coordinator.SignalAsync("TERM");
        await UntilAsync(() => coordinator.StderrLines.Any(l => l.Contains("SIGTERM: ", StringComparison.Ordinal)), () => coordinator.Stderr);
        await Task.Delay(CoordinatorRepeatWindow * 2);
        long second = Stopwatch.GetTimestamp();
        await coordinator.SignalAsync("TERM");
        var (exit, _) = await coordinator.WaitForExitAsync(Deadline);
        var took = Stopwatch.GetElapsedTime(second);
        await viewer.SignalAsync("CONT");
        Assert.True(exit == 0, $"coordinator exited with {exit}:\n{coordinator.Stderr}");
        string line = coordinator.StderrLines.First(l => l.Contains("SIGTERM: ", StringComparison.Ordinal));
        // The End went out when stdin ended: a signal now ends nothing, and its line must not say it does.
        Assert.DoesNotContain("ending the stream", line, StringComparison.Ordinal);
        Assert.Contains($"{source.Length} bytes", line, StringComparison.Ordinal);
        Assert.Contains(coordinator.StderrLines, l => l.Contains("SIGTERM again", StringComparison.Ordinal));
        Assert.True(took < TimeSpan.FromSeconds(10), $"the coordinator exited {took.TotalSeconds:0.0} s after the second SIGTERM:\n{coordinator.Stderr}");
    }

    [Fact]
    public async Task Two_signals_a_few_ms_apart_are_one_stop_and_do_not_cut_the_wait_for_the_viewers()
    {
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.86.1.5:0", "--min-peers", "1", "--heartbeat-timeout", "60");
        string address = await coordinator.WaitForListenAddressAsync(Deadline);
        await using var viewer = CliProcess.Start("peer", "-c", address, "-l", "127.86.1.5:0", "--rejoin-seconds", "5");
        var source = new byte[1 << 20];
        new Random(19).NextBytes(source);
        await coordinator.StandardInput.WriteAsync(source);
        await coordinator.StandardInput.FlushAsync();
        await UntilAsync(() => viewer.StdoutBytes == source.Length || viewer.HasExited, () => viewer.Stderr);
        // The viewer cannot finish: only a second signal (or the 15 s bound) ends the coordinator's wait.
        await viewer.SignalAsync("STOP");
        // One stop delivered twice, as a wrapper (timeout, dotnet run) passes the terminal's Ctrl-C on to
        // its child and to its process group: two signals a few ms apart (two kinds: the kernel would merge two of one kind).
        using (var both = Process.Start(new ProcessStartInfo("sh") { ArgumentList = { "-c", $"kill -INT {coordinator.Pid}; kill -TERM {coordinator.Pid}" }, UseShellExecute = false })!)
        {
            await both.WaitForExitAsync();
            Assert.Equal(0, both.ExitCode);
        }
        await UntilAsync(() => coordinator.StderrLines.Any(l => l.Contains("ending the stream at", StringComparison.Ordinal)), () => coordinator.Stderr);
        await Task.Delay(CoordinatorRepeatWindow * 2);
        Assert.False(coordinator.HasExited, $"the coordinator quit on one stop delivered twice:\n{coordinator.Stderr}");
        Assert.DoesNotContain(coordinator.StderrLines, l => l.Contains(" again: quitting", StringComparison.Ordinal));

        // A second stop, past the window, ends the wait at once.
        long third = Stopwatch.GetTimestamp();
        await coordinator.SignalAsync("TERM");
        var (exit, _) = await coordinator.WaitForExitAsync(Deadline);
        var took = Stopwatch.GetElapsedTime(third);
        await viewer.SignalAsync("CONT");
        Assert.True(exit == 0, $"coordinator exited with {exit}:\n{coordinator.Stderr}");
        Assert.Single(coordinator.StderrLines, l => l.Contains(" again: quitting", StringComparison.Ordinal));
        Assert.True(took < TimeSpan.FromSeconds(10), $"the coordinator exited {took.TotalSeconds:0.0} s after the second stop:\n{coordinator.Stderr}");
    }

    /// <summary>CoordinatorStop.RepeatWindow: a signal this soon after the first is taken for the same one.</summary>
    private static readonly TimeSpan CoordinatorRepeatWindow = TimeSpan.FromMilliseconds(500);

    [Fact]
    public async Task Sigterm_with_an_HTTP_viewer_that_stopped_reading_still_exits_0_soon_after_the_peers_finish()
    {
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.86.1.4:0", "--http", "127.86.1.4:0", "--format", "flv", "--min-peers", "1", "--latency-aware", "false");
        string address = await coordinator.WaitForListenAddressAsync(Deadline);
        await UntilAsync(() => coordinator.StderrLines.Any(l => HttpRegex().IsMatch(l)), () => coordinator.Stderr);
        var http = HttpRegex().Match(coordinator.StderrLines.First(l => HttpRegex().IsMatch(l))).Groups[1].Value.Split(':');
        await using var viewer = CliProcess.Start("peer", "-c", address, "-l", "127.86.1.4:0", "--rejoin-seconds", "5");
        var source = SyntheticFlv(24 << 20);
        // The first 1 MiB starts the stream; the HTTP viewer comes in before the rest.
        await coordinator.StandardInput.WriteAsync(source.AsMemory(0, 1 << 20));
        await coordinator.StandardInput.FlushAsync();
        await UntilAsync(() => viewer.StdoutBytes > 0 || viewer.HasExited, () => viewer.Stderr);
        // An HTTP viewer that asks for the stream and never reads it (a paused player, a stalled network).
        using var stalled = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        await stalled.ConnectAsync(http[0], int.Parse(http[1], CultureInfo.InvariantCulture));
        await stalled.SendAsync("GET /live.flv HTTP/1.1\r\nHost: shardstream\r\n\r\n"u8.ToArray());
        await UntilAsync(() => coordinator.StderrLines.Any(l => l.Contains("watches /live.flv", StringComparison.Ordinal)), () => coordinator.Stderr);
        // The rest, more than the stalled connection's buffers hold; stdin stays open.
        await coordinator.StandardInput.WriteAsync(source.AsMemory(1 << 20));
        await coordinator.StandardInput.FlushAsync();
        await UntilAsync(() => viewer.StdoutBytes == source.Length || viewer.HasExited, () => viewer.Stderr);
        long signalled = Stopwatch.GetTimestamp();
        await coordinator.SignalAsync("TERM");
        var (exit, _) = await coordinator.WaitForExitAsync(Deadline);
        var took = Stopwatch.GetElapsedTime(signalled);
        var (viewerExit, _) = await viewer.WaitForExitAsync(Deadline);
        Assert.True(viewerExit == 0, $"viewer exited with {viewerExit}:\n{viewer.Stderr}");
        Assert.True(exit == 0, $"coordinator exited with {exit} {took.TotalSeconds:0.0} s after SIGTERM:\n{coordinator.Stderr}");
        Assert.True(took < TimeSpan.FromSeconds(10), $"the coordinator exited {took.TotalSeconds:0.0} s after SIGTERM:\n{coordinator.Stderr}");
        output.WriteLine($"the coordinator exited 0 {took.TotalSeconds:0.00} s after SIGTERM with a stalled HTTP viewer");
        // The stalled viewer was closed with the stream's end still queued for it: its line says so
        // (it said "done: the viewer went away"). Unless the hub skipped it ahead to a keyframe so
        // far that what was left fit the connection's buffers: then every write was taken before
        // the stop, and "the stream ended (N skip(s))" is what the node saw (ci218: 2 skips).
        string ended = coordinator.StderrLines.Single(l => l.Contains("http viewer", StringComparison.Ordinal) && l.Contains(" done: ", StringComparison.Ordinal));
        bool skippedIntoTheBuffers = SkippedEndRegex().IsMatch(ended);
        Assert.True(ended.Contains("done: closed as the node stopped, before it took the rest of the stream", StringComparison.Ordinal) || skippedIntoTheBuffers, ended);
        output.WriteLine(ended);
    }

    [Fact]
    public async Task The_coordinators_own_HTTP_viewer_gets_the_end_with_the_stream_not_when_the_wait_for_peers_ends()
    {
        // A frozen peer would hold the coordinator's wait for 15 s (its heartbeat timeout is 60 s);
        // it is thawed once the HTTP viewer's response has ended, so that the wait ends with it.
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.86.1.6:0", "--http", "127.86.1.6:0", "--format", "flv", "--min-peers", "1", "--latency-aware", "false", "--heartbeat-timeout", "60");
        string address = await coordinator.WaitForListenAddressAsync(Deadline);
        await UntilAsync(() => coordinator.StderrLines.Any(l => HttpRegex().IsMatch(l)), () => coordinator.Stderr);
        string http = HttpRegex().Match(coordinator.StderrLines.First(l => HttpRegex().IsMatch(l))).Groups[1].Value;
        await using var viewer = CliProcess.Start("peer", "-c", address, "-l", "127.86.1.6:0", "--rejoin-seconds", "5");
        var source = SyntheticFlv(2 << 20);
        await coordinator.StandardInput.WriteAsync(source.AsMemory(0, 1 << 20));
        await coordinator.StandardInput.FlushAsync();
        await UntilAsync(() => viewer.StdoutBytes > 0 || viewer.HasExited, () => viewer.Stderr);
        using var client = new HttpClient { Timeout = Deadline };
        long received = 0;
        long ended = 0;
        // Its headers go out with the first keyframe after it came: the rest of the source, below.
        var reading = Task.Run(async () =>
        {
            using var response = await client.GetAsync($"http://{http}/live.flv", HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
            await using var body = await response.Content.ReadAsStreamAsync();
            var buffer = new byte[64 * 1024];
            int n;
            while ((n = await body.ReadAsync(buffer)) > 0) Interlocked.Add(ref received, n);
            Interlocked.Exchange(ref ended, Stopwatch.GetTimestamp());
        });
        await UntilAsync(() => coordinator.StderrLines.Any(l => l.Contains("watches /live.flv", StringComparison.Ordinal)) || reading.IsCompleted, () => coordinator.Stderr);
        await coordinator.StandardInput.WriteAsync(source.AsMemory(1 << 20));
        await coordinator.StandardInput.FlushAsync();
        await UntilAsync(() => viewer.StdoutBytes == source.Length || viewer.HasExited, () => viewer.Stderr);
        await viewer.SignalAsync("STOP");
        long signalled = Stopwatch.GetTimestamp();
        await coordinator.SignalAsync("TERM");
        // The response must end before the frozen peer lets the wait end: were the HTTP viewer's
        // end tied to that wait, it would come with the drain bound, 15 s after the signal.
        await reading.WaitAsync(Deadline);
        var endedAfter = Stopwatch.GetElapsedTime(signalled, Interlocked.Read(ref ended));
        await viewer.SignalAsync("CONT");
        var (exit, _) = await coordinator.WaitForExitAsync(Deadline);
        var exited = Stopwatch.GetElapsedTime(signalled);
        Assert.True(exit == 0, $"coordinator exited with {exit}:\n{coordinator.Stderr}");
        // The stream ended at the signal: its HTTP viewer has everything then, and nothing more comes.
        Assert.True(endedAfter < TimeSpan.FromSeconds(5), $"the HTTP viewer's response ended {endedAfter.TotalSeconds:0.0} s after SIGTERM (the coordinator exited at {exited.TotalSeconds:0.0} s), {Interlocked.Read(ref received)} bytes:\n{coordinator.Stderr}");
        output.WriteLine($"the HTTP viewer's response ended {endedAfter.TotalSeconds:0.00} s after SIGTERM, the coordinator exited at {exited.TotalSeconds:0.00} s");
    }

    /// <summary>An FLV stream of about <paramref name="length"/> bytes: the preamble, then 64 KiB keyframes 33 ms apart.</summary>
    private static byte[] SyntheticFlv(int length)
    {
        var bytes = new MemoryStream();
        var preamble = new byte[ShardStream.Media.Flv.PreambleLength];
        ShardStream.Media.Flv.WritePreamble(preamble, ShardStream.Media.Flv.HasVideo);
        bytes.Write(preamble);
        var body = new byte[64 * 1024];
        new Random(17).NextBytes(body);
        body[0] = 0x17;
        body[1] = 0x01;
        for (uint ts = 0; bytes.Length < length; ts += 33) bytes.Write(ShardStream.Media.Flv.TagBytes(ShardStream.Media.FlvTagType.Video, ts, body));
        return bytes.ToArray();
    }

    [GeneratedRegex(@"done: the stream ended \([1-9][0-9]* skip\(s\)\)$")]
    private static partial Regex SkippedEndRegex();

    [GeneratedRegex(@"serving the live stream at http://(\S+?)/live\.flv")]
    private static partial Regex HttpRegex();

    private static Process StartFfmpeg(string[] args)
    {
        // stderr (-loglevel error) not redirected: nobody reads it while the publish runs.
        var info = new ProcessStartInfo("ffmpeg") { UseShellExecute = false, RedirectStandardInput = true, RedirectStandardError = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        return Process.Start(info) ?? throw new InvalidOperationException("could not start ffmpeg");
    }

    /// <summary>Writes <paramref name="source"/> paced until it is all written, the token stops it, or the reader is gone; stdin stays open.</summary>
    private static async Task WritePacedAsync(Stream stdin, byte[] source, int bytesPerSecond, CancellationToken stop)
    {
        const int Block = 64 * 1024;
        long t0 = Stopwatch.GetTimestamp();
        try
        {
            for (int offset = 0; offset < source.Length && !stop.IsCancellationRequested; offset += Block)
            {
                var wait = TimeSpan.FromSeconds((double)offset / bytesPerSecond) - Stopwatch.GetElapsedTime(t0);
                if (wait > TimeSpan.Zero) await Task.Delay(wait, stop);
                await stdin.WriteAsync(source.AsMemory(offset, Math.Min(Block, source.Length - offset)), stop);
                await stdin.FlushAsync(stop);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // Stopped, or the coordinator has exited.
        }
    }

    private static async Task UntilAsync(Func<bool> condition, Func<string> describe)
    {
        var deadline = DateTime.UtcNow + Deadline;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException(describe());
            await Task.Delay(20);
        }
    }

    private static long BytesIn(string stderr, Regex regex)
    {
        var m = regex.Match(stderr);
        Assert.True(m.Success, $"no line matching '{regex}':\n{stderr}");
        return long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    [GeneratedRegex(@"SIGTERM: ending the stream at (\d+) bytes")]
    private static partial Regex EndingRegex();

    [GeneratedRegex(@"the stream: (\d+) bytes in")]
    private static partial Regex TotalsRegex();
}

using System.Diagnostics;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The real ffmpeg as a live source (a test pattern and a tone, H.264 and AAC, one keyframe a
/// second, paced at real time) and as the viewer that checks what a peer wrote decodes.
/// </summary>
internal static class MediaTools
{
    /// <summary>Null when ffmpeg and ffprobe are on PATH, else the reason.</summary>
    public static string? Missing() =>
        RequiresTool.FindOnPath("ffmpeg") is null || RequiresTool.FindOnPath("ffprobe") is null ? "needs ffmpeg and ffprobe on PATH" : null;

    /// <summary>The arguments of a live test source of <paramref name="seconds"/> s in <paramref name="muxer"/> (flv or mpegts) on stdout.</summary>
    /// <summary>About five seconds of <see cref="LiveSourceArgs"/>'s stream (measured: 164 KB/s as FLV, 174 KB/s as MPEG-TS).</summary>
    public const long FiveSecondsOfStream = 800_000;

    /// <summary>
    /// Waits until <paramref name="viewer"/> has written <paramref name="bytes"/> of the stream: "some
    /// seconds into the stream" as a condition on the stream itself, not on the wall clock (a busy
    /// machine starts the encoder late, and a fixed sleep then lands at the stream's start).
    /// </summary>
    public static async Task WaitForStreamBytesAsync(CliProcess viewer, long bytes, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (viewer.StdoutBytes < bytes)
        {
            if (DateTime.UtcNow > deadline || viewer.HasExited)
                throw new TimeoutException($"the viewer wrote {viewer.StdoutBytes} of the {bytes} bytes waited for:\n{viewer.Stderr}");
            await Task.Delay(50);
        }
    }

    /// <summary>
    /// A length for <see cref="LiveSourceArgs"/> that no test waits out: the test ends the source
    /// itself (<see cref="EndSourceAsync"/>) once it has what it checks, however long a loaded
    /// machine took to get there.
    /// </summary>
    public const int UntilEnded = 300;

    /// <summary>
    /// Ends a live source cleanly: SIGTERM, on which ffmpeg finishes the packet it writes and its
    /// trailer and exits (the stream it wrote decodes to its end); waits up to 30 s, then kills it.
    /// </summary>
    public static async Task EndSourceAsync(Process ffmpeg)
    {
        if (ffmpeg.HasExited) return;
        using (var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { "-TERM", ffmpeg.Id.ToString(System.Globalization.CultureInfo.InvariantCulture) }, UseShellExecute = false })
                          ?? throw new InvalidOperationException("could not start kill"))
            await kill.WaitForExitAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await ffmpeg.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            ffmpeg.Kill();
            throw new TimeoutException("ffmpeg did not exit within 30 s of SIGTERM");
        }
    }

    public static string[] LiveSourceArgs(string muxer, int seconds) =>
    [
        "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
        "-t", seconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-f", muxer, "-",
    ];

    /// <summary>Starts ffmpeg with <paramref name="args"/> and copies its stdout into <paramref name="into"/>, closing it at the end.</summary>
    public static (Process Ffmpeg, Task Pump) Pipe(string[] args, Stream into)
    {
        var info = new ProcessStartInfo("ffmpeg") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        var ffmpeg = Process.Start(info) ?? throw new InvalidOperationException("could not start ffmpeg");
        ffmpeg.StandardInput.Close();
        _ = ffmpeg.StandardError.ReadToEndAsync();
        var pump = Task.Run(async () =>
        {
            try
            {
                await ffmpeg.StandardOutput.BaseStream.CopyToAsync(into);
            }
            finally
            {
                into.Close();
            }
        });
        return (ffmpeg, pump);
    }

    /// <summary>
    /// Decodes a whole file as a player would, stopping at the first error (<c>-xerror</c>):
    /// returns what ffmpeg reported (empty when it decoded cleanly) and its exit code.
    /// </summary>
    public static (int ExitCode, string Errors) Decode(string file) =>
        Summarise(RequiresTool.Run("ffmpeg", ["-hide_banner", "-v", "error", "-xerror", "-i", file, "-f", "null", "-"], TimeSpan.FromMinutes(2)));

    /// <summary>The number of video frames ffprobe decodes in <paramref name="file"/>.</summary>
    public static int CountVideoFrames(string file)
    {
        var run = RequiresTool.Run("ffprobe", ["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", file], TimeSpan.FromMinutes(2));
        return int.TryParse(run.Stdout.Trim().Split('\n')[0].Trim(','), out int n) ? n : -1;
    }

    private static (int, string) Summarise((int ExitCode, string Stdout, string Stderr, bool TimedOut) run) =>
        (run.TimedOut ? -1 : run.ExitCode, run.Stderr.Trim());
}

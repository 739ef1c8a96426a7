using System.Diagnostics;
using System.Text.RegularExpressions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// Helpers for the RTMP tests of the real CLI: a node whose stdout goes to a file (to decode it
/// with ffmpeg afterwards), an ffmpeg publisher, and ffmpeg/ffprobe checks of an FLV file.
/// </summary>
internal sealed partial class FileOutProcess : IAsyncDisposable
{
    private readonly Process _process;

    private FileOutProcess(Process process, string stdoutPath, string stderrPath)
    {
        _process = process;
        StdoutPath = stdoutPath;
        StderrPath = stderrPath;
    }

    public string StdoutPath { get; }

    public string StderrPath { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>The CLI with stdout and stderr redirected to files in <paramref name="dir"/> named after <paramref name="name"/>.</summary>
    public static FileOutProcess Start(string dir, string name, params string[] args) => StartIn(null, CliProcess.CliDll, dir, name, args);

    /// <summary>
    /// The CLI at <paramref name="cliDll"/> with stdout and stderr redirected to files, inside the
    /// network namespace <paramref name="netns"/> (<c>ip netns exec</c>, which execs, as bash does:
    /// the process is the CLI itself), or here when null. The files are written by the CLI itself,
    /// so a test host that is held up never holds back its output or its logs.
    /// </summary>
    public static FileOutProcess StartIn(string? netns, string cliDll, string dir, string name, params string[] args)
    {
        string stdout = Path.Combine(dir, name + ".out"), stderr = Path.Combine(dir, name + ".err");
        var info = new ProcessStartInfo(netns is null ? "bash" : "ip") { UseShellExecute = false, RedirectStandardInput = true };
        foreach (var a in netns is null ? [] : new[] { "netns", "exec", netns, "bash" }) info.ArgumentList.Add(a);
        foreach (var a in new[] { "-c", "exec dotnet \"$0\" \"$@\" > \"$OUT\" 2> \"$ERR\"", cliDll }) info.ArgumentList.Add(a);
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["OUT"] = stdout;
        info.Environment["ERR"] = stderr;
        return new FileOutProcess(Process.Start(info) ?? throw new InvalidOperationException("could not start bash"), stdout, stderr);
    }

    public string Stderr => File.Exists(StderrPath) ? ReadShared(StderrPath) : "";

    /// <summary>The stderr lines written so far.</summary>
    public string[] StderrLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>The process's stdin (the bytes of a coordinator's stream).</summary>
    public Stream StandardInput => _process.StandardInput.BaseStream;

    /// <summary>Waits for exit, up to <paramref name="timeout"/>; returns the exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"process {_process.Id} did not exit within {timeout}; stderr:\n{Stderr}");
        }
        return _process.ExitCode;
    }

    public long StdoutLength => File.Exists(StdoutPath) ? new FileInfo(StdoutPath).Length : 0;

    private static string ReadShared(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return new StreamReader(f).ReadToEnd();
    }

    /// <summary>Waits until a stderr line matches; returns the first group (or the line).</summary>
    public async Task<string> WaitForLogAsync(string pattern, TimeSpan timeout)
    {
        var regex = new Regex(pattern);
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            foreach (var line in Stderr.Split('\n'))
            {
                var m = regex.Match(line);
                if (m.Success) return m.Groups.Count > 1 ? m.Groups[1].Value : line;
            }
            if (_process.HasExited) break;
            await Task.Delay(50);
        }
        throw new TimeoutException($"no log line matching '{pattern}' within {timeout}; stderr:\n{Stderr}");
    }

    /// <summary>Sends a signal by name with the system's <c>kill</c> (e.g. "STOP", "CONT").</summary>
    public Task SignalAsync(string signal) => Signals.SendAsync(_process.Id, signal);

    /// <summary>SIGTERM, then a wait for exit.</summary>
    public async Task StopAsync()
    {
        if (_process.HasExited) return;
        using var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        await kill.WaitForExitAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            try { _process.Kill(entireProcessTree: true); }
            catch (InvalidOperationException) { }
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}

internal static class Ffmpeg
{
    public static string? Missing() =>
        RequiresTool.FindOnPath("ffmpeg") is null || RequiresTool.FindOnPath("ffprobe") is null ? "needs ffmpeg and ffprobe on PATH" : null;

    /// <summary>The issue's synthetic live source: test pattern and a sine, H.264 + AAC, keyframe every 2 s, paced.</summary>
    public static string[] PublishArgs(string url, double seconds, int gop = 60, string size = "640x360") =>
    [
        "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", $"testsrc2=size={size}:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", gop.ToString(System.Globalization.CultureInfo.InvariantCulture), "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-t", seconds.ToString(System.Globalization.CultureInfo.InvariantCulture), "-f", "flv", url,
    ];

    /// <summary>ffmpeg's decode of a whole file with -xerror: exit code and what it printed.</summary>
    public static (int ExitCode, string Errors) Decode(string path) =>
        Result(RequiresTool.Run("ffmpeg", ["-hide_banner", "-v", "error", "-xerror", "-i", path, "-f", "null", "-"], TimeSpan.FromMinutes(2)));

    /// <summary>Frames ffprobe counts in the first video and audio streams.</summary>
    public static (int Video, int Audio) CountFrames(string path)
    {
        var r = RequiresTool.Run("ffprobe", ["-v", "error", "-count_frames", "-show_entries", "stream=codec_type,nb_read_frames", "-of", "csv=p=0", path], TimeSpan.FromMinutes(2));
        int video = 0, audio = 0;
        foreach (var line in r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Trim().Split(',');
            if (parts.Length < 2 || !int.TryParse(parts[1], out int n)) continue;
            if (parts[0] == "video") video = n;
            if (parts[0] == "audio") audio = n;
        }
        return (video, audio);
    }

    /// <summary>
    /// Packets ffprobe counts in the first video and audio streams (for H.264 in FLV, one packet a
    /// frame); for files where the stream's parameters change midway, where ffprobe 5.1's
    /// -count_frames crashes.
    /// </summary>
    public static (int Video, int Audio) CountPackets(string path)
    {
        var r = RequiresTool.Run("ffprobe", ["-v", "error", "-count_packets", "-show_entries", "stream=codec_type,nb_read_packets", "-of", "csv=p=0", path], TimeSpan.FromMinutes(2));
        Assert.True(r.ExitCode == 0, $"ffprobe exited with {r.ExitCode}: {r.Stderr}");
        return Packets(r.Stdout);
    }

    /// <summary>The video packets of an output still being written; 0 while ffprobe cannot read it yet (empty, or its header not whole).</summary>
    public static int VideoPacketsSoFar(string path)
    {
        if (!File.Exists(path)) return 0;
        var r = RequiresTool.Run("ffprobe", ["-v", "error", "-count_packets", "-show_entries", "stream=codec_type,nb_read_packets", "-of", "csv=p=0", path], TimeSpan.FromMinutes(2));
        return r.ExitCode == 0 ? Packets(r.Stdout).Video : 0;
    }

    private static (int Video, int Audio) Packets(string stdout)
    {
        int video = 0, audio = 0;
        foreach (var line in stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Trim().Split(',');
            if (parts.Length < 2 || !int.TryParse(parts[1], out int n)) continue;
            if (parts[0] == "video") video = n;
            if (parts[0] == "audio") audio = n;
        }
        return (video, audio);
    }

    /// <summary>The picture size of every decoded video frame, in order ("640x360"), from ffmpeg's showinfo filter.</summary>
    public static List<string> FrameSizes(string path)
    {
        var r = RequiresTool.Run("ffmpeg", ["-hide_banner", "-v", "info", "-i", path, "-map", "0:v:0", "-vf", "showinfo", "-f", "null", "-"], TimeSpan.FromMinutes(2));
        return System.Text.RegularExpressions.Regex.Matches(r.Stderr, @"Parsed_showinfo.* s:(\d+x\d+)").Select(m => m.Groups[1].Value).ToList();
    }

    private static (int, string) Result((int ExitCode, string Stdout, string Stderr, bool TimedOut) r) => (r.ExitCode, r.Stderr.Trim());
}

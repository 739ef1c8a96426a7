using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The viewer's status line (README, "Watching the overlay"): when stderr is a terminal, <c>peer</c>
/// redraws one line in place (received rate, bytes out, how far behind, parents, children, window)
/// instead of scrolling logs; with <c>-v</c> it logs as when stderr is not a terminal. The peer runs
/// under <c>script</c> (util-linux), which gives it a pseudo-terminal as stderr, while its stdout
/// (the stream) goes to a file; the test reads the terminal's transcript as a user would see it.
/// </summary>
[Collection(CliCollection.Name)]
public sealed partial class CliStatusLineTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(2);

    [Fact]
    public async Task A_viewer_on_a_terminal_sees_one_live_status_line_instead_of_logs()
    {
        if (RequiresTool.Missing(output, ScriptMissing())) return;
        var (exit, transcript, written, source) = await WatchOnATerminalAsync(verbose: false);

        Assert.True(exit == 0, $"the peer exited with {exit}; terminal:\n{Printable(transcript)}");
        Assert.Equal(Sha(source), Sha(written));
        // Redrawn in place: each redraw returns to the line's start and clears it.
        var lines = StatusRegex().Matches(transcript).Select(m => m.Value).ToList();
        Assert.True(lines.Count >= 3, $"fewer than 3 redraws of the status line; terminal:\n{Printable(transcript)}");
        Assert.Contains(lines, l => l.Contains("parents 0:src", StringComparison.Ordinal) && l.Contains("children 0", StringComparison.Ordinal));
        // While the stream flows (1 MiB/s), the line shows a rate above zero.
        Assert.Contains(lines, l => double.Parse(RateRegex().Match(l).Groups[1].Value, CultureInfo.InvariantCulture) > 0);
        // The last redraw says the stream is complete, with everything written.
        Assert.Contains("complete", lines[^1], StringComparison.Ordinal);
        Assert.Contains("4.0 MiB out", lines[^1], StringComparison.Ordinal);
        // No log line of information level: the status line replaces them.
        Assert.DoesNotContain(" info: ", transcript, StringComparison.Ordinal);
    }

    [Fact]
    public async Task With_v_a_viewer_on_a_terminal_logs_instead()
    {
        if (RequiresTool.Missing(output, ScriptMissing())) return;
        var (exit, transcript, written, source) = await WatchOnATerminalAsync(verbose: true);

        Assert.True(exit == 0, $"the peer exited with {exit}; terminal:\n{Printable(transcript)}");
        Assert.Equal(Sha(source), Sha(written));
        Assert.Contains(" info: ", transcript, StringComparison.Ordinal);
        Assert.Matches(@"joined as peer \d+", transcript);
        Assert.Contains("stream complete", transcript, StringComparison.Ordinal);
        Assert.Empty(StatusRegex().Matches(transcript));
    }

    /// <summary>
    /// A coordinator streams 4 MiB at 1 MiB/s to one peer whose stderr is a pseudo-terminal.
    /// Returns the peer's exit code, what its terminal showed, what it wrote on stdout, and the source.
    /// </summary>
    private static async Task<(int Exit, string Transcript, byte[] Written, byte[] Source)> WatchOnATerminalAsync(bool verbose)
    {
        var source = new byte[4 << 20];
        new Random(verbose ? 12 : 11).NextBytes(source);
        string dir = Directory.CreateTempSubdirectory("shardstream-status-").FullName;
        string output = Path.Combine(dir, "out.bin");
        try
        {
            await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "--min-peers", "1");
            string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(60));

            string command = $"exec dotnet '{CliProcess.CliDll}' peer -c {address} --upload 0{(verbose ? " -v" : "")} > '{output}'";
            var info = new ProcessStartInfo("script")
            {
                ArgumentList = { "-qfec", command, "/dev/null" },
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            info.Environment["TERM"] = "xterm";
            using var peer = Process.Start(info) ?? throw new InvalidOperationException("could not start script");
            var transcript = peer.StandardOutput.ReadToEndAsync();
            var errors = peer.StandardError.ReadToEndAsync();

            // The coordinator starts the stream once the peer has joined (--min-peers 1).
            await WaitUntilAsync(() => coordinator.StderrLines.Any(l => l.Contains("joined at offset", StringComparison.Ordinal)) || peer.HasExited,
                () => $"the peer never joined; coordinator:\n{coordinator.Stderr}");
            long t0 = Stopwatch.GetTimestamp();
            const int block = 64 * 1024;
            for (int offset = 0; offset < source.Length; offset += block)
            {
                var wait = TimeSpan.FromSeconds(offset / (double)(1 << 20)) - Stopwatch.GetElapsedTime(t0);
                if (wait > TimeSpan.Zero) await Task.Delay(wait);
                await coordinator.StandardInput.WriteAsync(source.AsMemory(offset, block));
                await coordinator.StandardInput.FlushAsync();
            }
            coordinator.StandardInput.Close();

            using var cts = new CancellationTokenSource(Deadline);
            try
            {
                await peer.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                peer.Kill(entireProcessTree: true);
                throw new TimeoutException($"the peer did not exit within {Deadline}; terminal:\n{Printable(await transcript)}");
            }
            string shown = await transcript;
            Assert.True((await errors).Length == 0, $"script wrote on stderr: {await errors}");
            var (coordinatorExit, _) = await coordinator.WaitForExitAsync(Deadline);
            Assert.True(coordinatorExit == 0, $"coordinator exited with {coordinatorExit}:\n{coordinator.Stderr}");
            return (peer.ExitCode, shown, await File.ReadAllBytesAsync(output), source);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static string? ScriptMissing() =>
        RequiresTool.FindOnPath("script") is null ? "script (util-linux, Debian's bsdutils) is not installed" : null;

    private static Task WaitUntilAsync(Func<bool> condition, Func<string> describe) => Poll.UntilAsync(condition, Deadline, describe);

    private static string Sha(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    private static string Printable(string s) => s.Replace("\x1b", "^[", StringComparison.Ordinal).Replace("\r", "^M", StringComparison.Ordinal);

    /// <summary>One redraw: carriage return, erase the line, then the status text up to the next control character.</summary>
    [GeneratedRegex("(?<=\r\x1b\\[2K)peer \\d+ │[^\r\n\x1b]*")]
    private static partial Regex StatusRegex();

    [GeneratedRegex(@"│ (\d+\.\d+) Mbit/s")]
    private static partial Regex RateRegex();
}

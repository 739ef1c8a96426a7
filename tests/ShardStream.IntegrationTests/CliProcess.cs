using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// One run of the real <c>shardstream</c> tool in its own process. stdout (the stream) is hashed
/// as it arrives, and every read is recorded with its <see cref="Stopwatch"/> timestamp (for stall
/// measurements); stderr (the logs) is kept line by line, each line with its arrival timestamp.
/// </summary>
internal sealed partial class CliProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _stderr = new();
    private readonly ConcurrentQueue<(long Timestamp, string Line)> _stderrTimed = new();
    private readonly List<(long Timestamp, long TotalBytes)> _arrivals = [];
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly Task _stdoutPump;
    private readonly Task _stderrPump;
    private long _stdoutBytes;

    private readonly FileStream? _capture;

    private CliProcess(Process process, string? captureStdout = null)
    {
        _process = process;
        _capture = captureStdout is null ? null : File.Create(captureStdout);
        _stdoutPump = Task.Run(PumpStdoutAsync);
        _stderrPump = Task.Run(PumpStderrAsync);
    }

    /// <summary>The path of the CLI's dll, copied next to the tests by the project reference.</summary>
    public static string CliDll => Path.Combine(AppContext.BaseDirectory, "shardstream.dll");

    public static CliProcess Start(params string[] args) => StartIn(null, CliDll, args);

    /// <summary>
    /// Runs the CLI at <paramref name="cliDll"/> inside the network namespace <paramref name="netns"/>
    /// (<c>ip netns exec</c>, which execs, so the process is the CLI itself), or here when null.
    /// </summary>
    public static CliProcess StartIn(string? netns, string cliDll, params string[] args) => StartIn(netns, cliDll, null, args);

    /// <summary>Runs the CLI here under <c>prlimit --nofile=SOFT:HARD</c> (which execs, so the process is the CLI itself).</summary>
    public static CliProcess StartWithDescriptorLimit(int soft, int hard, params string[] args) =>
        StartIn(null, CliDll, null, args, ["prlimit", $"--nofile={soft}:{hard}", "dotnet"]);

    /// <summary>Runs the CLI inside the network namespace <paramref name="netns"/> under <c>prlimit --nofile=SOFT:HARD</c>.</summary>
    public static CliProcess StartInWithDescriptorLimit(string netns, int soft, int hard, params string[] args) =>
        StartIn(netns, CliDll, null, args, ["ip", "netns", "exec", netns, "prlimit", $"--nofile={soft}:{hard}", "dotnet"]);

    /// <summary>
    /// Runs the CLI here with SIGINT's disposition set back to the default first (coreutils'
    /// <c>env --default-signal</c>, which execs, so the process is the CLI itself), as in a terminal
    /// where the user presses Ctrl-C.
    /// A test run started in the background by a non-interactive shell (as a CI script may start
    /// it) inherits SIGINT ignored, its children too, and the .NET runtime leaves an ignored SIGINT
    /// ignored: without this a Ctrl-C test could not tell a CLI that ignores Ctrl-C from such a run.
    /// </summary>
    public static CliProcess StartWithCtrlC(params string[] args) =>
        StartIn(null, CliDll, null, args, ["env", "--default-signal=INT", "dotnet"]);

    /// <summary>Runs the CLI here and also writes everything it prints on stdout to the file <paramref name="stdoutFile"/>.</summary>
    public static CliProcess StartCapturing(string stdoutFile, params string[] args) => StartIn(null, CliDll, stdoutFile, args);

    private static CliProcess StartIn(string? netns, string cliDll, string? captureStdout, string[] args, string[]? command = null)
    {
        command ??= netns is null ? ["dotnet"] : ["ip", "netns", "exec", netns, "dotnet"];
        var info = new ProcessStartInfo(command[0])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in command.Skip(1)) info.ArgumentList.Add(a);
        info.ArgumentList.Add(cliDll);
        foreach (var a in args) info.ArgumentList.Add(a);
        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start dotnet");
        return new CliProcess(process, captureStdout);
    }

    public int Pid => _process.Id;

    /// <summary>
    /// The process's stdin. A write that the process does not take within
    /// <see cref="StdinWriteDeadline"/> fails with its stderr instead of hanging the test run: a
    /// coordinator that waits for peers that will never come (they were refused) reads nothing.
    /// </summary>
    public Stream StandardInput => _stdin ??= new DeadlineStdin(this);

    private DeadlineStdin? _stdin;

    /// <summary>Longer than any test's own deadline: only a write that would block for ever reaches it.</summary>
    public static readonly TimeSpan StdinWriteDeadline = TimeSpan.FromMinutes(5);

    public long StdoutBytes => Interlocked.Read(ref _stdoutBytes);

    public IReadOnlyCollection<string> StderrLines => _stderr.ToArray();

    public string Stderr => string.Join('\n', _stderr);

    public bool HasExited => _process.HasExited;

    /// <summary>
    /// Every stdout read so far: the <see cref="Stopwatch.GetTimestamp"/> when it returned and the
    /// total bytes received up to and including it. In arrival order.
    /// </summary>
    public (long Timestamp, long TotalBytes)[] Arrivals()
    {
        lock (_arrivals) return [.. _arrivals];
    }

    /// <summary>The stderr lines so far, each with the <see cref="Stopwatch.GetTimestamp"/> when it arrived.</summary>
    public IReadOnlyCollection<(long Timestamp, string Line)> TimedStderrLines => _stderrTimed.ToArray();

    /// <summary>SIGKILL (kill -9): the process dies at once; the kernel resets its connections.</summary>
    public void Kill() => _process.Kill(entireProcessTree: false);

    /// <summary>Sends a signal by name with the system's <c>kill</c> (e.g. "STOP", "CONT").</summary>
    public Task SignalAsync(string signal) => Signals.SendAsync(Pid, signal);

    private async Task PumpStdoutAsync()
    {
        var buffer = new byte[256 * 1024];
        var stream = _process.StandardOutput.BaseStream;
        int n;
        while ((n = await stream.ReadAsync(buffer)) > 0)
        {
            long now = Stopwatch.GetTimestamp();
            _hash.AppendData(buffer, 0, n);
            if (_capture is not null) await _capture.WriteAsync(buffer.AsMemory(0, n));
            long total = Interlocked.Add(ref _stdoutBytes, n);
            lock (_arrivals) _arrivals.Add((now, total));
        }
    }

    private async Task PumpStderrAsync()
    {
        string? line;
        while ((line = await _process.StandardError.ReadLineAsync()) is not null)
        {
            _stderrTimed.Enqueue((Stopwatch.GetTimestamp(), line));
            _stderr.Enqueue(line);
        }
    }

    /// <summary>Waits for the "listening on ADDRESS" log line and returns the address.</summary>
    public async Task<string> WaitForListenAddressAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            foreach (var line in _stderr)
            {
                var m = ListeningRegex().Match(line);
                if (m.Success) return m.Groups[1].Value;
            }
            if (_process.HasExited) break;
            await Task.Delay(20);
        }
        throw new TimeoutException($"no 'listening on' line within {timeout}; stderr:\n{Stderr}");
    }

    /// <summary>Polls until <paramref name="condition"/> holds; throws with the last lines of stderr when <paramref name="timeout"/> passes or the process exits first.</summary>
    public async Task WaitUntilAsync(Func<bool> condition, string what, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline || HasExited)
                throw new TimeoutException($"timed out waiting until {what}{(HasExited ? " (the process exited)" : "")}; its last lines:\n{string.Join('\n', StderrLines.TakeLast(8))}");
            await Task.Delay(20);
        }
    }

    /// <summary>Waits for the "rtmp: listening on ADDRESS" log line and returns the address.</summary>
    public async Task<System.Net.IPEndPoint> WaitForRtmpAddressAsync(TimeSpan timeout)
    {
        string? line = null;
        await WaitUntilAsync(() => (line = StderrLines.FirstOrDefault(l => RtmpListeningRegex().IsMatch(l))) is not null, "the RTMP port listens", timeout);
        return System.Net.IPEndPoint.Parse(RtmpListeningRegex().Match(line!).Groups[1].Value);
    }

    /// <summary>Waits for exit; returns the exit code and the sha256 of everything written to stdout.</summary>
    public async Task<(int ExitCode, string Sha256)> WaitForExitAsync(TimeSpan timeout)
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
        await Task.WhenAll(_stdoutPump, _stderrPump);
        if (_capture is not null) await _capture.DisposeAsync();
        return (_process.ExitCode, Convert.ToHexStringLower(_hash.GetHashAndReset()));
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            try
            {
                _process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // Exited meanwhile.
            }
            await _process.WaitForExitAsync();
        }
        await KeepLogAsync();
        _process.Dispose();
        _hash.Dispose();
        if (_capture is not null) await _capture.DisposeAsync();
    }

    /// <summary>
    /// With <c>SHARDSTREAM_TEST_KEEP_LOGS=DIR</c>, the node's stderr (its log lines, each with its
    /// own timestamp) is written to DIR/PID-COMMAND.log when the process is disposed: the logs of a
    /// rare failure are there to read after the run.
    /// </summary>
    private async Task KeepLogAsync()
    {
        if (Environment.GetEnvironmentVariable("SHARDSTREAM_TEST_KEEP_LOGS") is not { Length: > 0 } dir) return;
        await Task.WhenAny(_stderrPump, Task.Delay(TimeSpan.FromSeconds(5)));
        Directory.CreateDirectory(dir);
        string command = _process.StartInfo.ArgumentList.SkipWhile(a => !a.EndsWith(".dll", StringComparison.Ordinal)).Skip(1).FirstOrDefault() ?? "node";
        await File.WriteAllTextAsync(Path.Combine(dir, $"{_process.Id}-{command}.log"), Stderr + "\n");
    }

    [GeneratedRegex(@"listening on (\S+?),")]
    private static partial Regex ListeningRegex();

    [GeneratedRegex(@"rtmp: listening on (\S+) ")]
    private static partial Regex RtmpListeningRegex();

    /// <summary>stdin with a deadline on every write (see <see cref="StandardInput"/>).</summary>
    private sealed class DeadlineStdin(CliProcess owner) : Stream
    {
        private Stream Inner => owner._process.StandardInput.BaseStream;

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush() => Inner.Flush();
        public override Task FlushAsync(CancellationToken cancellationToken) => Within(Inner.FlushAsync(cancellationToken), 0);
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            new(Within(Inner.WriteAsync(buffer, cancellationToken).AsTask(), buffer.Length));

        private async Task Within(Task write, int bytes)
        {
            try
            {
                await write.WaitAsync(StdinWriteDeadline);
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"process {owner.Pid} took no stdin ({bytes} bytes) for {StdinWriteDeadline.TotalMinutes:0} min; its stderr:\n{owner.Stderr}");
            }
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) Inner.Dispose();
            base.Dispose(disposing);
        }
    }
}

using System.Diagnostics;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// For tests that need a tool or a privilege a developer's machine may lack (root, iproute2,
/// ffmpeg). xunit 2 has no dynamic skip, so such a test asks <see cref="Missing"/> first and
/// returns early when it says so, after the reason has been written to the test output. With
/// <c>SHARDSTREAM_REQUIRE_TOOLS=1</c> (set by <c>.ci/run</c>) a missing tool fails the test
/// instead: in CI nothing may be skipped silently.
/// </summary>
internal static class RequiresTool
{
    public const string RequireVariable = "SHARDSTREAM_REQUIRE_TOOLS";

    public static bool Required => Environment.GetEnvironmentVariable(RequireVariable) == "1";

    /// <summary>
    /// Returns false when <paramref name="reason"/> is null (nothing is missing: go on). Otherwise
    /// fails the test when tools are required, or writes "SKIPPED: reason" and returns true.
    /// </summary>
    public static bool Missing(ITestOutputHelper output, string? reason)
    {
        if (reason is null) return false;
        if (Required) Assert.Fail($"{reason} ({RequireVariable}=1, so this is a failure, not a skip)");
        output.WriteLine($"SKIPPED: {reason} (set {RequireVariable}=1 to make this a failure)");
        return true;
    }

    /// <summary>The full path of an executable found on PATH, or null.</summary>
    public static string? FindOnPath(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>Null when running as root (uid 0), else the reason.</summary>
    public static string? NotRoot()
    {
        if (!OperatingSystem.IsLinux()) return "needs Linux";
        var id = Run("id", ["-u"], TimeSpan.FromSeconds(10));
        return id.ExitCode == 0 && id.Stdout.Trim() == "0" ? null : "needs root (network namespaces and tc)";
    }

    /// <summary>Runs a command to completion; kills it (and its children) at the timeout.</summary>
    public static (int ExitCode, string Stdout, string Stderr, bool TimedOut) Run(string file, IEnumerable<string> args, TimeSpan timeout)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {file}");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        bool timedOut = !process.WaitForExit(timeout);
        if (timedOut)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // Exited meanwhile.
            }
            process.WaitForExit();
        }
        return (timedOut ? -1 : process.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult(), timedOut);
    }
}

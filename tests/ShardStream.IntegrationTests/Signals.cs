using System.Diagnostics;

namespace ShardStream.IntegrationTests;

/// <summary>Signals to a process of a test, by name, with the system's <c>kill</c>.</summary>
internal static class Signals
{
    /// <summary>Sends <paramref name="signal"/> (e.g. "STOP", "CONT", "TERM") to <paramref name="pid"/>; throws when kill fails.</summary>
    public static async Task SendAsync(int pid, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { $"-{signal}", pid.ToString(System.Globalization.CultureInfo.InvariantCulture) }, UseShellExecute = false })
                         ?? throw new InvalidOperationException("could not start kill");
        await kill.WaitForExitAsync();
        if (kill.ExitCode != 0) throw new InvalidOperationException($"kill -{signal} {pid} exited with {kill.ExitCode}");
    }
}

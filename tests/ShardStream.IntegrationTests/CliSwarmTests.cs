namespace ShardStream.IntegrationTests;

/// <summary>
/// <c>shardstream swarm</c> against the real coordinator, two processes as in
/// docs/performance.md: every swarm peer the coordinator placed is one the swarm joined, and
/// every one leaves. No timing is asserted.
/// </summary>
[Collection(CliCollection.Name)]
public sealed class CliSwarmTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task The_coordinator_places_every_swarm_peer_and_takes_every_leave()
    {
        // stdin stays open and empty: a live stream that has not said anything yet.
        // A long heartbeat timeout: the dial-back may take half of it, which a loaded machine can need.
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "-s", "2", "--heartbeat-timeout", "60");
        string address = await coordinator.WaitForListenAddressAsync(Deadline);
        await using var swarm = CliProcess.Start("swarm", "-c", address, "--peers", "300", "--join-rate", "300", "--hold", "1",
            "--first-address", "127.78.0.1", "--addresses", "5", "--heartbeat-timeout", "60", "--coordinator-pid", coordinator.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var (exit, _) = await swarm.WaitForExitAsync(Deadline);

        Assert.True(exit == 0, $"swarm exited with {exit}:\n{swarm.Stderr}");
        // The coordinator takes each leave before it closes that peer's link, and the swarm waits
        // for those closes: by now the coordinator has logged every join and every leave.
        var lines = coordinator.StderrLines;
        Assert.Equal(300, lines.Count(l => l.Contains(") joined at offset", StringComparison.Ordinal)));
        Assert.Equal(300, lines.Count(l => l.Contains(" is leaving (leaving on purpose)", StringComparison.Ordinal)));
        // Every one answered the dial-back: none was placed as a leaf, none refused.
        Assert.DoesNotContain(lines, l => l.Contains("does not accept connections", StringComparison.Ordinal) || l.Contains("refused", StringComparison.Ordinal));
        // The swarm read the coordinator's own figures from /proc.
        Assert.Contains(swarm.StderrLines, l => l.Contains("| coordinator cpu", StringComparison.Ordinal));
    }
}

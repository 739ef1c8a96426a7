using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using ShardStream.Nodes;
using ShardStream.Tests.Adversary;
using ShardStream.Transport;

namespace ShardStream.IntegrationTests;

/// <summary>
/// A lying relay (a real peer in this process whose frames to its children are rewritten) joins
/// a real CLI coordinator first, so that real CLI viewers are placed below it; the viewers are
/// given the stream address. Whatever the liar sends, every viewer exits 0 with exactly the
/// source's bytes: none forged, none lost, no early "stream complete".
/// </summary>
[Collection(CliCollection.Name)]
public partial class CliLyingRelayTests
{
    private const int Viewers = 6;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(120);

    [Theory]
    [InlineData("flip")]
    [InlineData("end")]
    public async Task Real_viewers_below_a_lying_relay_write_exactly_the_source(string lie)
    {
        var source = new byte[4 << 20];
        new Random(10).NextBytes(source);
        string expected = Convert.ToHexStringLower(SHA256.HashData(source));
        string keyFile = Path.Combine(Path.GetTempPath(), $"shardstream-trust-{Guid.NewGuid():N}.pem");
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "-s", "1", "--key", keyFile,
            "--min-peers", (Viewers + 1).ToString(CultureInfo.InvariantCulture), "--heartbeat-timeout", "10",
            // Places in join order: the liar, first, must get children (latency-aware placement may
            // exchange places on loopback, see docs/topology.md).
            "--latency-aware", "false");
        try
        {
            string address = await coordinator.WaitForListenAddressAsync(Deadline);
            string stream = await WaitForStreamAddressAsync(coordinator);

            var liar = new TamperingTransport(TcpTransport.Instance, lie == "flip" ? Attacks.FlipBytes : Attacks.EarlyEnd(1));
            await using var relay = new Peer(new PeerOptions
            {
                JoinAddress = address,
                ListenAddress = "127.0.0.1:0",
                HeartbeatTimeout = TimeSpan.FromSeconds(10),
                HeartbeatInterval = TimeSpan.FromSeconds(2),
            }, liar);
            await relay.StartAsync(CancellationToken.None);
            var relayRun = Task.Run(() => relay.RunAsync(Stream.Null, CancellationToken.None));
            // It joined honestly; from now on it lies to every child it gets.
            liar.Active = true;

            var viewers = new List<CliProcess>();
            try
            {
                for (int i = 0; i < Viewers; i++)
                {
                    var viewer = CliProcess.Start("peer", "-c", address, "-l", "127.0.0.1:0", "--stream", stream, "--heartbeat-timeout", "10");
                    viewers.Add(viewer);
                    // One at a time, so that the places they get (and the one under the liar) do not race.
                    await WaitUntilAsync(() => viewer.StderrLines.Any(l => l.Contains("joined as peer")) || viewer.HasExited, "the viewer joined");
                }
                await WaitUntilAsync(() => viewers.All(v => v.StderrLines.Any(l => l.Contains("joined as peer"))), "every viewer joined");
                string under = $"from peer {relay.Id} ";
                Assert.True(viewers.Any(v => v.StderrLines.Any(l => l.Contains("joined as peer") && l.Contains(under))),
                    $"no viewer was placed under the liar (peer {relay.Id}); the test proves nothing:\n{string.Join('\n', viewers.SelectMany(v => v.StderrLines.Where(l => l.Contains("joined as peer"))))}");

                for (int offset = 0; offset < source.Length; offset += 256 * 1024)
                {
                    await coordinator.StandardInput.WriteAsync(source.AsMemory(offset, 256 * 1024));
                    await coordinator.StandardInput.FlushAsync();
                    await Task.Delay(20);
                }
                coordinator.StandardInput.Close();

                foreach (var viewer in viewers)
                {
                    var (exit, sha) = await viewer.WaitForExitAsync(Deadline);
                    Assert.True(exit == 0 && sha == expected,
                        $"a viewer exited {exit} having written {viewer.StdoutBytes} bytes with sha256 {sha}; the source has {source.Length} bytes with {expected}:\n{viewer.Stderr}");
                }
                Assert.True(liar.Rewritten > 0, "the liar never got to lie");
                Assert.Contains(viewers.SelectMany(v => v.StderrLines), l => l.Contains($"cut off parent {relay.Id}"));
                // What the coordinator said about the liar, for a failure message (a CI run once lacked the line).
                string aboutLiar = string.Join('\n', coordinator.StderrLines.Where(l => l.Contains($"peer {relay.Id} ") || l.Contains($"parent {relay.Id}") || l.Contains($"peer {relay.Id},")));
                Assert.True(coordinator.StderrLines.Any(l => l.Contains($"peer {relay.Id} (") && l.Contains("is cut off")),
                    $"the coordinator never said it cut off the liar (peer {relay.Id}); what it said of it:\n{aboutLiar}\nthe viewers' lines about it:\n{string.Join('\n', viewers.SelectMany(v => v.StderrLines).Where(l => l.Contains($"parent {relay.Id}") || l.Contains($"peer {relay.Id} ")))}");
            }
            finally
            {
                foreach (var v in viewers) await v.DisposeAsync();
            }
        }
        finally
        {
            File.Delete(keyFile);
        }
    }

    private static async Task<string> WaitForStreamAddressAsync(CliProcess coordinator)
    {
        string? found = null;
        await WaitUntilAsync(() => (found = coordinator.StderrLines.Select(l => StreamAddressRegex().Match(l)).FirstOrDefault(m => m.Success)?.Groups[1].Value) is not null,
            "the coordinator printed its stream address");
        return found!;
    }

    private static Task WaitUntilAsync(Func<bool> condition, string what) => Poll.UntilAsync(condition, Deadline, what);

    [GeneratedRegex(@"stream address ([0-9a-f]{64})")]
    private static partial Regex StreamAddressRegex();
}

using System.Security.Cryptography;

namespace ShardStream.IntegrationTests;

/// <summary>The real CLI in separate processes on loopback: a coordinator and 12 peers.</summary>
[Collection(CliCollection.Name)]
public sealed class CliStreamingTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(3);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public Task Twelve_peers_write_the_exact_64_MiB_source_to_stdout(int shards) =>
        StreamThroughCliAsync(shards, peers: 12, mib: 64, topologyArgs: []);

    [Fact]
    public Task Twenty_peers_on_eight_striped_shards_write_the_exact_source_to_stdout() =>
        StreamThroughCliAsync(8, peers: 20, mib: 32, topologyArgs: ["--topology", "striped", "--upload", "1.25"], peerArgs: ["--upload", "1.25"]);

    /// <summary>
    /// The acceptance run's shape (K = 16 striped, 8 viewers, a finite source): as the viewers
    /// finished and left one after another, the coordinator evicted the last ones for lack of
    /// upload, and viewers that had logged "stream complete" were told "evicted: no upload
    /// capacity is left in the overlay for this peer; join again later" (exit 0, the right bytes).
    /// The helper checks that no viewer's stderr says "evicted" after a complete stream.
    /// </summary>
    [Fact]
    public Task Eight_peers_on_sixteen_striped_shards_finish_without_an_eviction_warning() =>
        StreamThroughCliAsync(16, peers: 8, mib: 16, topologyArgs: ["--topology", "striped", "--upload", "1.25"], peerArgs: ["--upload", "1.25"]);

    private static async Task StreamThroughCliAsync(int shards, int peers, int mib, string[] topologyArgs, string[]? peerArgs = null)
    {
        var source = new byte[mib * 1024 * 1024];
        new Random(shards).NextBytes(source);
        string expected = Convert.ToHexStringLower(SHA256.HashData(source));

        await using var coordinator = CliProcess.Start(["coordinator", "-l", "127.0.0.1:0", "-s", shards.ToString(), "--min-peers", peers.ToString(), .. topologyArgs]);
        string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(30));
        var peerProcesses = new List<CliProcess>();
        try
        {
            for (int i = 0; i < peers; i++) peerProcesses.Add(CliProcess.Start(["peer", "-c", address, "-l", "127.0.0.1:0", .. peerArgs ?? []]));

            // The coordinator holds the source until all peers are attached; writing blocks until then.
            // A peer that ends before that (it gave up its join) leaves the coordinator one short
            // for good: fail at once with that peer's log, not after the stdin deadline (5 min)
            // with only the coordinator's. No peer can end before the write does: the stream
            // ends only when stdin is closed, after it.
            var write = coordinator.StandardInput.WriteAsync(source).AsTask();
            while (await Task.WhenAny(write, Task.Delay(250)) != write)
            {
                if (peerProcesses.FirstOrDefault(p => p.HasExited) is { } gone)
                {
                    var (exit, _) = await gone.WaitForExitAsync(Deadline);
                    Assert.Fail($"peer {peerProcesses.IndexOf(gone) + 1} of {peers} (pid {gone.Pid}) exited with {exit} before the stream started:\n{gone.Stderr}\ncoordinator:\n{coordinator.Stderr}");
                }
            }
            try
            {
                await write;
            }
            catch (TimeoutException e)
            {
                // Every peer still runs, and some never joined: their logs say why.
                Assert.Fail($"{e.Message}\n{string.Join('\n', peerProcesses.Select((p, i) => $"-- peer {i + 1} (pid {p.Pid}):\n{p.Stderr}"))}");
            }
            coordinator.StandardInput.Close();

            var (coordinatorExit, _) = await coordinator.WaitForExitAsync(Deadline);
            Assert.True(coordinatorExit == 0, $"coordinator exited with {coordinatorExit}:\n{coordinator.Stderr}");
            foreach (var peer in peerProcesses)
            {
                var (exit, sha) = await peer.WaitForExitAsync(Deadline);
                Assert.True(exit == 0, $"peer exited with {exit}:\n{peer.Stderr}");
                Assert.True(expected == sha, $"peer wrote {peer.StdoutBytes} bytes with sha256 {sha}, the source has {source.Length} bytes with {expected}:\n{peer.Stderr}");
                // A complete stream evicts nobody: no viewer is told so after its "stream complete".
                Assert.False(peer.Stderr.Contains("evicted", StringComparison.Ordinal), $"a peer that wrote the whole stream was told it was evicted:\n{peer.Stderr}\ncoordinator:\n{coordinator.Stderr}");
            }
            Assert.False(coordinator.Stderr.Contains("is evicted", StringComparison.Ordinal), $"the coordinator evicted a peer of a complete stream:\n{coordinator.Stderr}");
        }
        finally
        {
            foreach (var p in peerProcesses) await p.DisposeAsync();
        }
    }
}

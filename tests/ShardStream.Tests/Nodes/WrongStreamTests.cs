using System.Diagnostics;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Trust;

namespace ShardStream.Tests.Nodes;

/// <summary>A viewer that asks for another stream than the one the coordinator serves (<see cref="PeerOptions.Stream"/>).</summary>
public sealed class WrongStreamTests
{
    [Fact]
    public async Task A_viewer_placed_in_a_stream_it_did_not_ask_for_says_goodbye_and_the_coordinator_keeps_no_place_for_it()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1);
        using var other = StreamSigner.CreateEphemeral();
        var error = await Assert.ThrowsAsync<ConnectionFailedException>(() => overlay.AddPeerAsync(configure: o => o with { Stream = other.PublicKey }));
        Assert.Contains("not the stream asked for", error.Message);

        // The coordinator placed it before it checked the key. A link that broke without a goodbye
        // keeps a peer's place for the rejoin grace (4 heartbeat timeouts: 40 s here), and the
        // coordinator's drain after the end waited for it that long.
        var clock = Stopwatch.StartNew();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.Count == 1, "the coordinator no longer lists the viewer");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"the viewer was listed {clock.Elapsed.TotalSeconds:0.0} s after it refused the stream");
    }
}

using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A viewer started without <c>--stream</c> pins the key of the coordinator it first reached. When
/// that coordinator is gone and another key answers at its address (a coordinator restarted without
/// <c>--key</c>, or an impostor), every rejoin is refused, and the viewer's log must not say it
/// pinned the other key: seen in the security.md audit, where each refused attempt logged
/// "pinned stream NEW: the key the coordinator proved it holds" before "… now streams NEW, not OLD".
/// </summary>
public class PinnedKeyRejoinTests
{
    [Fact]
    public async Task A_viewer_that_pinned_a_key_refuses_another_key_at_its_rejoin_and_does_not_log_it_as_pinned()
    {
        using var first = StreamSigner.CreateEphemeral();
        using var other = StreamSigner.CreateEphemeral();
        var net = new VirtualNetwork();
        var log = new LogCapture();
        CoordinatorOptions Options(StreamSigner key) => new() { ListenAddress = "coord:1", ShardCount = 1, Signer = key };
        const int Chunk = Protocol.MaxChunkLength;

        var run1 = new Coordinator(Options(first), net.Host("coord"), log.Factory);
        await run1.StartAsync(CancellationToken.None);
        var source1 = new System.IO.Pipelines.Pipe();
        _ = Task.Run(() => run1.RunAsync(source1.Reader.AsStream(), CancellationToken.None));
        await using var peer = new Peer(new PeerOptions { JoinAddress = "coord:1", ListenAddress = "p1:1", RejoinFor = TimeSpan.FromSeconds(30) }, net.Host("p1"), log.Factory);
        await peer.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline);
        var watching = Task.Run(() => peer.RunAsync(Stream.Null, CancellationToken.None));
        await source1.Writer.WriteAsync(Overlay.RandomBytes(Chunk, seed: 1));
        await Overlay.WaitUntilAsync(() => peer.BytesWritten == Chunk, "the peer wrote the first run's chunk");
        Assert.True(log.Has(LogLevel.Information, $"pinned stream {first.PublicKey.Address}"), Dump(log));

        // The coordinator's process dies; another key answers at its address.
        net.Kill("coord");
        await run1.DisposeAsync();
        await using var run2 = new Coordinator(Options(other), net.Host("coord"), log.Factory);
        var source2 = new System.IO.Pipelines.Pipe();
        _ = Task.Run(() => run2.RunAsync(source2.Reader.AsStream(), CancellationToken.None));
        await run2.StartAsync(CancellationToken.None);
        string refusal = $"now streams {other.PublicKey.Address}, not {first.PublicKey.Address}";
        await Overlay.WaitUntilAsync(() => log.Has(LogLevel.Warning, refusal), "the peer refused the other key at a rejoin");

        Assert.False(log.Has(LogLevel.Information, $"pinned stream {other.PublicKey.Address}"), Dump(log));
        Assert.Equal(Chunk, peer.BytesWritten);
        Assert.Equal(first.PublicKey.Address, peer.StreamKey!.Address);
        _ = watching;
    }

    private static string Dump(LogCapture log) => string.Join("\n", log.Lines.Select(l => $"{l.Level} {l.Category}: {l.Message}"));
}

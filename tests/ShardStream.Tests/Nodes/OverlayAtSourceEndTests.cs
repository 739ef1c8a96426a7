using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The overlay at the end of the stream (the CLI's events 1751/1752) must hold every peer attached
/// when the source ended, even one that finished and left at once: taken after the gate that
/// published the End was released, a fast peer's leave could be handled first and the peer was missing.
/// </summary>
public class OverlayAtSourceEndTests
{
    [Fact]
    public async Task The_overlay_at_the_source_end_holds_a_peer_that_left_right_after_the_end()
    {
        var net = new VirtualNetwork();
        var log = new LogCapture();
        using var left = new ManualResetEventSlim();
        // The "source ended" line (event 1654) waits until the peer has left.
        var factory = new HeldLogLine(log.Factory, 1654, left);
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", ShardCount = 1 }, net.Host("coord"), factory);
        await coordinator.StartAsync(CancellationToken.None);
        var source = new System.IO.Pipelines.Pipe();
        var run = Task.Run(() => coordinator.RunAsync(source.Reader.AsStream(), CancellationToken.None));
        await using var peer = new Peer(new PeerOptions { JoinAddress = "coord:1", ListenAddress = "p1:1" }, net.Host("p1"), log.Factory);
        await peer.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline);
        var watching = Task.Run(() => peer.RunAsync(Stream.Null, CancellationToken.None));
        await source.Writer.WriteAsync(Overlay.RandomBytes(Protocol.MaxChunkLength, seed: 1));
        await Overlay.WaitUntilAsync(() => peer.BytesWritten == Protocol.MaxChunkLength, "the peer wrote the chunk");
        await source.Writer.CompleteAsync();

        // The coordinator's thread is held up after the source ended until the peer has left.
        await watching.WaitAsync(Overlay.Deadline);
        await Overlay.WaitUntilAsync(() => coordinator.Snapshot().Nodes.Count == 1, "the coordinator took the peer's leave");
        left.Set();
        await run.WaitAsync(Overlay.Deadline);

        var atEnd = coordinator.OverlayAtSourceEnd;
        Assert.NotNull(atEnd);
        Assert.Contains(atEnd.Nodes, n => n.Address == "p1:1");
    }
}

using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>A viewer whose output is slower than the stream stops with the reason instead of growing without bound.</summary>
public sealed class OutputBacklogTests
{
    [Fact]
    public async Task A_peer_whose_output_never_drains_stops_at_its_backlog_limit_with_the_reason()
    {
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", MinPeers = 1 }, net.Host("coord"));
        await coordinator.StartAsync(default);
        await using var peer = new Peer(new PeerOptions { JoinAddress = coordinator.ListenAddress, ListenAddress = "p:1", MaxOutputBacklogBytes = 256 * 1024 }, net.Host("p"));
        await peer.StartAsync(default).WaitAsync(Overlay.Deadline);

        var run = peer.RunAsync(new StuckStream(), default);
        _ = coordinator.RunAsync(new MemoryStream(Overlay.RandomBytes(4 * 1024 * 1024, 5)), default);

        var error = await Assert.ThrowsAsync<StreamInterruptedException>(() => run.WaitAsync(Overlay.Deadline));
        Assert.Contains("the output is slower than the stream", error.Message);
    }

    /// <summary>A stdout nobody reads: every write waits forever.</summary>
    private sealed class StuckStream : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => 0;

        public override long Position { get => 0; set { } }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => Thread.Sleep(Timeout.Infinite);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            new(Task.Delay(Timeout.Infinite, cancellationToken));
    }
}

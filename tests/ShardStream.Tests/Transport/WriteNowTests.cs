using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Transport;

/// <summary>
/// A frame written at once (hello, welcome, goodbye, landmarks) to a connection the other side
/// has reset: the failure is an <see cref="IOException"/>, what every caller of WriteNowAsync
/// catches (a refusal, a probe's answer, an attach), on both TCP connections.
/// </summary>
[Collection(ReceiveSlabCollection.Name)]
public sealed class WriteNowTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_frame_written_at_once_to_a_reset_connection_fails_with_an_IOException(bool readingThreads)
    {
        var tcp = readingThreads ? TcpTransport.ReadingThreads : TcpTransport.Instance;
        await using var listener = await tcp.ListenAsync("127.0.0.1:0", default);
        var (host, port) = Endpoint.Parse(listener.LocalAddress);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(host, port);
        var server = (await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline))!;
        await using var framed = new FramedConnection(server, "reset by its client", TimeSpan.FromSeconds(5), NullLogger.Instance, TimeProvider.System);

        // The client goes away with a reset; the server has seen it once its read fails.
        client.LingerState = new LingerOption(true, 0);
        client.Close();
        await Assert.ThrowsAnyAsync<Exception>(() => framed.ReadOneAsync(1024, CancellationToken.None).WaitAsync(PipeIo.Deadline));

        var e = await Record.ExceptionAsync(() => framed.WriteNowAsync(new Goodbye(GoodbyeCode.Refused, "no").Write, CancellationToken.None).WaitAsync(PipeIo.Deadline));
        Assert.NotNull(e);
        Assert.True(e is IOException, $"expected an IOException, got {e.GetType().Name}: {e.Message}");
    }

    /// <summary>
    /// A probe whose client resets the connection right after its hello: the node's answer fails,
    /// and that ends the connection quietly (no "background task failed" error), and the link is let go.
    /// </summary>
    [Fact]
    public async Task A_probe_reset_right_after_its_hello_is_let_go_without_an_error()
    {
        var logs = new LogCapture();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ShardCount = 1, ListenAddress = "127.0.0.1:0" }, TcpTransport.Instance, logs.Factory);
        await coordinator.StartAsync(CancellationToken.None);
        var (host, port) = Endpoint.Parse(coordinator.ListenAddress);

        const int probes = 5;
        for (int i = 0; i < probes; i++)
        {
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(host, port);
            await client.SendAsync(FrameWriting.ToArray(new Hello(Protocol.ProbeVersion, Protocol.Version, HelloRole.Probe, 0, 0, [], "127.0.0.1:9").Write));
            client.LingerState = new LingerOption(true, 0);
            client.Close();
        }

        // Each probe is answered (or found gone) and its link disposed: none is left behind.
        await Overlay.WaitUntilAsync(() => logs.Lines.Count(l => l.Message.Contains("answering a reachability probe", StringComparison.Ordinal)) >= probes, "every probe is taken up");
        await Overlay.WaitUntilAsync(() => LinkCount(coordinator) == 0, "every probe's link is disposed");
        Assert.DoesNotContain(logs.Lines, l => l.Level == LogLevel.Error);
    }

    /// <summary>The links a node holds (open, or closed and not yet disposed).</summary>
    private static int LinkCount(Node node)
    {
        var links = typeof(Node).GetField("_links", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(node)!;
        return ((System.Collections.ICollection)links).Count;
    }
}

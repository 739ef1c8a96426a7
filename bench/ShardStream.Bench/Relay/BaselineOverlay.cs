using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace ShardStream.Bench.Relay;

/// <summary>
/// The baseline: plain TCP relays with the same parent/child edges as a ShardStream overlay, in
/// this process. One loopback connection per edge and shard. The source deals fixed-size blocks
/// round-robin to the K shards and writes each to that shard's children; every peer runs, per
/// shard, the minimal relay loop: receive from the parent socket, write the same bytes to each
/// child socket in turn. No framing, no queues, no copies beyond the socket's own.
/// </summary>
internal static class BaselineOverlay
{
    private const int SocketBufferSize = 256 * 1024; // as ShardStream's TcpConnection

    public static async Task<Usage> RunAsync(Shape shape, Stream source, int blockSize, IProbe[] probes, CancellationToken cancellationToken)
    {
        int k = shape.ShardCount;
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(64);

        // outgoing[node][shard]: sockets to the children (node 0 is the source); incoming[peer index][shard]: from the parent.
        var outgoing = new Dictionary<int, List<Socket>[]>();
        List<Socket>[] Out(int node) => outgoing.TryGetValue(node, out var lists) ? lists
            : outgoing[node] = Enumerable.Range(0, k).Select(_ => new List<Socket>()).ToArray();
        var incoming = new Socket[shape.PeerCount][];
        var all = new List<Socket>();
        try
        {
            for (int i = 0; i < shape.PeerCount; i++)
            {
                incoming[i] = new Socket[k];
                for (int s = 0; s < k; s++)
                {
                    var child = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    all.Add(child);
                    var accepting = listener.AcceptAsync(cancellationToken);
                    await child.ConnectAsync(listener.LocalEndPoint!, cancellationToken);
                    var parent = await accepting;
                    all.Add(parent);
                    foreach (var socket in new[] { child, parent })
                    {
                        socket.NoDelay = true;
                        socket.SendBufferSize = SocketBufferSize;
                        socket.ReceiveBufferSize = SocketBufferSize;
                    }
                    incoming[i][s] = child;
                    Out(shape.Parents[i][s])[s].Add(parent);
                }
            }

            var meter = Usage.Start();
            var relays = new List<Task>();
            for (int i = 0; i < shape.PeerCount; i++)
                for (int s = 0; s < k; s++)
                {
                    var from = incoming[i][s];
                    var to = Out(shape.PeerIds[i])[s];
                    var probe = probes[i];
                    int shard = s;
                    relays.Add(Task.Run(() => RelayLoopAsync(from, to, probe, shard, cancellationToken), cancellationToken));
                }
            await SourceLoopAsync(source, blockSize, Out(0), cancellationToken);
            await Task.WhenAll(relays);
            return meter.Stop();
        }
        finally
        {
            foreach (var socket in all) socket.Dispose();
        }
    }

    private static async Task SourceLoopAsync(Stream source, int blockSize, List<Socket>[] children, CancellationToken cancellationToken)
    {
        var buffer = new byte[blockSize];
        for (long block = 0; ; block++)
        {
            int n = await source.ReadAtLeastAsync(buffer, blockSize, throwOnEndOfStream: false, cancellationToken);
            if (n == 0) break;
            foreach (var child in children[block % children.Length]) await SendAllAsync(child, buffer.AsMemory(0, n), cancellationToken);
            if (n < blockSize) break;
        }
        foreach (var list in children)
            foreach (var child in list) child.Shutdown(SocketShutdown.Send);
    }

    private static async Task RelayLoopAsync(Socket from, List<Socket> to, IProbe probe, int shard, CancellationToken cancellationToken)
    {
        var buffer = new byte[64 * 1024];
        while (true)
        {
            int n = await from.ReceiveAsync(buffer, cancellationToken);
            if (n == 0) break;
            long now = Stopwatch.GetTimestamp();
            foreach (var child in to) await SendAllAsync(child, buffer.AsMemory(0, n), cancellationToken);
            probe.Consume(shard, buffer.AsSpan(0, n), now);
        }
        foreach (var child in to) child.Shutdown(SocketShutdown.Send);
    }

    private static async ValueTask SendAllAsync(Socket socket, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        while (!data.IsEmpty)
        {
            int sent = await socket.SendAsync(data, SocketFlags.None, cancellationToken);
            data = data[sent..];
        }
    }
}

using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A stranger's hello is input: whatever it holds, it is refused with a one-line reason and the
/// honest viewers that come after it are placed and receive every byte.
/// </summary>
public sealed class HostileInputTests
{
    [Fact]
    public async Task A_hello_whose_address_is_not_utf8_is_refused_and_ten_honest_viewers_get_every_byte()
    {
        await using var overlay = await Overlay.StartAsync(1, minPeers: 10);
        // The stranger stays connected while the others join, as an attacker would.
        var (type, reason, connection) = await SendRawHelloAsync(overlay.Network, overlay.Coordinator.ListenAddress, Enumerable.Repeat((byte)0xFF, 1024).ToArray(), keepOpen: true).WaitAsync(Overlay.Deadline);
        await using var _ = connection;

        for (int i = 0; i < 10; i++) await overlay.AddPeerAsync();
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(300_000, 9));
        await overlay.EndAsync();
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);

        Assert.Equal(FrameType.Goodbye, type);
        Assert.Contains("UTF-8", reason);
        Assert.DoesNotContain('\n', reason);
    }

    [Theory]
    [InlineData("no-port-here")]
    [InlineData(":1234")]
    [InlineData("host:99999")]
    [InlineData("host:12\n34")]
    [InlineData("ho st:1")]
    public async Task A_hello_whose_address_is_not_host_port_is_refused_with_the_reason(string address)
    {
        await using var overlay = await Overlay.StartAsync(1);
        var (type, reason, _) = await SendRawHelloAsync(overlay.Network, overlay.Coordinator.ListenAddress, System.Text.Encoding.UTF8.GetBytes(address)).WaitAsync(Overlay.Deadline);
        Assert.Equal(FrameType.Goodbye, type);
        Assert.Contains("HOST:PORT", reason);
        Assert.DoesNotContain('\n', reason);
    }

    [Fact]
    public async Task A_hello_whose_address_is_longer_than_any_host_port_is_refused()
    {
        await using var overlay = await Overlay.StartAsync(1);
        string address = new string('a', 600) + ":1";
        var (type, reason, _) = await SendRawHelloAsync(overlay.Network, overlay.Coordinator.ListenAddress, System.Text.Encoding.UTF8.GetBytes(address)).WaitAsync(Overlay.Deadline);
        Assert.Equal(FrameType.Goodbye, type);
        Assert.Contains("longer than", reason);
    }

    /// <summary>
    /// Sends a join hello whose listen address is <paramref name="address"/>, byte for byte (not
    /// necessarily UTF-8), from a fresh host; returns the first frame of the answer (for a goodbye,
    /// its reason). With <paramref name="keepOpen"/> the connection is returned open (the caller disposes it).
    /// </summary>
    internal static async Task<(FrameType Type, string Reason, IConnection? Connection)> SendRawHelloAsync(VirtualNetwork net, string to, byte[] address, bool keepOpen = false)
    {
        var connection = await net.Host($"evil{Guid.NewGuid():N}").ConnectAsync(to, default);
        var body = new List<byte>();
        void Add(Span<byte> bytes) => body.AddRange(bytes.ToArray());
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(b, Protocol.Magic);
        Add(b[..4]);
        BinaryPrimitives.WriteUInt16BigEndian(b, Protocol.Version);
        Add(b[..2]); // min version
        Add(b[..2]); // max version
        body.Add((byte)HelloRole.Join);
        body.AddRange(new byte[8]); // peer id 0
        BinaryPrimitives.WriteUInt16BigEndian(b, Hello.DefaultUpload);
        Add(b[..2]);
        body.Add(0); // no shard starts
        BinaryPrimitives.WriteUInt16BigEndian(b, (ushort)address.Length);
        Add(b[..2]);
        body.AddRange(address);
        body.AddRange(new byte[Protocol.NonceLength]); // the nonce
        body.Add(0); // no ticket
        body.AddRange(new byte[12]); // version 6: the coordinate (0, 0), height 0...
        body.AddRange([0x3F, 0x80, 0x00, 0x00]); // ...and error 1: unknown
        body.Add(0); // no measured RTTs
        FrameCodec.WriteHeader(connection.Pipe.Output, FrameType.Hello, body.Count);
        await connection.Pipe.Output.WriteAsync(body.ToArray());

        using var cts = new CancellationTokenSource(Overlay.Deadline);
        var input = connection.Pipe.Input;
        while (true)
        {
            var result = await input.ReadAsync(cts.Token);
            var buffer = result.Buffer;
            if (FrameCodec.TryReadFrame(ref buffer, out var type, out var frame))
            {
                var reader = new SequenceReader<byte>(frame);
                string reason = type == FrameType.Goodbye && Goodbye.TryRead(ref reader, out var bye) ? bye.Reason : "";
                input.AdvanceTo(buffer.Start);
                if (keepOpen) return (type, reason, connection);
                connection.Abort();
                return (type, reason, null);
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) throw new IOException("the connection closed before an answer arrived");
        }
    }
}

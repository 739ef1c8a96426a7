using System.Net.Sockets;
using ShardStream.Transport;

namespace ShardStream.Tests.Transport;

[Collection(ReceiveSlabCollection.Name)]
public class TcpTransportTests
{
    private static readonly TcpTransport Tcp = TcpTransport.Instance;

    [Fact]
    public async Task Binds_a_free_port_connects_and_echoes()
    {
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        var (host, port) = Endpoint.Parse(listener.LocalAddress);
        Assert.Equal("127.0.0.1", host);
        Assert.NotEqual(0, port);

        await using var client = await Tcp.ConnectAsync(listener.LocalAddress, default);
        await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);

        await PipeIo.WriteAsync(client.Pipe.Output, "ping"u8.ToArray());
        var ping = await PipeIo.ReadExactlyAsync(server.Pipe.Input, 4);
        await PipeIo.WriteAsync(server.Pipe.Output, ping);

        Assert.Equal("ping"u8.ToArray(), await PipeIo.ReadExactlyAsync(client.Pipe.Input, 4));
    }

    [Fact]
    public async Task A_listener_on_every_IPv6_address_accepts_IPv4_connections_too()
    {
        // -l [::]:PORT listens on every address of the machine (README), as 0.0.0.0 does: a
        // viewer's IPv4 neighbours must reach it. A .NET IPv6 socket is IPv6-only unless DualMode.
        await using var listener = await Tcp.ListenAsync("[::]:0", default);
        var (_, port) = Endpoint.Parse(listener.LocalAddress);

        await using var client = await Tcp.ConnectAsync($"127.0.0.1:{port}", default);
        await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);
        Assert.Equal("127.0.0.1", Endpoint.HostOf(server.RemoteAddress));

        await PipeIo.WriteAsync(client.Pipe.Output, "ping"u8.ToArray());
        Assert.Equal("ping"u8.ToArray(), await PipeIo.ReadExactlyAsync(server.Pipe.Input, 4));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task An_IPv4_connection_to_a_dual_stack_listener_is_named_by_its_IPv4_address(bool readingThreads)
    {
        // The accepted connection's name is what logs show ("incoming ADDRESS: refused: ...") and
        // what a remote peer is called: an IPv4 neighbour of a [::] listener is 10.0.0.2:PORT to a
        // user, not the socket's [::ffff:10.0.0.2]:PORT.
        var tcp = readingThreads ? TcpTransport.ReadingThreads : Tcp;
        await using var listener = await tcp.ListenAsync("[::]:0", default);
        var (_, port) = Endpoint.Parse(listener.LocalAddress);

        await using var client = await Tcp.ConnectAsync($"127.0.0.1:{port}", default);
        await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);
        Assert.StartsWith("127.0.0.1:", server.RemoteAddress, StringComparison.Ordinal);
        Assert.DoesNotContain("ffff", server.RemoteAddress, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task A_frame_written_at_once_to_a_connection_the_other_side_reset_fails_as_an_IOException()
    {
        // Callers (a node's hello handler, the dial-back probe) take a connection gone as an
        // IOException; a SocketException escaped them and was logged as a failed background task.
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        var client = await Tcp.ConnectAsync(listener.LocalAddress, default);
        var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);
        await using var link = new ShardStream.Nodes.Link(server, "reset link", new ShardStream.Nodes.LinkOptions(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, TimeProvider.System);
        client.Abort();
        await client.DisposeAsync();
        Exception? failure = null;
        var deadline = DateTime.UtcNow + PipeIo.Deadline;
        while (failure is null && DateTime.UtcNow < deadline)
        {
            try
            {
                await link.WriteNowAsync(new ShardStream.Wire.Heartbeat(0).Write, default);
                await Task.Delay(10);
            }
            catch (Exception e)
            {
                failure = e;
            }
        }
        Assert.IsType<IOException>(failure);
    }

    [Fact]
    public async Task A_last_frame_before_an_abort_reaches_a_side_that_sent_nothing_with_a_clean_end_while_a_read_waits()
    {
        // A node waits for a joiner's hello (a read pending) and drops the connection from its full
        // hello gate with a Busy goodbye. The joiner, starved on a loaded host, has sent nothing yet:
        // it must find the goodbye and then the end, not a reset (which its connect, not yet seen
        // completing, reports as "Connection reset by peer" before anything is read).
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(System.Net.IPEndPoint.Parse(listener.LocalAddress));
        var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);
        var reading = server.Pipe.Input.ReadAsync();
        byte[] frame = "goodbye"u8.ToArray();
        server.AbortWith(frame);

        var received = new List<byte>();
        var buffer = new byte[64];
        client.ReceiveTimeout = (int)PipeIo.Deadline.TotalMilliseconds;
        SocketError? error = null;
        for (int n = -1; n != 0 && received.Count <= frame.Length;)
        {
            try
            {
                n = client.Receive(buffer);
                received.AddRange(buffer.AsSpan(0, n).ToArray());
            }
            catch (SocketException e)
            {
                error = e.SocketErrorCode;
                break;
            }
        }
        Assert.Equal(frame, received.ToArray());
        Assert.Null(error);
        await server.DisposeAsync();
        try
        {
            await reading;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or InvalidOperationException)
        {
            // The read ends with the connection; how is not what this test is about.
        }
    }

    [Fact]
    public async Task Bytes_that_wait_unread_in_the_socket_are_reported()
    {
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        await using var client = await Tcp.ConnectAsync(listener.LocalAddress, default);
        await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);
        Assert.False(server.HasUnreadInput);

        await PipeIo.WriteAsync(client.Pipe.Output, "ping"u8.ToArray());
        var deadline = DateTime.UtcNow + PipeIo.Deadline;
        while (!server.HasUnreadInput && DateTime.UtcNow < deadline) await Task.Delay(10);
        Assert.True(server.HasUnreadInput);

        await PipeIo.ReadExactlyAsync(server.Pipe.Input, 4);
        Assert.False(server.HasUnreadInput);
    }

    [Fact]
    public async Task A_large_transfer_arrives_intact_and_in_order()
    {
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        await using var client = await Tcp.ConnectAsync(listener.LocalAddress, default);
        await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);
        var payload = new byte[4 * 1024 * 1024];
        new Random(11).NextBytes(payload);

        var reading = PipeIo.ReadToEndAsync(server.Pipe.Input);
        await PipeIo.WriteAsync(client.Pipe.Output, payload);
        await client.CloseOutputAsync();

        Assert.Equal(payload, await reading);
    }

    [Fact]
    public async Task Closing_the_output_sends_an_end_and_reading_goes_on()
    {
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        await using var client = await Tcp.ConnectAsync(listener.LocalAddress, default);
        await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);

        await PipeIo.WriteAsync(client.Pipe.Output, "bye"u8.ToArray());
        await client.CloseOutputAsync();
        Assert.Equal("bye"u8.ToArray(), await PipeIo.ReadToEndAsync(server.Pipe.Input));

        await PipeIo.WriteAsync(server.Pipe.Output, "ack"u8.ToArray());
        Assert.Equal("ack"u8.ToArray(), await PipeIo.ReadExactlyAsync(client.Pipe.Input, 3));
    }

    [Fact]
    public async Task Abort_makes_the_other_side_see_the_connection_end()
    {
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        var client = await Tcp.ConnectAsync(listener.LocalAddress, default);
        await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(server);

        client.Abort();

        // A reset: an error or at least the end of the input, never a hang.
        try
        {
            await PipeIo.ReadToEndAsync(server.Pipe.Input);
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
        }
    }

    [Fact]
    public async Task Listening_on_an_address_in_use_fails_with_a_readable_message()
    {
        await using var first = await Tcp.ListenAsync("127.0.0.1:0", default);

        var e = await Assert.ThrowsAsync<ConnectionFailedException>(() => Tcp.ListenAsync(first.LocalAddress, default).AsTask());

        Assert.Contains($"cannot listen on {first.LocalAddress}", e.Message);
        Assert.Contains("in use", e.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Connecting_where_nobody_listens_fails_with_a_readable_message()
    {
        string address;
        await using (var listener = await Tcp.ListenAsync("127.0.0.1:0", default)) address = listener.LocalAddress;

        var e = await Assert.ThrowsAsync<ConnectionFailedException>(() => Tcp.ConnectAsync(address, default).AsTask());

        Assert.Contains($"cannot connect to {address}", e.Message);
    }

    [Theory]
    [InlineData("no-port")]
    [InlineData("127.0.0.1:")]
    [InlineData("127.0.0.1:99999")]
    [InlineData("127.0.0.1:-1")]
    public async Task A_malformed_address_fails_with_a_connection_error(string address)
    {
        await Assert.ThrowsAsync<ConnectionFailedException>(() => Tcp.ListenAsync(address, default).AsTask());
        await Assert.ThrowsAsync<ConnectionFailedException>(() => Tcp.ConnectAsync(address, default).AsTask());
    }

    [Fact]
    public async Task Accept_returns_null_once_the_listener_is_closed()
    {
        var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        var accepting = listener.AcceptAsync(default).AsTask();

        await listener.DisposeAsync();

        Assert.Null(await accepting.WaitAsync(PipeIo.Deadline));
    }
}

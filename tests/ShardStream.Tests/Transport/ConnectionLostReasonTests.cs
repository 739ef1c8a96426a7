using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Transport;

namespace ShardStream.Tests.Transport;

/// <summary>The reason a link gives when its TCP connection breaks, which a user reads in the logs and in a peer's last error line.</summary>
public sealed class ConnectionLostReasonTests
{
    /// <summary>
    /// A reset read as "connection lost: Unable to read data from the transport connection:
    /// Connection reset by peer.", the runtime's wrapper around the socket's error, and a peer
    /// that then could not join again ended with "lost the coordinator before the end of the
    /// stream (connection lost: Unable to read data from the transport connection: Connection
    /// reset by peer.) and could not join again …" (a killed coordinator across network namespaces).
    /// The socket's own words say what went wrong, as "send failed: Connection reset by peer" does.
    /// </summary>
    [Fact]
    public async Task A_reset_reads_as_connection_lost_with_the_sockets_own_words()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var accepting = listener.AcceptAsync();
        await using var client = await TcpTransport.Instance.ConnectAsync($"127.0.0.1:{((IPEndPoint)listener.LocalEndPoint!).Port}", CancellationToken.None);
        using var server = await accepting.WaitAsync(TimeSpan.FromSeconds(10));
        var link = new FramedConnection(client, "test", TimeSpan.FromSeconds(5), NullLogger.Instance, TimeProvider.System);
        link.Start((_, _) => { }, _ => { }, () => { });

        // A close with linger 0 sends a reset, as a killed process's kernel may.
        server.LingerState = new LingerOption(true, 0);
        server.Close();

        var reason = await link.Closed.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("connection lost: Connection reset by peer", reason.Text);
        await link.DisposeAsync();
    }
}

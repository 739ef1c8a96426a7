using System.Net.Sockets;

namespace ShardStream.IntegrationTests;

/// <summary>A stranger's side of a connection, byte by byte: what it sends and what comes back.</summary>
internal static class RawSockets
{
    /// <summary>Connects <paramref name="socket"/> (made and bound by the caller) to <paramref name="to"/> and returns it; disposes it when the connect fails.</summary>
    public static async Task<Socket> ConnectAsync(Socket socket, System.Net.IPEndPoint to, TimeSpan timeout)
    {
        try
        {
            using var cts = new CancellationTokenSource(timeout);
            await socket.ConnectAsync(to, cts.Token);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Sends <paramref name="bytes"/> on a connected socket and returns all that comes back until the server closes (a reset ends it too).</summary>
    public static async Task<string> ExchangeAsync(Socket socket, byte[] bytes, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var answer = new MemoryStream();
        try
        {
            await socket.SendAsync(bytes, cts.Token);
            var buffer = new byte[16 * 1024];
            int n;
            while ((n = await socket.ReceiveAsync(buffer, cts.Token)) > 0) answer.Write(buffer, 0, n);
        }
        catch (SocketException)
        {
            // Reset: what came before it is the answer.
        }
        return System.Text.Encoding.UTF8.GetString(answer.ToArray());
    }

    /// <summary>Sends an RTMP client's C0 and C1 on a connected socket; true when the server answers with S0 and S1, false when it closes or resets instead.</summary>
    public static async Task<bool> RtmpAnswersAsync(Socket socket, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var c0c1 = new byte[1 + 1536];
        c0c1[0] = 3;
        try
        {
            await socket.SendAsync(c0c1, cts.Token);
            var buffer = new byte[c0c1.Length];
            int got = 0, n;
            while (got < buffer.Length && (n = await socket.ReceiveAsync(buffer.AsMemory(got), cts.Token)) > 0) got += n;
            return got == buffer.Length && buffer[0] == 3;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}

using System.Net;
using System.Net.Sockets;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// A flood of garbage at a coordinator's HTTP and RTMP ports leaves a clear and bounded record
/// (docs/security.md, "a flood of connections"): the connections are counted in at most one line
/// per port per 10 s with the count and the last one's address and reason (events 1302, 1113),
/// as the overlay port's bad first frames are (9106), and good clients are served after them.
/// </summary>
public sealed class CliGarbageTests(ITestOutputHelper output)
{
    private const int Garbage = 12;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(90);

    /// <summary>
    /// 12 connections from 12 addresses send random bytes to the HTTP port (each answered 400 and
    /// closed by Kestrel) and 12 to the RTMP port (each closed at its first byte): stderr says each
    /// port's 12 in at most two lines, with the count, and a GET and an RTMP handshake after them
    /// are served. Before, the HTTP garbage left no line at all, and the RTMP garbage a warning each.
    /// </summary>
    [Fact]
    public async Task Garbage_at_the_http_and_rtmp_ports_is_counted_in_a_few_lines_and_good_clients_are_served_after_it()
    {
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0", "--rtmp-key", "k");
        var http = IPEndPoint.Parse(new Uri(await Prometheus.WaitForHttpAsync(coordinator, Deadline)).Authority);
        var rtmp = await coordinator.WaitForRtmpAddressAsync(Deadline);

        var random = new Random(7);
        for (int i = 0; i < Garbage; i++)
        {
            var bytes = new byte[300];
            random.NextBytes(bytes);
            bytes[0] = 0xFF; // neither an HTTP method's letter nor RTMP's version 3
            string answer = await ExchangeAsync(IPAddress.Parse($"127.0.6.{i + 1}"), http, [.. bytes, .. "\r\n\r\n"u8]);
            Assert.StartsWith("HTTP/1.1 400", answer, StringComparison.Ordinal);
            Assert.Equal("RTMP server: not an RTMP handshake\r\n", await ExchangeAsync(IPAddress.Parse($"127.0.7.{i + 1}"), rtmp, bytes));
        }

        // The first of each is said at once, the other 11 when the line's 10 s are up.
        string httpLine = $"] {Garbage} http connection(s) closed so far for a request this node cannot read";
        string rtmpLine = $"rtmp: {Garbage} connection(s) closed so far for bad input";
        await coordinator.WaitUntilAsync(() => coordinator.StderrLines.Any(l => l.Contains(httpLine, StringComparison.Ordinal)), $"'{httpLine}' is logged", Deadline);
        await coordinator.WaitUntilAsync(() => coordinator.StderrLines.Any(l => l.Contains(rtmpLine, StringComparison.Ordinal)), $"'{rtmpLine}' is logged", Deadline);
        foreach (var line in coordinator.StderrLines.Where(l => l.Contains("closed so far", StringComparison.Ordinal))) output.WriteLine(line);
        Assert.Contains(coordinator.StderrLines, l => l.Contains(httpLine, StringComparison.Ordinal) && l.Contains("the last from 127.0.6.", StringComparison.Ordinal) && l.Contains(": 400 Invalid request line", StringComparison.Ordinal));
        Assert.Contains(coordinator.StderrLines, l => l.Contains(rtmpLine, StringComparison.Ordinal) && l.Contains("the last from 127.0.7.", StringComparison.Ordinal) && l.Contains("handshake version 255, not RTMP's 3", StringComparison.Ordinal));
        // Bounded: at most two lines a port for the 12 (nothing else at the HTTP and RTMP ports warns).
        Assert.True(coordinator.StderrLines.Count(l => l.Contains(" http[", StringComparison.Ordinal) && l.Contains("warn", StringComparison.Ordinal)) <= 2, coordinator.Stderr);
        Assert.True(coordinator.StderrLines.Count(l => l.Contains(" rtmp[", StringComparison.Ordinal) && l.Contains("warn", StringComparison.Ordinal)) <= 2, coordinator.Stderr);

        Assert.StartsWith("HTTP/1.1 200", await ExchangeAsync(IPAddress.Parse("127.0.6.100"), http, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"u8.ToArray()), StringComparison.Ordinal);
        using var player = await ConnectAsync(IPAddress.Parse("127.0.7.100"), rtmp);
        Assert.True(await RawSockets.RtmpAnswersAsync(player, Deadline), "the RTMP port did not answer a good client's handshake");
        Assert.False(coordinator.HasExited, $"the coordinator exited:\n{coordinator.Stderr}");
    }

    /// <summary>Connects from <paramref name="from"/>, sends <paramref name="bytes"/>, and returns all that comes back until the server closes (a reset ends it too).</summary>
    private static async Task<string> ExchangeAsync(IPAddress from, IPEndPoint to, byte[] bytes)
    {
        using var socket = await ConnectAsync(from, to);
        return await RawSockets.ExchangeAsync(socket, bytes, Deadline);
    }

    private static Task<Socket> ConnectAsync(IPAddress from, IPEndPoint to)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(from, 0));
        return RawSockets.ConnectAsync(socket, to, Deadline);
    }
}

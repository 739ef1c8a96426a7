using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using ShardStream.Transport;
using Xunit.Abstractions;

namespace ShardStream.Tests.Transport;

/// <summary>
/// The handshake RTT of an accepted TCP connection, read from the kernel (TCP_INFO on Linux): a
/// plausible figure on loopback, none from a handshake whose SYN-ACK was sent again, and none,
/// never an exception, where the read fails (on Linux counted as measured, so a joiner is placed
/// blind rather than by its claim).
/// </summary>
[Collection(ReceiveSlabCollection.Name)]
public sealed class HandshakeRttTests(ITestOutputHelper output)
{
    [Fact]
    public async Task An_accepted_loopback_connection_reports_a_handshake_RTT_under_50_ms_on_Linux()
    {
        await using var listener = await TcpTransport.Instance.ListenAsync("127.0.0.1:0", default);
        // A true sample in whole milliseconds is taken for none (about one in a thousand): of three
        // handshakes, at least one has a figure, and every figure is plausible.
        var rtts = new List<TimeSpan?>();
        for (int i = 0; i < 3; i++)
        {
            await using var client = await TcpTransport.Instance.ConnectAsync(listener.LocalAddress, default);
            await using var server = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
            Assert.NotNull(server);
            // Only the accepting side reads it.
            Assert.Null(client.HandshakeRtt);
            Assert.False(client.MeasuresHandshake);
            Assert.Equal(OperatingSystem.IsLinux(), server.MeasuresHandshake);
            rtts.Add(server.HandshakeRtt);
        }
        if (!OperatingSystem.IsLinux())
        {
            Assert.All(rtts, r => Assert.Null(r));
            return;
        }
        if (SynCookiesAlways())
        {
            // Every connection is then accepted by cookie, measured in whole milliseconds: no figure.
            SkipOrFail("net.ipv4.tcp_syncookies is 2 (a SYN cookie for every SYN), so no handshake gives a usable RTT: the figures are not checked");
            return;
        }
        // Tens of microseconds on this machine (19-311 µs in 400 handshakes, docs/security.md).
        string said = string.Join(", ", rtts.Select(r => r is { } t ? $"{t.TotalMicroseconds} µs" : "none"));
        Assert.Contains(rtts, r => r is not null);
        Assert.All(rtts, r => Assert.True(r is null || (r > TimeSpan.Zero && r < TimeSpan.FromMilliseconds(50)), $"handshake RTTs on loopback: {said}"));
    }

    [Fact]
    public async Task A_loopback_handshake_reads_no_SYN_ACK_sent_again_on_Linux()
    {
        if (!OperatingSystem.IsLinux()) return;
        // tcpi_total_retrans, at byte 100, read from real sockets: 0 where the first SYN-ACK was answered.
        using var listening = Listening();
        for (int i = 0; i < 3; i++)
        {
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(listening.LocalEndPoint!).WaitAsync(PipeIo.Deadline);
            using var accepted = await listening.AcceptAsync().WaitAsync(PipeIo.Deadline);
            var reading = HandshakeRtt.Read(accepted);
            Assert.True(reading.Measured);
            Assert.Equal(0u, reading.Retransmits);
        }
    }

    [Fact]
    public async Task A_handshake_whose_SYN_ACK_was_sent_again_gives_no_RTT_on_Linux()
    {
        if (!OperatingSystem.IsLinux()) return;
        // With TCP_DEFER_ACCEPT (9) of 1 s the listener ignores the ACK of its first SYN-ACK (no data
        // came with it) and sends the SYN-ACK again when its timer fires, about 1 s later; the
        // client's ACK of that one completes the handshake: the kernel counts one SYN-ACK sent
        // again and takes the figure from the client's timestamp echo (1013-1024 ms, whole
        // milliseconds, in three tries with Python on this machine), as after a first SYN-ACK
        // that a joiner dropped. With tcp_syncookies at 2 the listener answers every SYN with a
        // cookie, so the first ACK completes the handshake and nothing is sent again.
        if (SynCookiesAlways())
        {
            SkipOrFail("net.ipv4.tcp_syncookies is 2 (a SYN cookie for every SYN), so TCP_DEFER_ACCEPT sends no SYN-ACK again");
            return;
        }
        using var listening = Listening();
        listening.SetRawSocketOption(6, 9, BitConverter.GetBytes(1));
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listening.LocalEndPoint!).WaitAsync(PipeIo.Deadline);
        using var accepted = await listening.AcceptAsync().WaitAsync(PipeIo.Deadline);
        var reading = HandshakeRtt.Read(accepted);
        Assert.True(reading.Measured);
        Assert.True(reading.Retransmits >= 1, $"tcpi_total_retrans {reading.Retransmits}");
        Assert.Null(reading.Rtt);
    }

    [Fact]
    public void A_socket_the_read_fails_on_gives_no_RTT_measured_on_Linux_and_throws_nothing()
    {
        // A UDP socket has no TCP_INFO (ENOPROTOOPT), a closed one no descriptor, a listening one no
        // sample. On Linux a failed read is a handshake that gave no usable sample, not a transport
        // that measures none: taken for the latter, the joiner's claimed coordinate would be trusted.
        var failed = OperatingSystem.IsLinux() ? new HandshakeRtt.Reading(true, null, 0) : default;
        using (var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp)) Assert.Equal(failed, HandshakeRtt.Read(udp));
        var closed = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        closed.Dispose();
        Assert.Equal(failed, HandshakeRtt.Read(closed));
        using var listening = Listening();
        Assert.Null(HandshakeRtt.Read(listening).Rtt);
    }

    [Theory]
    [InlineData(0u, 0u, null)] // no sample: tcpi_rtt 0 (with an RTTVAR of 250 ms)
    [InlineData(29u, 0u, 29.0)] // a SYN-ACK sample on loopback, in microseconds
    [InlineData(105_511u, 0u, 105_511.0)] // about 100 ms of queue on a veth, measured
    [InlineData(49_000u, 0u, null)] // whole milliseconds: a timestamp echo (a SYN cookie's, set back up to 63 ms)
    [InlineData(1_023_000u, 1u, null)] // a SYN-ACK sent once again: no sample of the kernel's own (measured with TCP_DEFER_ACCEPT)
    [InlineData(1_234u, 1u, null)] // the same, a figure not in whole milliseconds: still not taken
    [InlineData(29u, 2u, null)] // sent twice again
    public void The_RTT_is_read_from_byte_68_the_SYN_ACKs_sent_again_from_byte_100(uint micros, uint retransmits, double? expected)
    {
        var info = new byte[HandshakeRtt.InfoLength];
        WriteNative(info.AsSpan(68), micros);
        WriteNative(info.AsSpan(100), retransmits);
        var reading = HandshakeRtt.FromTcpInfo(info);
        Assert.True(reading.Measured);
        Assert.Equal(retransmits, reading.Retransmits);
        Assert.Equal(expected, reading.Rtt?.TotalMicroseconds);
        // Too short to hold tcpi_total_retrans (an old kernel's struct): measured, no RTT, as a failed read.
        Assert.Equal(new HandshakeRtt.Reading(true, null, 0), HandshakeRtt.FromTcpInfo(info.AsSpan(0, 100)));
    }

    /// <summary>Writes <paramref name="value"/> as the kernel does, in the machine's byte order.</summary>
    private static void WriteNative(Span<byte> to, uint value)
    {
        if (BitConverter.IsLittleEndian) BinaryPrimitives.WriteUInt32LittleEndian(to, value);
        else BinaryPrimitives.WriteUInt32BigEndian(to, value);
    }

    /// <summary>
    /// A machine setting, not a missing tool, but in CI (<c>SHARDSTREAM_REQUIRE_TOOLS=1</c>, set by
    /// <c>.ci/run</c>) nothing may be skipped silently either: there it fails with the reason.
    /// </summary>
    private void SkipOrFail(string reason)
    {
        if (Environment.GetEnvironmentVariable("SHARDSTREAM_REQUIRE_TOOLS") == "1")
            Assert.Fail($"{reason} (SHARDSTREAM_REQUIRE_TOOLS=1, so this is a failure, not a skip; `sysctl net.ipv4.tcp_syncookies=1` lets the test run)");
        output.WriteLine($"SKIPPED: {reason} (set SHARDSTREAM_REQUIRE_TOOLS=1 to make this a failure)");
    }

    /// <summary>net.ipv4.tcp_syncookies of this network namespace reads 2: every SYN is answered with a cookie.</summary>
    private static bool SynCookiesAlways()
    {
        try
        {
            return File.ReadAllText("/proc/sys/net/ipv4/tcp_syncookies").Trim() == "2";
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static Socket Listening()
    {
        var listening = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listening.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listening.Listen();
        return listening;
    }
}

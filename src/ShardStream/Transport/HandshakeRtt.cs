using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace ShardStream.Transport;

/// <summary>
/// The round trip of an accepted TCP connection's handshake as the kernel measured it: Linux
/// timestamps the SYN-ACK it sends and the ACK that answers it, in softirq, so neither a late
/// <c>accept</c> nor a loaded process adds to it (docs/security.md, "The join", has the
/// measurements). Read with <c>getsockopt(IPPROTO_TCP, TCP_INFO)</c> right after accept, before this
/// side has sent a byte: the smoothed RTT then holds that one sample.
/// </summary>
internal static class HandshakeRtt
{
    // linux/tcp.h: IPPROTO_TCP = 6, TCP_INFO = 11. struct tcp_info opens with 8 bytes of u8 fields,
    // then u32s: tcpi_rtt (microseconds) is the 16th, at byte 68, and tcpi_total_retrans the 24th,
    // at byte 100 (checked against the header of Linux 6.18).
    private const int IpProtoTcp = 6;
    private const int TcpInfo = 11;
    private const int RttOffset = 68;
    private const int TotalRetransOffset = 100;

    /// <summary>The bytes of <c>struct tcp_info</c> read: up to and with <c>tcpi_total_retrans</c>.</summary>
    internal const int InfoLength = TotalRetransOffset + 4;

    /// <summary>
    /// What the kernel said of a handshake. <paramref name="Measured"/>: this side runs on Linux,
    /// which measures handshakes, so a null <paramref name="Rtt"/> means this one gave no usable
    /// sample, or that the read did not say whether it did; false only where there is no
    /// <c>TCP_INFO</c> to read (off Linux). <paramref name="Rtt"/>: the usable sample, if any.
    /// <paramref name="Retransmits"/>: <c>tcpi_total_retrans</c>, which for a connection just
    /// accepted counts the SYN-ACKs sent again (0 where it was not read).
    /// </summary>
    internal readonly record struct Reading(bool Measured, TimeSpan? Rtt, uint Retransmits);

    /// <summary>
    /// A read on Linux that failed, or gave too few bytes to say whether the SYN-ACK was sent again:
    /// measured, with no usable figure, so the joiner is placed as one that claimed no coordinate.
    /// Taken for "not measured", it would have its claim trusted, the hole a SYN-ACK sent again
    /// opens.
    /// </summary>
    internal static readonly Reading Unread = new(true, null, 0);

    /// <summary>
    /// The handshake RTT of <paramref name="socket"/>, just accepted. Its <c>Rtt</c> is null where
    /// the kernel has no usable one: no sample; a SYN-ACK sent again (the kernel then takes no
    /// sample of its own, only the joiner's TCP timestamp echo, whose value the joiner chooses);
    /// or a sample in whole milliseconds, which came from such an echo: that is how a connection
    /// accepted by SYN cookie is measured, and a SYN cookie's timestamp is set back by up to 63 ms
    /// to carry the connection's options (1-62 ms were read on a path of 0.1 ms). A true sample in
    /// whole milliseconds is dropped too (about one in a thousand). Not measured at all off Linux;
    /// on Linux a call that fails gives <see cref="Unread"/>.
    /// </summary>
    public static Reading Read(Socket socket)
    {
        if (!OperatingSystem.IsLinux()) return default;
        Span<byte> info = stackalloc byte[InfoLength];
        int length;
        try
        {
            length = socket.GetRawSocketOption(IpProtoTcp, TcpInfo, info);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or PlatformNotSupportedException)
        {
            return Unread;
        }
        return FromTcpInfo(info[..length]);
    }

    /// <summary>What <see cref="Read"/> makes of the bytes <c>getsockopt</c> gave on Linux.</summary>
    internal static Reading FromTcpInfo(ReadOnlySpan<byte> info)
    {
        // Shorter: an old kernel's struct, which cannot say whether the SYN-ACK was sent again.
        if (info.Length < InfoLength) return Unread;
        // The kernel's own byte order.
        uint micros = MemoryMarshal.Read<uint>(info[RttOffset..]);
        uint retransmits = MemoryMarshal.Read<uint>(info[TotalRetransOffset..]);
        // 0: no sample (the kernel then reports an RTTVAR of 250 ms, its initial one).
        bool usable = retransmits == 0 && micros != 0 && micros % 1000 != 0;
        return new Reading(true, usable ? TimeSpan.FromMicroseconds(micros) : null, retransmits);
    }
}

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
    // linux/tcp.h: IPPROTO_TCP = 6, TCP_INFO = 11; struct tcp_info's tcpi_rtt, a u32 in
    // microseconds, is at byte 68 (8 bytes of u8 fields, then 15 u32s before it).
    private const int IpProtoTcp = 6;
    private const int TcpInfo = 11;
    private const int RttOffset = 68;

    /// <summary>
    /// The handshake RTT of <paramref name="socket"/>, just accepted; null where the kernel has none
    /// to give (not Linux, a failed call, no sample) or where it may be inflated: a sample in whole
    /// milliseconds came from a TCP timestamp echo, not from the SYN-ACK's own send time. That is
    /// how a connection accepted by SYN cookie is measured (and one whose SYN-ACK was sent again),
    /// and a SYN cookie's timestamp is set back by up to 63 ms to carry the connection's options:
    /// 1-62 ms were read on a path of 0.1 ms. A true sample in whole milliseconds is dropped too
    /// (about one in a thousand), which costs only the check.
    /// </summary>
    public static TimeSpan? Read(Socket socket)
    {
        if (!OperatingSystem.IsLinux()) return null;
        Span<byte> info = stackalloc byte[RttOffset + 4];
        int length;
        try
        {
            length = socket.GetRawSocketOption(IpProtoTcp, TcpInfo, info);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or PlatformNotSupportedException)
        {
            return null;
        }
        return FromTcpInfo(info[..length]);
    }

    /// <summary>What <see cref="Read"/> makes of the bytes <c>getsockopt</c> gave.</summary>
    internal static TimeSpan? FromTcpInfo(ReadOnlySpan<byte> info)
    {
        if (info.Length < RttOffset + 4) return null;
        // The kernel's own byte order.
        uint micros = MemoryMarshal.Read<uint>(info[RttOffset..]);
        // 0: no sample (the kernel then reports an RTTVAR of 250 ms, its initial one).
        if (micros == 0 || micros % 1000 == 0) return null;
        return TimeSpan.FromMicroseconds(micros);
    }
}

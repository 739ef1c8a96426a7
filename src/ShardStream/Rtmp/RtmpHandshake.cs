using System.Buffers.Binary;
using System.Security.Cryptography;

namespace ShardStream.Rtmp;

/// <summary>
/// The simple (unsigned) RTMP handshake, section 5.2 of the specification: C0/S0 is the version
/// byte 3; C1/S1 are 1536 bytes (time, four zero bytes, 1528 random bytes); S2 echoes C1 and C2
/// echoes S1. A server keeps S1's bytes 4-7 at zero: ffmpeg, as a player, then skips its check of a
/// digest (the undocumented Flash Player 9 scheme) that it would otherwise run. C2 is read but not
/// compared (clients differ in what they put there). Pure: no I/O.
/// </summary>
public static class RtmpHandshake
{
    public const byte Version = 3;
    public const int PacketLength = 1536;

    /// <summary>C0 + C1 as a server receives them.</summary>
    public const int ClientHelloLength = 1 + PacketLength;

    /// <summary>
    /// The server's S0 + S1 + S2 for a client's C0 + C1 (<see cref="ClientHelloLength"/> bytes).
    /// Throws <see cref="RtmpProtocolException"/> for another version than 3 (6 is RTMPE, which is
    /// not served; anything else is not RTMP).
    /// </summary>
    public static byte[] CreateServerResponse(ReadOnlySpan<byte> c0c1, uint time)
    {
        if (c0c1.Length != ClientHelloLength) throw new ArgumentException($"C0+C1 is {ClientHelloLength} bytes", nameof(c0c1));
        CheckVersion(c0c1[0]);
        var response = new byte[1 + 2 * PacketLength];
        response[0] = Version;
        var s1 = response.AsSpan(1, PacketLength);
        BinaryPrimitives.WriteUInt32BigEndian(s1, time);
        s1.Slice(4, 4).Clear();
        RandomNumberGenerator.Fill(s1[8..]);
        c0c1[1..].CopyTo(response.AsSpan(1 + PacketLength));
        return response;
    }

    /// <summary>
    /// Throws <see cref="RtmpProtocolException"/> when C0 is not version 3. A server checks it as
    /// soon as that byte arrives: a client that is not RTMP (curl or a browser on the RTMP port)
    /// sends far less than C0+C1 and would otherwise wait for the handshake timeout.
    /// </summary>
    public static void CheckVersion(byte c0)
    {
        if (c0 == Version) return;
        if (c0 == 6) throw new RtmpProtocolException("handshake asks for RTMPE (version 6), which is not served");
        string text = c0 is >= 0x20 and < 0x7F ? $" ('{(char)c0}', text{(c0 is (byte)'G' or (byte)'H' or (byte)'P' or (byte)'O' or (byte)'D' ? ": an HTTP request?" : "")})" : "";
        throw new RtmpProtocolException($"handshake version {c0}{text}, not RTMP's 3");
    }

    /// <summary>A client's C0 + C1 (tests and clients).</summary>
    public static byte[] CreateClientHello(uint time)
    {
        var hello = new byte[ClientHelloLength];
        hello[0] = Version;
        BinaryPrimitives.WriteUInt32BigEndian(hello.AsSpan(1), time);
        RandomNumberGenerator.Fill(hello.AsSpan(9));
        return hello;
    }
}

/// <summary>
/// Counts bytes received and says when an Acknowledgement is due (section 5.4.3): after each
/// window of bytes announced by the peer's Window Acknowledgement Size. The sequence number is the
/// byte count so far, which wraps at 2^32 (a long publish passes 4 GiB).
/// </summary>
public sealed class AckCounter
{
    private uint _lastAcked;

    /// <summary>Bytes received so far, modulo 2^32.</summary>
    public uint Received { get; private set; }

    /// <summary>The peer's window; 0 = no acknowledgements asked for.</summary>
    public uint Window { get; set; }

    /// <summary>Adds <paramref name="bytes"/>; true with the sequence number when an acknowledgement is due.</summary>
    public bool Add(long bytes, out uint sequence)
    {
        unchecked
        {
            Received += (uint)bytes;
            sequence = Received;
            if (Window == 0 || Received - _lastAcked < Window) return false;
            _lastAcked = Received;
            return true;
        }
    }
}

/// <summary>Payloads of the protocol control and user control messages (sections 5.4 and 7.1.7).</summary>
public static class RtmpControl
{
    public static byte[] UInt32(uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        return b;
    }

    /// <summary>Set Peer Bandwidth: window size and limit type (0 hard, 1 soft, 2 dynamic).</summary>
    public static byte[] PeerBandwidth(uint window, byte limitType)
    {
        var b = new byte[5];
        BinaryPrimitives.WriteUInt32BigEndian(b, window);
        b[4] = limitType;
        return b;
    }

    /// <summary>A user control event with a 4-byte value (stream id or timestamp).</summary>
    public static byte[] UserControl(UserControlEvent type, uint value)
    {
        var b = new byte[6];
        BinaryPrimitives.WriteUInt16BigEndian(b, (ushort)type);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(2), value);
        return b;
    }

    /// <summary>The 4-byte big-endian value of a control message, or an error naming it.</summary>
    public static uint ReadUInt32(RtmpMessage message)
    {
        if (message.Payload.Length < 4) throw new RtmpProtocolException($"{message.Type} of {message.Payload.Length} bytes (needs 4)");
        return BinaryPrimitives.ReadUInt32BigEndian(message.Payload);
    }
}

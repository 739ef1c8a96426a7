using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

public class HandshakeTests
{
    [Fact]
    public void S2_echoes_C1_and_S1_has_zero_bytes_4_to_7()
    {
        var c0c1 = RtmpHandshake.CreateClientHello(1234);
        c0c1[5] = 9; // a client version in C1's bytes 4-7, as Flash and ffmpeg send
        var s = RtmpHandshake.CreateServerResponse(c0c1, 0x01020304);
        Assert.Equal(1 + 1536 * 2, s.Length);
        Assert.Equal(3, s[0]);
        Assert.Equal(Hex.Bytes("01020304 00000000"), s[1..9]);
        Assert.Equal(c0c1[1..], s[(1 + 1536)..]);
    }

    [Theory]
    [InlineData(6, "RTMPE")]
    [InlineData(0x16, "not RTMP")] // a TLS ClientHello
    public void Other_versions_are_refused(byte version, string reason)
    {
        var c0c1 = RtmpHandshake.CreateClientHello(0);
        c0c1[0] = version;
        var e = Assert.Throws<RtmpProtocolException>(() => RtmpHandshake.CreateServerResponse(c0c1, 0));
        Assert.Contains(reason, e.Message);
    }

    [Fact]
    public void Acknowledgements_come_every_window_and_the_sequence_wraps_at_2_to_32()
    {
        var acks = new AckCounter { Window = 1000 };
        Assert.False(acks.Add(999, out _));
        Assert.True(acks.Add(1, out uint seq));
        Assert.Equal(1000u, seq);
        Assert.False(acks.Add(500, out _));
        // Jump near 2^32: the count wraps and acknowledgements still come every window.
        Assert.True(acks.Add(uint.MaxValue - 1500 - 100, out seq));
        Assert.Equal(uint.MaxValue - 100, seq);
        Assert.True(acks.Add(1000, out seq));
        Assert.Equal(899u, seq); // (2^32 - 1 - 100 + 1000) mod 2^32
        Assert.False(acks.Add(999, out _));
        Assert.True(acks.Add(1, out seq));
        Assert.Equal(1899u, seq);
    }
}

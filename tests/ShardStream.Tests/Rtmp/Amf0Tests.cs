using System.Buffers;
using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

/// <summary>AMF0 (Adobe's AMF0 specification, section 2) against hand-written bytes.</summary>
public class Amf0Tests
{
    // "connect" | 1.0 | { app: "live" }
    private const string Connect =
        "02 0007 636F6E6E656374" +        // string "connect"
        "00 3FF0000000000000" +           // number 1.0
        "03 0003 617070 02 0004 6C697665" + // object: "app" -> "live"
        "0000 09";                        // object end

    [Fact]
    public void Encodes_a_connect_command_as_the_spec_lays_it_out()
    {
        var bytes = Amf0Writer.Encode("connect", 1.0, new AmfObject { { "app", "live" } });
        Assert.Equal(Hex.Bytes(Connect), bytes);
    }

    [Fact]
    public void Decodes_a_connect_command()
    {
        var values = new Amf0Reader(Hex.Bytes(Connect), 8).ReadAll();
        Assert.Equal("connect", values[0]);
        Assert.Equal(1.0, values[1]);
        Assert.Equal("live", Assert.IsType<AmfObject>(values[2]).Get("app"));
    }

    [Fact]
    public void Decodes_the_other_types()
    {
        string hex =
            "01 01" +                                  // true
            "05" + "06" +                              // null, undefined
            "08 00000001 0001 61 00 4000000000000000 0000 09" + // ECMA array {a: 2.0}
            "0A 00000002 00 0000000000000000 02 0001 78" +      // strict array [0.0, "x"]
            "0C 00000002 6869" +                       // long string "hi"
            "0B 0000000000000000 0000" +               // date: the epoch
            "10 0001 43 0001 6B 01 00 0000 09";        // typed object "C" {k: false}
        var v = new Amf0Reader(Hex.Bytes(hex), 8).ReadAll();
        Assert.Equal(true, v[0]);
        Assert.Null(v[1]);
        Assert.Same(AmfUndefined.Value, v[2]);
        var ecma = Assert.IsType<AmfObject>(v[3]);
        Assert.True(ecma.IsEcmaArray);
        Assert.Equal(2.0, ecma.Get("a"));
        Assert.Equal(new object?[] { 0.0, "x" }, Assert.IsType<object?[]>(v[4]));
        Assert.Equal("hi", v[5]);
        Assert.Equal(DateTime.UnixEpoch, v[6]);
        var typed = Assert.IsType<AmfObject>(v[7]);
        Assert.Equal("C", typed.ClassName);
        Assert.Equal(false, typed.Get("k"));
    }

    [Fact]
    public void Nesting_deeper_than_the_limit_is_refused()
    {
        // 20 nested objects {"a": {"a": ...}}
        var hex = string.Concat(Enumerable.Repeat("03 0001 61", 20)) + "05" + string.Concat(Enumerable.Repeat("0000 09", 20));
        Assert.Equal(20, Depth(new Amf0Reader(Hex.Bytes(hex), 20).ReadValue()));
        var e = Assert.Throws<RtmpProtocolException>(() => new Amf0Reader(Hex.Bytes(hex), 16).ReadValue());
        Assert.Contains("nesting deeper than 16", e.Message);
    }

    [Fact]
    public void Deep_strict_arrays_count_as_nesting_too()
    {
        var hex = string.Concat(Enumerable.Repeat("0A 00000001", 100)) + "05";
        Assert.Throws<RtmpProtocolException>(() => new Amf0Reader(Hex.Bytes(hex), 16).ReadValue());
    }

    [Theory]
    [InlineData("0A FFFFFFFF 05")]  // a strict array claiming 4 billion items in 1 byte
    [InlineData("02 0010 6162")]    // a string longer than what is left
    [InlineData("00 3FF0")]         // a number cut short
    [InlineData("03 0001 61")]      // an object without its value and end
    [InlineData("07 0001")]         // a reference (not supported)
    [InlineData("11 00")]           // AMF3 switch (not supported)
    [InlineData("FF")]              // no such marker
    [InlineData("02 0002 C328")]    // invalid UTF-8
    public void Junk_is_refused_with_a_reason(string hex)
    {
        var e = Assert.Throws<RtmpProtocolException>(() => new Amf0Reader(Hex.Bytes(hex), 16).ReadAll());
        Assert.StartsWith("AMF0", e.Message);
    }

    [Fact]
    public void Every_truncation_of_a_command_is_refused_not_crashed()
    {
        var bytes = Hex.Bytes(Connect);
        for (int n = 1; n < bytes.Length; n++)
        {
            var prefix = bytes[..n];
            try
            {
                new Amf0Reader(prefix, 8).ReadAll();
            }
            catch (RtmpProtocolException)
            {
            }
        }
    }

    [Fact]
    public void Strings_over_65535_bytes_are_written_as_long_strings()
    {
        var w = new ArrayBufferWriter<byte>();
        Amf0Writer.WriteString(w, new string('x', 70000));
        Assert.Equal(Hex.Bytes("0C 00011170"), w.WrittenSpan[..5].ToArray());
    }

    private static int Depth(object? v) => v is AmfObject o && o.Count > 0 ? 1 + Depth(o[0].Value) : v is AmfObject ? 1 : 0;
}

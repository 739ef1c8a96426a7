using System.Buffers;
using System.Text.Unicode;
using ShardStream.Transport;

namespace ShardStream.Wire;

/// <summary>
/// What a node checks of a stranger's hello before acting on it, with a one-line reason for the
/// refusal: why a body did not decode, and whether the listen address (which the coordinator hands
/// on to later joiners) is a <c>HOST:PORT</c> at all.
/// </summary>
public static class HelloChecks
{
    /// <summary>
    /// The longest listen address: a 253-character DNS name, the brackets of an IPv6 literal, the
    /// colon and five port digits.
    /// </summary>
    public const int MaxAddressLength = 253 + 2 + 1 + 5;

    /// <summary>Null when <paramref name="address"/> can be handed to other peers; else why not, in one line.</summary>
    public static string? AddressProblem(string address)
    {
        if (address.Length > MaxAddressLength)
            return $"the listen address ({address.Length} characters) is longer than any HOST:PORT ({MaxAddressLength})";
        foreach (char c in address)
            if (char.IsControl(c) || char.IsWhiteSpace(c) || char.IsSurrogate(c))
                return $"the listen address contains U+{(int)c:X4}: not a HOST:PORT";
        try
        {
            var (host, port) = Endpoint.Parse(address);
            if (host.Length == 0) return $"the listen address '{address}' has no host: not a HOST:PORT";
            if (port == 0) return $"the listen address '{address}' has port 0: not a HOST:PORT anyone can connect to";
        }
        catch (FormatException e)
        {
            return $"the listen address is not HOST:PORT: {e.Message}";
        }
        return null;
    }

    /// <summary>Why <see cref="Hello.TryRead"/> refused <paramref name="body"/>, in one line.</summary>
    public static string WhyMalformed(ReadOnlySequence<byte> body)
    {
        var r = new SequenceReader<byte>(body);
        if (!FrameCodec.TryReadUInt32(ref r, out uint magic) || magic != Protocol.Magic) return "malformed hello frame: it does not start with the ShardStream magic";
        if (!FrameCodec.TryReadUInt16(ref r, out _) || !FrameCodec.TryReadUInt16(ref r, out ushort max) || !r.TryRead(out byte role))
            return "malformed hello frame: truncated";
        if (role is < 1 or > 3) return $"malformed hello frame: unknown role {role}";
        if (r.Remaining < 8 + 2) return "malformed hello frame: truncated";
        r.Advance(8 + 2);
        if (!ShardStart.TryReadList(ref r, out _)) return "malformed hello frame: bad shard list";
        if (!r.TryReadBigEndian(out short len)) return "malformed hello frame: truncated";
        int length = (ushort)len;
        if (length > Protocol.MaxStringLength) return $"malformed hello frame: listen address of {length} bytes is over the limit of {Protocol.MaxStringLength}";
        if (r.Remaining < length) return "malformed hello frame: truncated";
        if (!IsUtf8(body.Slice(r.Position, length))) return "malformed hello frame: the listen address is not valid UTF-8";
        r.Advance(length);
        if (max >= Protocol.StreamCheckVersion) return "malformed hello frame: bad nonce, ticket, network coordinate, measured RTTs or stream";
        if (max >= Protocol.PingVersion) return "malformed hello frame: bad nonce, ticket, network coordinate or measured RTTs";
        if (max >= Protocol.SignedStreamVersion) return "malformed hello frame: bad nonce or ticket";
        return r.End ? "malformed hello frame" : $"malformed hello frame: {r.Remaining} byte(s) after the last field";
    }

    private static bool IsUtf8(ReadOnlySequence<byte> bytes)
    {
        var span = bytes.IsSingleSegment ? bytes.FirstSpan : bytes.ToArray();
        return Utf8.IsValid(span);
    }
}

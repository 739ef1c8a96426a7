using System.Buffers.Binary;
using System.Security.Cryptography;
using ShardStream.Wire;

namespace ShardStream.Trust;

/// <summary>
/// A probed peer's answer to a reachability probe (protocol version 16, docs/protocol.md section 6):
/// HMAC-SHA256 under its join token of a fixed label and the prober's fresh nonce. It proves the
/// peer holds the token it sent in its Join without showing it: the coordinator, which read the
/// token in the Join, checks it; anyone else learns a value good for that nonce only, from which
/// the token is found only by trying every 64-bit one.
/// </summary>
public static class ProbeProof
{
    /// <summary>What the MAC covers before the nonce: this use of the token, and no other.</summary>
    private static ReadOnlySpan<byte> Label => "ShardStream reachability probe answer, version 16\0"u8;

    /// <summary>Bytes of a proof.</summary>
    public const int Length = Protocol.ProbeProofLength;

    /// <summary>The proof of <paramref name="token"/> for <paramref name="nonce"/> (the probe Hello's nonce).</summary>
    public static byte[] Compute(ulong token, ReadOnlySpan<byte> nonce)
    {
        if (nonce.Length != Protocol.NonceLength) throw new ArgumentException($"a probe's nonce is {Protocol.NonceLength} bytes, not {nonce.Length}", nameof(nonce));
        Span<byte> key = stackalloc byte[sizeof(ulong)];
        BinaryPrimitives.WriteUInt64BigEndian(key, token);
        Span<byte> message = stackalloc byte[Label.Length + Protocol.NonceLength];
        Label.CopyTo(message);
        nonce.CopyTo(message[Label.Length..]);
        return HMACSHA256.HashData(key, message);
    }

    /// <summary>
    /// The answer to <paramref name="probe"/> (a Hello of role Probe) of a node whose join token is
    /// <paramref name="token"/> (0: it sent no Join) and that serves <paramref name="shardCount"/>
    /// shards: a Welcome with peer id 0 and, at version 16, the proof of the token over the probe's
    /// nonce; never the token itself. A probe that carries no nonce (zeros: a joiner measuring the
    /// RTT to a landmark or a candidate parent, which knows no token to check a proof against) asks
    /// no proof and gets none: over zeros it was one fixed value per token, the same to every asker.
    /// </summary>
    public static Welcome Answer(Hello probe, ulong token, byte shardCount)
    {
        ushort version = Protocol.Negotiate(probe);
        byte[]? proof = version >= Protocol.ProbeProofVersion && token != 0 && AsksProof(probe) ? Compute(token, probe.Nonce!) : null;
        return new Welcome(version, 0, shardCount, 0, 0, [], ProbeProof: proof);
    }

    /// <summary>Whether <paramref name="probe"/> asks for a proof: it carries a nonce that is not all zeros.</summary>
    public static bool AsksProof(Hello probe) => probe.Nonce is { Length: Protocol.NonceLength } nonce && nonce.AsSpan().ContainsAnyExcept((byte)0);

    /// <summary>Whether <paramref name="proof"/> is <paramref name="token"/>'s for <paramref name="nonce"/> (compared in constant time).</summary>
    public static bool Verify(ulong token, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> proof) =>
        proof.Length == Length && nonce.Length == Protocol.NonceLength && CryptographicOperations.FixedTimeEquals(Compute(token, nonce), proof);
}

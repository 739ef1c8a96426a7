using System.Buffers.Binary;
using System.Security.Cryptography;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Tests.Trust;

/// <summary>
/// A probe answer's proof (protocol version 16) is HMAC-SHA256 under the join token of the label
/// and the prober's nonce, as docs/protocol.md gives it, and holds for that token and that nonce only.
/// </summary>
public class ProbeProofTests
{
    [Fact]
    public void The_proof_is_the_documented_HMAC_and_holds_only_for_its_token_and_nonce()
    {
        const ulong token = 0x0123_4567_89ab_cdef;
        byte[] nonce = [.. Enumerable.Range(0, Protocol.NonceLength).Select(i => (byte)(i * 17))];
        byte[] proof = ProbeProof.Compute(token, nonce);

        var key = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(key, token);
        byte[] message = [.. "ShardStream reachability probe answer, version 16\0"u8, .. nonce];
        Assert.Equal(HMACSHA256.HashData(key, message), proof);
        Assert.Equal(Protocol.ProbeProofLength, proof.Length);

        Assert.True(ProbeProof.Verify(token, nonce, proof));
        Assert.False(ProbeProof.Verify(token + 1, nonce, proof));
        byte[] other = [.. nonce];
        other[^1] ^= 1;
        Assert.False(ProbeProof.Verify(token, other, proof));
        Assert.False(ProbeProof.Verify(token, nonce, proof[..^1]));
        Assert.True(proof.AsSpan().IndexOf(key) < 0, "the proof holds the token's bytes");
    }
}

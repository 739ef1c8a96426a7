using System.Buffers.Binary;
using NSec.Cryptography;
using ShardStream.Wire;

namespace ShardStream.Trust;

/// <summary>
/// The stream's identity: the coordinator's Ed25519 public key. Its text form, the stream
/// address, is 64 lowercase hex digits; a viewer passes it with <c>--stream</c> to be sure it
/// watches that stream and no other. Every signature a viewer checks is made under this key, over
/// a message that starts with a label saying what is signed, so that no signature of one kind can
/// pass for another.
/// </summary>
public sealed class StreamKey
{
    private static readonly SignatureAlgorithm Ed25519 = SignatureAlgorithm.Ed25519;
    private readonly PublicKey _key;

    private StreamKey(PublicKey key, byte[] bytes)
    {
        _key = key;
        Bytes = bytes;
    }

    /// <summary>The 32 bytes of the public key.</summary>
    public byte[] Bytes { get; }

    /// <summary>The stream address: the key in lowercase hex.</summary>
    public string Address => Convert.ToHexStringLower(Bytes);

    /// <inheritdoc />
    public override string ToString() => Address;

    /// <summary>A key from its 32 bytes; throws <see cref="ArgumentException"/> when they are not a valid Ed25519 key.</summary>
    public static StreamKey FromBytes(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Protocol.KeyLength || !PublicKey.TryImport(Ed25519, bytes, KeyBlobFormat.RawPublicKey, out var key) || key is null)
            throw new ArgumentException("not an Ed25519 public key");
        return new StreamKey(key, bytes.ToArray());
    }

    /// <summary>Parses a stream address (64 hex digits); throws <see cref="ArgumentException"/> with a reason for a user.</summary>
    public static StreamKey Parse(string address)
    {
        string text = address.Trim();
        if (text.Length != 2 * Protocol.KeyLength || !text.All(Uri.IsHexDigit))
            throw new ArgumentException($"'{address}' is not a stream address: it must be the {2 * Protocol.KeyLength} hex digits the coordinator prints at start");
        try
        {
            return FromBytes(Convert.FromHexString(text));
        }
        catch (ArgumentException)
        {
            throw new ArgumentException($"'{address}' is not a stream address: not a valid Ed25519 public key");
        }
    }

    /// <summary>True when both are the same key.</summary>
    public bool SameAs(StreamKey other) => Bytes.AsSpan().SequenceEqual(other.Bytes);

    internal bool Verify(ReadOnlySpan<byte> message, ReadOnlySpan<byte> signature) =>
        signature.Length == Protocol.SignatureLength && Ed25519.Verify(_key, message, signature);

    /// <summary>Checks the coordinator's answer to a joiner's nonce.</summary>
    internal bool VerifyJoin(ReadOnlySpan<byte> nonce, ulong peerId, ReadOnlySpan<byte> signature) => Verify(Messages.Join(nonce, peerId), signature);

    /// <summary>Checks the signature of an End.</summary>
    internal bool VerifyEnd(in End end) => end.Signature is { } s && Verify(Messages.End(end.FinalSeq, end.FinalOffset), s);

    /// <summary>Checks the signature of a hash list.</summary>
    internal bool VerifyHashList(in HashList list)
    {
        // The message is built on the stack: at most 64 hashes, about 2 KiB (no array per list received).
        Span<byte> message = stackalloc byte[Messages.HashListLength(list.Hashes.Length)];
        Messages.WriteHashList(message, list.Shard, list.FirstSeq, list.Hashes);
        return Verify(message, list.Signature);
    }

    /// <summary>Checks the signature of a stream header.</summary>
    internal bool VerifyHeader(in StreamHeader header) => Verify(Messages.Header(header.Format, header.Generation, header.FromSeq, header.Bytes), header.Signature);

    /// <summary>The exact bytes each kind of signature covers.</summary>
    internal static class Messages
    {
        private static readonly byte[] JoinLabel = "shardstream v2 join\0"u8.ToArray();
        private static readonly byte[] EndLabel = "shardstream v2 end\0"u8.ToArray();
        private static readonly byte[] HashesLabel = "shardstream v2 hashes\0"u8.ToArray();
        private static readonly byte[] TicketLabel = "shardstream v2 ticket\0"u8.ToArray();
        private static readonly byte[] HeaderLabel = "shardstream v5 header\0"u8.ToArray();

        public static byte[] Header(byte format, uint generation, ulong fromSeq, ReadOnlySpan<byte> bytes)
        {
            var m = new byte[HeaderLabel.Length + 1 + 4 + 8 + bytes.Length];
            HeaderLabel.CopyTo(m, 0);
            m[HeaderLabel.Length] = format;
            BinaryPrimitives.WriteUInt32BigEndian(m.AsSpan(HeaderLabel.Length + 1), generation);
            BinaryPrimitives.WriteUInt64BigEndian(m.AsSpan(HeaderLabel.Length + 5), fromSeq);
            bytes.CopyTo(m.AsSpan(HeaderLabel.Length + 13));
            return m;
        }

        public static byte[] Join(ReadOnlySpan<byte> nonce, ulong peerId)
        {
            var m = new byte[JoinLabel.Length + nonce.Length + 8];
            JoinLabel.CopyTo(m, 0);
            nonce.CopyTo(m.AsSpan(JoinLabel.Length));
            BinaryPrimitives.WriteUInt64BigEndian(m.AsSpan(JoinLabel.Length + nonce.Length), peerId);
            return m;
        }

        public static byte[] End(ulong finalSeq, ulong finalOffset)
        {
            var m = new byte[EndLabel.Length + 16];
            EndLabel.CopyTo(m, 0);
            BinaryPrimitives.WriteUInt64BigEndian(m.AsSpan(EndLabel.Length), finalSeq);
            BinaryPrimitives.WriteUInt64BigEndian(m.AsSpan(EndLabel.Length + 8), finalOffset);
            return m;
        }

        public static byte[] HashList(byte shard, ulong firstSeq, ReadOnlySpan<byte> hashes)
        {
            var m = new byte[HashListLength(hashes.Length)];
            WriteHashList(m, shard, firstSeq, hashes);
            return m;
        }

        public static int HashListLength(int hashBytes) => HashesLabel.Length + 1 + 8 + hashBytes;

        public static void WriteHashList(Span<byte> m, byte shard, ulong firstSeq, ReadOnlySpan<byte> hashes)
        {
            HashesLabel.CopyTo(m);
            m[HashesLabel.Length] = shard;
            BinaryPrimitives.WriteUInt64BigEndian(m[(HashesLabel.Length + 1)..], firstSeq);
            hashes.CopyTo(m[(HashesLabel.Length + 9)..]);
        }

        public static byte[] Ticket(ReadOnlySpan<byte> body)
        {
            var m = new byte[TicketLabel.Length + body.Length];
            TicketLabel.CopyTo(m, 0);
            body.CopyTo(m.AsSpan(TicketLabel.Length));
            return m;
        }
    }
}

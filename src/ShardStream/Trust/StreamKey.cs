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

    /// <summary>The exact bytes each kind of signature covers.</summary>
    internal static class Messages
    {
        // Version 9: every message carries the run id right after its label (see StreamRun).
        private static readonly byte[] JoinLabel = "shardstream v9 join\0"u8.ToArray();
        private static readonly byte[] EndLabel = "shardstream v9 end\0"u8.ToArray();
        private static readonly byte[] HashesLabel = "shardstream v9 hashes\0"u8.ToArray();
        private static readonly byte[] TicketLabel = "shardstream v9 ticket\0"u8.ToArray();
        private static readonly byte[] HeaderLabel = "shardstream v9 header\0"u8.ToArray();
        private static readonly byte[] OtherStreamLabel = "shardstream v13 other stream\0"u8.ToArray();

        /// <summary>A message of <paramref name="length"/> bytes after the label and the run id, with both written.</summary>
        private static byte[] Start(byte[] label, ReadOnlySpan<byte> runId, int length, out int at)
        {
            if (runId.Length != Protocol.RunIdLength) throw new ArgumentException($"a run id has {Protocol.RunIdLength} bytes, not {runId.Length}");
            var m = new byte[label.Length + Protocol.RunIdLength + length];
            label.CopyTo(m, 0);
            runId.CopyTo(m.AsSpan(label.Length));
            at = label.Length + Protocol.RunIdLength;
            return m;
        }

        public static byte[] Header(ReadOnlySpan<byte> runId, byte format, uint generation, ulong fromSeq, ReadOnlySpan<byte> bytes)
        {
            var m = Start(HeaderLabel, runId, 1 + 4 + 8 + bytes.Length, out int at);
            m[at] = format;
            BinaryPrimitives.WriteUInt32BigEndian(m.AsSpan(at + 1), generation);
            BinaryPrimitives.WriteUInt64BigEndian(m.AsSpan(at + 5), fromSeq);
            bytes.CopyTo(m.AsSpan(at + 13));
            return m;
        }

        public static byte[] Join(ReadOnlySpan<byte> runId, ReadOnlySpan<byte> nonce, ulong peerId)
        {
            var m = Start(JoinLabel, runId, nonce.Length + 8, out int at);
            nonce.CopyTo(m.AsSpan(at));
            BinaryPrimitives.WriteUInt64BigEndian(m.AsSpan(at + nonce.Length), peerId);
            return m;
        }

        /// <summary>A coordinator's refusal of a joiner that asked for <paramref name="asked"/>, another stream (version 13).</summary>
        public static byte[] OtherStream(ReadOnlySpan<byte> runId, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> asked)
        {
            var m = Start(OtherStreamLabel, runId, nonce.Length + asked.Length, out int at);
            nonce.CopyTo(m.AsSpan(at));
            asked.CopyTo(m.AsSpan(at + nonce.Length));
            return m;
        }

        public static byte[] End(ReadOnlySpan<byte> runId, ulong finalSeq, ulong finalOffset)
        {
            var m = Start(EndLabel, runId, 16, out int at);
            BinaryPrimitives.WriteUInt64BigEndian(m.AsSpan(at), finalSeq);
            BinaryPrimitives.WriteUInt64BigEndian(m.AsSpan(at + 8), finalOffset);
            return m;
        }

        public static byte[] HashList(ReadOnlySpan<byte> runId, byte shard, ulong firstSeq, ReadOnlySpan<byte> hashes)
        {
            var m = new byte[HashListLength(hashes.Length)];
            WriteHashList(m, runId, shard, firstSeq, hashes);
            return m;
        }

        public static int HashListLength(int hashBytes) => HashesLabel.Length + Protocol.RunIdLength + 1 + 8 + hashBytes;

        public static void WriteHashList(Span<byte> m, ReadOnlySpan<byte> runId, byte shard, ulong firstSeq, ReadOnlySpan<byte> hashes)
        {
            if (runId.Length != Protocol.RunIdLength) throw new ArgumentException($"a run id has {Protocol.RunIdLength} bytes, not {runId.Length}");
            HashesLabel.CopyTo(m);
            int at = HashesLabel.Length;
            runId.CopyTo(m[at..]);
            at += Protocol.RunIdLength;
            m[at] = shard;
            BinaryPrimitives.WriteUInt64BigEndian(m[(at + 1)..], firstSeq);
            hashes.CopyTo(m[(at + 9)..]);
        }

        public static byte[] Ticket(ReadOnlySpan<byte> runId, ReadOnlySpan<byte> body)
        {
            var m = Start(TicketLabel, runId, body.Length, out int at);
            body.CopyTo(m.AsSpan(at));
            return m;
        }
    }
}

using ShardStream.Wire;

namespace ShardStream.Trust;

/// <summary>
/// One run of a stream: its key, and the run id its coordinator drew at start
/// (<see cref="Protocol.RunIdLength"/> random bytes). Every signature of the stream covers the run
/// id (protocol version 9): a coordinator restarted with the same key starts a new run, whose
/// chunks carry the same sequence numbers as the old run's, and without the run id a chunk of the
/// old run with its signed hash list would verify in the new one. A peer learns the run id in the
/// Welcome that places it (the coordinator's proof covers it) and checks everything against it.
/// </summary>
public sealed class StreamRun
{
    /// <summary>A run of <paramref name="key"/> with id <paramref name="id"/>.</summary>
    public StreamRun(StreamKey key, byte[] id)
    {
        if (id.Length != Protocol.RunIdLength) throw new ArgumentException($"a run id has {Protocol.RunIdLength} bytes, not {id.Length}");
        Key = key;
        Id = id;
    }

    /// <summary>The stream's key.</summary>
    public StreamKey Key { get; }

    /// <summary>The run id.</summary>
    public byte[] Id { get; }

    /// <summary>The run id in lowercase hex (32 digits), as the coordinator logs it at start.</summary>
    public string IdText => Convert.ToHexStringLower(Id);

    /// <summary>A fresh random run id.</summary>
    public static byte[] NewId() => System.Security.Cryptography.RandomNumberGenerator.GetBytes(Protocol.RunIdLength);

    /// <summary>True when both are the same key and the same run.</summary>
    public bool SameAs(StreamRun other) => Key.SameAs(other.Key) && Id.AsSpan().SequenceEqual(other.Id);

    /// <summary>Checks the coordinator's answer to a joiner's nonce (it also vouches for the run id).</summary>
    internal bool VerifyJoin(ReadOnlySpan<byte> nonce, ulong peerId, ReadOnlySpan<byte> signature) => Key.Verify(StreamKey.Messages.Join(Id, nonce, peerId), signature);

    /// <summary>Checks a coordinator's refusal of a joiner that asked for the stream <paramref name="asked"/> (version 13).</summary>
    internal bool VerifyOtherStream(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> asked, ReadOnlySpan<byte> signature) => Key.Verify(StreamKey.Messages.OtherStream(Id, nonce, asked), signature);

    /// <summary>Checks the signature of an End.</summary>
    internal bool VerifyEnd(in End end) => end.Signature is { } s && Key.Verify(StreamKey.Messages.End(Id, end.FinalSeq, end.FinalOffset), s);

    /// <summary>Checks the signature of a hash list.</summary>
    internal bool VerifyHashList(in HashList list)
    {
        // The message is built on the stack: at most 64 hashes, about 2 KiB (no array per list received).
        Span<byte> message = stackalloc byte[StreamKey.Messages.HashListLength(list.Hashes.Length)];
        StreamKey.Messages.WriteHashList(message, Id, list.Shard, list.FirstSeq, list.Hashes);
        return Key.Verify(message, list.Signature);
    }

    /// <summary>Checks the signature of a stream header.</summary>
    internal bool VerifyHeader(in StreamHeader header) => Key.Verify(StreamKey.Messages.Header(Id, header.Format, header.Generation, header.FromSeq, header.Bytes), header.Signature);

    /// <summary>Checks the signature over an admission ticket's body.</summary>
    internal bool VerifyTicket(ReadOnlySpan<byte> body, ReadOnlySpan<byte> signature) => Key.Verify(StreamKey.Messages.Ticket(Id, body), signature);
}

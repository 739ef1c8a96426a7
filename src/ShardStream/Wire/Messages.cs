using System.Buffers;

namespace ShardStream.Wire;

/// <summary>Why a connection is opened.</summary>
public enum HelloRole : byte
{
    /// <summary>A new peer asks where to attach. The coordinator places it; any other node redirects it to the coordinator.</summary>
    Join = 1,

    /// <summary>A placed peer asks this node to serve it some shards from given sequence numbers.</summary>
    Attach = 2,

    /// <summary>
    /// Version 4: the coordinator checks that a joiner accepts connections at its advertised
    /// address; the node answers with a Welcome carrying its join token (docs/protocol.md, section 6).
    /// </summary>
    Probe = 3,
}

/// <summary>One shard and the first chunk sequence number wanted of it.</summary>
public readonly record struct ShardStart(byte Shard, ulong FromSeq)
{
    /// <summary>Bytes of a list of <paramref name="count"/> entries: a count byte, then shard and u64 each.</summary>
    internal static int ListSize(int count) => 1 + count * 9;

    internal static void WriteList(ref SpanWriter w, ShardStart[] list)
    {
        w.WriteByte((byte)list.Length);
        foreach (var s in list)
        {
            w.WriteByte(s.Shard);
            w.WriteUInt64(s.FromSeq);
        }
    }

    internal static bool TryReadList(ref SequenceReader<byte> r, out ShardStart[] list)
    {
        list = [];
        if (!r.TryRead(out byte count) || count > Protocol.MaxShards) return false;
        var shards = new ShardStart[count];
        for (int i = 0; i < count; i++)
        {
            if (!r.TryRead(out byte shard) || !FrameCodec.TryReadUInt64(ref r, out ulong from)) return false;
            shards[i] = new ShardStart(shard, from);
        }
        list = shards;
        return true;
    }
}

/// <summary>How a shard is provided to a peer.</summary>
public enum AssignmentKind : byte
{
    /// <summary>This connection carries the shard, starting at <see cref="ShardAssignment.FromSeq"/>.</summary>
    Served = 0,

    /// <summary>Connect to <see cref="ShardAssignment.Address"/> (node <see cref="ShardAssignment.ParentId"/>) for the shard.</summary>
    Redirect = 1,
}

/// <summary>An entry of a welcome or a move: where one shard comes from.</summary>
/// <param name="Ticket">Redirect: the coordinator's admission ticket for that parent (empty: none).</param>
public readonly record struct ShardAssignment(byte Shard, AssignmentKind Kind, ulong ParentId, ulong FromSeq, string Address, byte[]? Ticket = null)
{
    internal int Size => 1 + 1 + 8 + 8 + FrameCodec.StringSize(Address) + 1 + (Ticket?.Length ?? 0);

    internal void Write(ref SpanWriter w)
    {
        w.WriteByte(Shard);
        w.WriteByte((byte)Kind);
        w.WriteUInt64(ParentId);
        w.WriteUInt64(FromSeq);
        FrameCodec.WriteString(ref w, Address);
        FrameCodec.WriteBytes8(ref w, Ticket);
    }

    internal static bool TryRead(ref SequenceReader<byte> r, out ShardAssignment value)
    {
        value = default;
        if (!r.TryRead(out byte shard) || !r.TryRead(out byte kind) || kind > 1
            || !FrameCodec.TryReadUInt64(ref r, out ulong parent) || !FrameCodec.TryReadUInt64(ref r, out ulong from)
            || !FrameCodec.TryReadString(ref r, out string address) || !FrameCodec.TryReadBytes8(ref r, Protocol.MaxTicketLength, out byte[] ticket))
            return false;
        value = new ShardAssignment(shard, (AssignmentKind)kind, parent, from, address, ticket.Length == 0 ? null : ticket);
        return true;
    }
}

/// <summary>Writes whole frames whose body size is known up front.</summary>
internal static class FrameWriting
{
    public delegate void BodyWriter<T>(in T message, ref SpanWriter w);

    public static void Write<T>(IBufferWriter<byte> writer, FrameType type, int bodySize, in T message, BodyWriter<T> body)
    {
        FrameCodec.WriteHeader(writer, type, bodySize);
        var span = writer.GetSpan(bodySize);
        var w = new SpanWriter(span);
        body(in message, ref w);
        writer.Advance(bodySize);
    }

    /// <summary>Writes a frame whose whole body is one big-endian u64.</summary>
    public static void WriteUInt64Frame(IBufferWriter<byte> writer, FrameType type, ulong value) =>
        Write(writer, type, 8, in value, static (in ulong v, ref SpanWriter w) => w.WriteUInt64(v));

    /// <summary>Reads a body that is exactly one big-endian u64.</summary>
    public static bool TryReadUInt64Body(ref SequenceReader<byte> r, out ulong value) => FrameCodec.TryReadUInt64(ref r, out value) && r.End;

    /// <summary>Reads a body that is exactly one big-endian u64 into the message <paramref name="make"/> makes of it (of what was read, when false).</summary>
    public static bool TryReadUInt64Body<T>(ref SequenceReader<byte> r, Func<ulong, T> make, out T value)
    {
        bool ok = TryReadUInt64Body(ref r, out ulong v);
        value = make(v);
        return ok;
    }

    /// <summary>The bytes <paramref name="write"/> writes; <paramref name="sizeHint"/>: what it will write, when known (no growing copies).</summary>
    public static byte[] ToArray(Action<IBufferWriter<byte>> write, int sizeHint = 64)
    {
        var buffer = new ArrayBufferWriter<byte>(sizeHint);
        write(buffer);
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>
    /// The whole frame around a body as it was received, to forward it as it came instead of
    /// decoding and encoding it again (for a body whose reader accepts only the one encoding).
    /// </summary>
    public static byte[] FromBody(FrameType type, in ReadOnlySequence<byte> body)
    {
        var frame = new byte[Protocol.FrameHeaderLength + (int)body.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(frame, (uint)(1 + body.Length));
        frame[4] = (byte)type;
        body.CopyTo(frame.AsSpan(Protocol.FrameHeaderLength));
        return frame;
    }
}

/// <summary>The first frame of a connection, from the side that connected.</summary>
/// <param name="MinVersion">The oldest protocol version the sender speaks.</param>
/// <param name="MaxVersion">The newest protocol version the sender speaks.</param>
/// <param name="Role">Join (where do I go?) or attach (serve me these shards).</param>
/// <param name="PeerId">Attach: the sender's id as the coordinator gave it. Join: 0.</param>
/// <param name="UploadPercent">Join: what the sender may upload, in percent of the stream rate; <see cref="DefaultUpload"/> for the default of K+1 shard-streams.</param>
/// <param name="Shards">Attach: the shards wanted and the first sequence number of each.</param>
/// <param name="ListenAddress">Where the sender accepts children.</param>
/// <param name="Nonce">
/// Version 3, join: 16 random bytes the coordinator signs to prove it holds the stream's key. Probe
/// (version 16): the prober's fresh random bytes, over which the probed peer proves its join token
/// (<see cref="Welcome.ProbeProof"/>). Null: zeros.
/// </param>
/// <param name="Ticket">Version 3, attach: the admission ticket the coordinator gave for this parent (null: none).</param>
/// <param name="Coordinate">Version 6: the sender's network coordinate (null: unknown).</param>
/// <param name="Measured">Version 6, join: the RTTs the joiner measured to the nodes a Landmarks frame named (null: none).</param>
/// <param name="Stream">
/// Version 13, join, optional: the stream's key (<see cref="Protocol.KeyLength"/> bytes) the joiner
/// will accept, its <c>--stream</c> or the key it pinned at its first join; a coordinator of another
/// stream refuses it before placing it. Null: the joiner names none (the body ends after <paramref name="Measured"/>).
/// </param>
public readonly record struct Hello(ushort MinVersion, ushort MaxVersion, HelloRole Role, ulong PeerId, ushort UploadPercent, ShardStart[] Shards, string ListenAddress,
    byte[]? Nonce = null, byte[]? Ticket = null, WireCoordinate? Coordinate = null, MeasuredRtt[]? Measured = null, byte[]? Stream = null)
{
    /// <summary>The <see cref="UploadPercent"/> that asks for the default budget.</summary>
    public const ushort DefaultUpload = ushort.MaxValue;

    /// <summary>
    /// The largest length field a hello can have (a full shard list, the longest string, the nonce and
    /// the longest ticket, a coordinate and a full list of measured RTTs). A Join's stream (version 13,
    /// <see cref="Protocol.KeyLength"/> bytes) is shorter than the ticket a Join leaves empty, so the
    /// longest Join that names its stream is <see cref="Protocol.MaxTicketLength"/> − 32 bytes under it.
    /// </summary>
    public const int MaxFrameLength = 1 + 4 + 2 + 2 + 1 + 8 + 2 + 1 + Protocol.MaxShards * 9 + 2 + Protocol.MaxStringLength + Protocol.NonceLength + 1 + Protocol.MaxTicketLength + WireCoordinate.Length + 1 + Protocol.MaxShards * MeasuredRtt.Length;

    private int Size => 4 + 2 + 2 + 1 + 8 + 2 + ShardStart.ListSize(Shards.Length) + FrameCodec.StringSize(ListenAddress)
        + (MaxVersion >= Protocol.SignedStreamVersion ? Protocol.NonceLength + 1 + (Ticket?.Length ?? 0) : 0)
        + (MaxVersion >= Protocol.PingVersion ? WireCoordinate.Length + 1 + ((Measured?.Length ?? 0) * MeasuredRtt.Length) : 0)
        + (NamesStream ? Protocol.KeyLength : 0);

    /// <summary>True when the frame carries <see cref="Stream"/>: a version-13 Join that names one.</summary>
    private bool NamesStream => Stream is not null && MaxVersion >= Protocol.StreamCheckVersion && Role == HelloRole.Join;

    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.Hello, Size, in this, static (in Hello m, ref SpanWriter w) =>
    {
        w.WriteUInt32(Protocol.Magic);
        w.WriteUInt16(m.MinVersion);
        w.WriteUInt16(m.MaxVersion);
        w.WriteByte((byte)m.Role);
        w.WriteUInt64(m.PeerId);
        w.WriteUInt16(m.UploadPercent);
        ShardStart.WriteList(ref w, m.Shards);
        FrameCodec.WriteString(ref w, m.ListenAddress);
        if (m.MaxVersion < Protocol.SignedStreamVersion) return; // an older hello (tests of the negotiation) has no extension
        FrameCodec.WriteFixed(ref w, m.Nonce, Protocol.NonceLength);
        FrameCodec.WriteBytes8(ref w, m.Ticket);
        if (m.MaxVersion < Protocol.PingVersion) return;
        (m.Coordinate ?? WireCoordinate.Unknown).Write(ref w);
        MeasuredRtt.WriteList(ref w, m.Measured);
        if (m.NamesStream) FrameCodec.WriteFixed(ref w, m.Stream, Protocol.KeyLength);
    });

    /// <summary>Reads a hello body; false when it is truncated or malformed.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Hello value)
    {
        value = default;
        if (!FrameCodec.TryReadUInt32(ref r, out uint magic) || magic != Protocol.Magic) return false;
        if (!FrameCodec.TryReadUInt16(ref r, out ushort min) || !FrameCodec.TryReadUInt16(ref r, out ushort max)) return false;
        if (!r.TryRead(out byte role) || role is < 1 or > 3) return false;
        if (!FrameCodec.TryReadUInt64(ref r, out ulong peerId) || !FrameCodec.TryReadUInt16(ref r, out ushort upload)) return false;
        if (!ShardStart.TryReadList(ref r, out var shards)) return false;
        if (!FrameCodec.TryReadString(ref r, out string address)) return false;
        if (max < Protocol.SignedStreamVersion)
        {
            if (!r.End) return false;
            // An older hello: read, so that the version check can answer with the reason.
            value = new Hello(min, max, (HelloRole)role, peerId, upload, shards, address);
            return true;
        }
        var nonce = new byte[Protocol.NonceLength];
        if (!r.TryCopyTo(nonce)) return false;
        r.Advance(Protocol.NonceLength);
        if (!FrameCodec.TryReadBytes8(ref r, Protocol.MaxTicketLength, out byte[] ticket)) return false;
        WireCoordinate? coordinate = null;
        MeasuredRtt[]? measured = null;
        if (max >= Protocol.PingVersion)
        {
            if (!WireCoordinate.TryRead(ref r, out var c) || !MeasuredRtt.TryReadList(ref r, out measured)) return false;
            coordinate = c;
        }
        // Version 13: a Join may end with the stream it asks for; nothing else follows, in any hello.
        byte[]? stream = null;
        if (max >= Protocol.StreamCheckVersion && role == (byte)HelloRole.Join && r.Remaining == Protocol.KeyLength)
            FrameCodec.TryReadFixed(ref r, Protocol.KeyLength, out stream);
        if (!r.End) return false;
        value = new Hello(min, max, (HelloRole)role, peerId, upload, shards, address, nonce, ticket.Length == 0 ? null : ticket, coordinate, measured, stream);
        return true;
    }
}

/// <summary>The answer to a hello.</summary>
/// <param name="Version">The protocol version the connection speaks from now on.</param>
/// <param name="PeerId">The id of the joining peer (0 in a redirect to the coordinator).</param>
/// <param name="ShardCount">K, the stream's shard count.</param>
/// <param name="StartSeq">The join point: the first chunk the peer will write.</param>
/// <param name="StartOffset">The stream offset of that chunk.</param>
/// <param name="Shards">Where each shard comes from.</param>
/// <param name="Proof">
/// Placement: the stream's public key (32 bytes) and the coordinator's signature (64 bytes) over
/// the joiner's nonce, its new id and the run id, proving it holds the key. Null in a redirect or a service welcome.
/// </param>
/// <param name="RunId">
/// Version 9, placement: the run id the coordinator drew at start (<see cref="Protocol.RunIdLength"/>
/// bytes); every signature of this run covers it. Null in a redirect or a service welcome.
/// </param>
/// <param name="ProbeProof">
/// Version 16, the answer to a probe only, optional: the probed peer's proof that it holds its join
/// token, over the probe's nonce (<see cref="Protocol.ProbeProofLength"/> bytes, HMAC-SHA256: <c>Trust.ProbeProof</c>);
/// the body then ends with it. Null: none (a node that sent no Join, or any other Welcome), and the
/// body ends after <paramref name="RunId"/>.
/// </param>
public readonly record struct Welcome(ushort Version, ulong PeerId, byte ShardCount, ulong StartSeq, ulong StartOffset, ShardAssignment[] Shards, byte[]? Proof = null, byte[]? RunId = null,
    byte[]? ProbeProof = null)
{
    /// <summary>Bytes of a proof: the public key and the signature.</summary>
    public const int ProofLength = Protocol.KeyLength + Protocol.SignatureLength;

    private int Size
    {
        get
        {
            int size = 2 + 8 + 1 + 8 + 8 + 1 + 1 + (Proof?.Length ?? 0) + 1 + (RunId?.Length ?? 0) + (ProbeProof is null ? 0 : Protocol.ProbeProofLength);
            foreach (var s in Shards) size += s.Size;
            return size;
        }
    }

    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.Welcome, Size, in this, static (in Welcome m, ref SpanWriter w) =>
    {
        w.WriteUInt16(m.Version);
        w.WriteUInt64(m.PeerId);
        w.WriteByte(m.ShardCount);
        w.WriteUInt64(m.StartSeq);
        w.WriteUInt64(m.StartOffset);
        w.WriteByte((byte)m.Shards.Length);
        foreach (var s in m.Shards) s.Write(ref w);
        FrameCodec.WriteBytes8(ref w, m.Proof);
        FrameCodec.WriteBytes8(ref w, m.RunId);
        if (m.ProbeProof is not null) FrameCodec.WriteFixed(ref w, m.ProbeProof, Protocol.ProbeProofLength);
    });

    /// <summary>Reads a welcome body; false when it is truncated or malformed.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Welcome value)
    {
        value = default;
        if (!FrameCodec.TryReadUInt16(ref r, out ushort version) || !FrameCodec.TryReadUInt64(ref r, out ulong peerId)) return false;
        if (!r.TryRead(out byte k) || k is 0 or > Protocol.MaxShards) return false;
        if (!FrameCodec.TryReadUInt64(ref r, out ulong startSeq) || !FrameCodec.TryReadUInt64(ref r, out ulong startOffset)) return false;
        if (!r.TryRead(out byte count) || count > Protocol.MaxShards) return false;
        var shards = new ShardAssignment[count];
        for (int i = 0; i < count; i++)
            if (!ShardAssignment.TryRead(ref r, out shards[i])) return false;
        if (!FrameCodec.TryReadBytes8(ref r, ProofLength, out byte[] proof) || proof.Length is not (0 or ProofLength)) return false;
        if (!FrameCodec.TryReadBytes8(ref r, Protocol.RunIdLength, out byte[] runId) || runId.Length is not (0 or Protocol.RunIdLength)) return false;
        byte[]? probeProof = null;
        if (!r.End && (r.Remaining != Protocol.ProbeProofLength || !FrameCodec.TryReadFixed(ref r, Protocol.ProbeProofLength, out probeProof))) return false;
        value = new Welcome(version, peerId, k, startSeq, startOffset, shards, proof.Length == 0 ? null : proof, runId.Length == 0 ? null : runId, probeProof);
        return true;
    }
}

/// <summary>The fixed part of a chunk frame; the payload follows it to the end of the frame.</summary>
public readonly record struct ChunkHeader(byte Shard, ulong Seq, ulong Offset)
{
    /// <summary>Writes the whole frame: header and <paramref name="payload"/>.</summary>
    public void Write(IBufferWriter<byte> writer, ReadOnlySpan<byte> payload)
    {
        int frameSize = FramePrefixLength + payload.Length;
        var span = writer.GetSpan(frameSize);
        WritePrefix(span, payload.Length);
        payload.CopyTo(span[FramePrefixLength..]);
        writer.Advance(frameSize);
    }

    /// <summary>Bytes of a chunk frame before its payload: the frame header and the chunk header.</summary>
    public const int FramePrefixLength = Protocol.FrameHeaderLength + Protocol.ChunkHeaderLength;

    /// <summary>
    /// Writes the first <see cref="FramePrefixLength"/> bytes of a chunk frame whose payload has
    /// <paramref name="payloadLength"/> bytes, for a gathered send that takes the payload from
    /// where it already is.
    /// </summary>
    public void WritePrefix(Span<byte> destination, int payloadLength)
    {
        var w = new SpanWriter(destination);
        w.WriteUInt32((uint)(1 + Protocol.ChunkHeaderLength + payloadLength));
        w.WriteByte((byte)FrameType.Chunk);
        w.WriteByte(Shard);
        w.WriteUInt64(Seq);
        w.WriteUInt64(Offset);
    }

    /// <summary>Reads the header of a chunk body and returns the payload that follows.</summary>
    public static bool TryRead(ReadOnlySequence<byte> body, out ChunkHeader header, out ReadOnlySequence<byte> payload)
    {
        header = default;
        payload = default;
        var r = new SequenceReader<byte>(body);
        if (!r.TryRead(out byte shard) || !FrameCodec.TryReadUInt64(ref r, out ulong seq) || !FrameCodec.TryReadUInt64(ref r, out ulong offset))
            return false;
        payload = body.Slice(Protocol.ChunkHeaderLength);
        if (payload.Length is 0 or > Protocol.MaxChunkLength) return false;
        header = new ChunkHeader(shard, seq, offset);
        return true;
    }
}

/// <summary>
/// The end of one shard's stream. The whole stream has <paramref name="FinalSeq"/> chunks and
/// <paramref name="FinalOffset"/> bytes; <paramref name="Signature"/> is the coordinator's over
/// those two numbers (the same End is signed once for every shard).
/// </summary>
public readonly record struct End(byte Shard, ulong FinalSeq, ulong FinalOffset, byte[]? Signature = null)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.End, 17 + Protocol.SignatureLength, in this, static (in End m, ref SpanWriter w) =>
    {
        w.WriteByte(m.Shard);
        w.WriteUInt64(m.FinalSeq);
        w.WriteUInt64(m.FinalOffset);
        FrameCodec.WriteFixed(ref w, m.Signature, Protocol.SignatureLength);
    });

    /// <summary>Reads an end body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out End value)
    {
        value = default;
        if (!r.TryRead(out byte shard) || !FrameCodec.TryReadUInt64(ref r, out ulong seq) || !FrameCodec.TryReadUInt64(ref r, out ulong offset)
            || r.Remaining != Protocol.SignatureLength)
            return false;
        var signature = new byte[Protocol.SignatureLength];
        r.TryCopyTo(signature);
        r.Advance(Protocol.SignatureLength);
        value = new End(shard, seq, offset, signature);
        return true;
    }
}

/// <summary>Why a connection is closed.</summary>
public enum GoodbyeCode : ushort
{
    /// <summary>Orderly close (stream over, leaving on purpose).</summary>
    Normal = 0,

    /// <summary>The remote side broke the protocol.</summary>
    ProtocolError = 1,

    /// <summary>No protocol version in common.</summary>
    VersionMismatch = 2,

    /// <summary>The receiver did not keep up and was cut off.</summary>
    TooSlow = 3,

    /// <summary>The request cannot be served (no capacity, unknown shard, not the coordinator).</summary>
    Refused = 4,

    /// <summary>Nothing was heard within the heartbeat timeout.</summary>
    Timeout = 5,

    /// <summary>The node is shutting down.</summary>
    ShuttingDown = 6,

    /// <summary>The coordinator has too many joins in progress: try again after a backoff (a node that does not know this code takes it as a refusal).</summary>
    Busy = 7,

    /// <summary>
    /// Version 13: the joiner's Join named another stream than this coordinator's; it is not placed.
    /// The Goodbye carries the coordinator's key, a signature over the joiner's nonce and the stream
    /// it asked for, and the run id (<see cref="Goodbye.Proof"/>), so the joiner can tell which stream it reached.
    /// </summary>
    OtherStream = 8,

    /// <summary>
    /// The coordinator lists another session under the join token of this first join (another node
    /// joined with it first): the joiner draws a new token and joins again as new (a node that does
    /// not know this code takes it as a refusal).
    /// </summary>
    TokenTaken = 9,
}

/// <summary>Closes a connection with a reason that the other side logs.</summary>
/// <param name="Proof">
/// Code <see cref="GoodbyeCode.OtherStream"/> only (version 13): the coordinator's public key (32
/// bytes) and its signature (64) over the joiner's nonce and the stream the joiner asked for, with
/// <paramref name="RunId"/>. Null for every other code: the body then ends after the reason.
/// </param>
/// <param name="RunId">With <paramref name="Proof"/>: the coordinator's run id, which the signature covers.</param>
public readonly record struct Goodbye(GoodbyeCode Code, string Reason, byte[]? Proof = null, byte[]? RunId = null)
{
    private bool Proves => Code == GoodbyeCode.OtherStream;

    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.Goodbye,
        2 + FrameCodec.StringSize(Reason) + (Proves ? Welcome.ProofLength + Protocol.RunIdLength : 0), in this, static (in Goodbye m, ref SpanWriter w) =>
    {
        w.WriteUInt16((ushort)m.Code);
        FrameCodec.WriteString(ref w, m.Reason);
        if (!m.Proves) return;
        FrameCodec.WriteFixed(ref w, m.Proof, Welcome.ProofLength);
        FrameCodec.WriteFixed(ref w, m.RunId, Protocol.RunIdLength);
    });

    /// <summary>Reads a goodbye body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Goodbye value)
    {
        value = default;
        if (!TryReadHead(ref r, out var code, out string reason)) return false;
        byte[]? proof = null, runId = null;
        if (code == GoodbyeCode.OtherStream
            && (r.Remaining != Welcome.ProofLength + Protocol.RunIdLength
                || !FrameCodec.TryReadFixed(ref r, Welcome.ProofLength, out proof) || !FrameCodec.TryReadFixed(ref r, Protocol.RunIdLength, out runId)))
            return false;
        if (!r.End) return false;
        value = new Goodbye(code, reason, proof, runId);
        return true;
    }

    /// <summary>
    /// The code and reason of a Goodbye(<see cref="GoodbyeCode.OtherStream"/>) whose proof is missing
    /// or cut (<see cref="TryRead"/> refuses it): what it claims, for the joiner to say that it proved
    /// nothing. Null for any other body.
    /// </summary>
    public static Goodbye? TryReadUnproved(ReadOnlySequence<byte> body)
    {
        var r = new SequenceReader<byte>(body);
        return TryReadHead(ref r, out var code, out string reason) && code == GoodbyeCode.OtherStream ? new Goodbye(code, reason) : null;
    }

    private static bool TryReadHead(ref SequenceReader<byte> r, out GoodbyeCode code, out string reason)
    {
        reason = "";
        code = default;
        if (!FrameCodec.TryReadUInt16(ref r, out ushort value) || !FrameCodec.TryReadString(ref r, out reason)) return false;
        code = (GoodbyeCode)value;
        return true;
    }
}

/// <summary>
/// A keep-alive; the value is free for the sender (a counter or a timestamp). Version 6 may add
/// the sender's network coordinate (a body of 24 bytes instead of 8); version 11, on a peer's
/// control link, after the coordinate, the RTTs the peer measured to its parents (a u8 count, at
/// most <see cref="Protocol.MaxShards"/>, then 18 bytes each: <see cref="ParentRtt"/>); version 14,
/// from the coordinator on a control link, after the coordinate and an empty list of parent RTTs,
/// the stream's head: the next chunk sequence number at the source (u64).
/// </summary>
public readonly record struct Heartbeat(ulong Value, WireCoordinate? Coordinate = null, ParentRtt[]? ParentRtts = null, ulong? Head = null)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer)
    {
        if (Coordinate is null)
        {
            FrameWriting.WriteUInt64Frame(writer, FrameType.Heartbeat, Value);
            return;
        }
        bool list = ParentRtts is not null || Head is not null;
        int length = 8 + WireCoordinate.Length + (list ? 1 + ((ParentRtts?.Length ?? 0) * ParentRtt.Length) : 0) + (Head is null ? 0 : 8);
        FrameWriting.Write(writer, FrameType.Heartbeat, length, in this, static (in Heartbeat m, ref SpanWriter w) =>
        {
            w.WriteUInt64(m.Value);
            m.Coordinate!.Value.Write(ref w);
            if (m.ParentRtts is not null || m.Head is not null) ParentRtt.WriteList(ref w, m.ParentRtts ?? []);
            if (m.Head is { } head) w.WriteUInt64(head);
        });
    }

    /// <summary>Reads a heartbeat body: 8 bytes, 24 with a coordinate, 25 and more with a coordinate and parent RTTs, and 8 more with the head.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Heartbeat value)
    {
        value = default;
        if (!FrameCodec.TryReadUInt64(ref r, out ulong v)) return false;
        if (r.End)
        {
            value = new Heartbeat(v);
            return true;
        }
        if (!WireCoordinate.TryRead(ref r, out var coordinate)) return false;
        if (r.End)
        {
            value = new Heartbeat(v, coordinate);
            return true;
        }
        if (!ParentRtt.TryReadList(ref r, out var parents)) return false;
        if (r.End)
        {
            value = new Heartbeat(v, coordinate, parents);
            return true;
        }
        if (!FrameCodec.TryReadUInt64(ref r, out ulong head) || !r.End) return false;
        value = new Heartbeat(v, coordinate, parents, head);
        return true;
    }
}

/// <summary>Peer to coordinator: connected to a parent for every shard (also sent after each repair).</summary>
public readonly record struct Attached(ulong PeerId)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.WriteUInt64Frame(writer, FrameType.Attached, PeerId);

    /// <summary>Reads an attached body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Attached value) => FrameWriting.TryReadUInt64Body(ref r, static v => new Attached(v), out value);
}

/// <summary>Coordinator to peer: take the listed shards from new parents.</summary>
public readonly record struct Move(ShardAssignment[] Shards)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer)
    {
        int size = 1;
        foreach (var s in Shards) size += s.Size;
        FrameWriting.Write(writer, FrameType.Move, size, in this, static (in Move m, ref SpanWriter w) =>
        {
            w.WriteByte((byte)m.Shards.Length);
            foreach (var s in m.Shards) s.Write(ref w);
        });
    }

    /// <summary>Reads a move body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Move value)
    {
        value = default;
        if (!r.TryRead(out byte count) || count > Protocol.MaxShards) return false;
        var shards = new ShardAssignment[count];
        for (int i = 0; i < count; i++)
            if (!ShardAssignment.TryRead(ref r, out shards[i])) return false;
        if (!r.End) return false;
        value = new Move(shards);
        return true;
    }
}

/// <summary>
/// Peer to coordinator: the connection to parent <paramref name="ParentId"/> for these shards is
/// gone. A non-empty <paramref name="Violation"/> says the peer cut that parent off for what it
/// sent (a chunk that failed verification, a frame it may not send) and why. <paramref name="Cause"/>
/// (version 15; written only when not <see cref="LossCause.Lost"/>): the peer cut it off for what
/// it did not send.
/// </summary>
public readonly record struct ParentLost(ulong ParentId, ShardStart[] Shards, string Violation = "", LossCause Cause = LossCause.Lost)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.ParentLost, 8 + ShardStart.ListSize(Shards.Length) + FrameCodec.StringSize(Violation ?? "") + (Cause == LossCause.Lost ? 0 : 1), in this, static (in ParentLost m, ref SpanWriter w) =>
    {
        w.WriteUInt64(m.ParentId);
        ShardStart.WriteList(ref w, m.Shards);
        FrameCodec.WriteString(ref w, m.Violation ?? "");
        if (m.Cause != LossCause.Lost) w.WriteByte((byte)m.Cause);
    });

    /// <summary>Reads a parent-lost body, with or without the cause; a cause byte other than <see cref="LossCause.Lag"/> (never written: <see cref="LossCause.Lost"/> is said by its absence) makes it malformed, as any trailing byte.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out ParentLost value)
    {
        value = default;
        if (!FrameCodec.TryReadUInt64(ref r, out ulong parent) || !ShardStart.TryReadList(ref r, out var shards)
            || !FrameCodec.TryReadString(ref r, out string violation)) return false;
        var cause = LossCause.Lost;
        if (!r.End)
        {
            if (!r.TryRead(out byte b) || b != (byte)LossCause.Lag || !r.End) return false;
            cause = LossCause.Lag;
        }
        value = new ParentLost(parent, shards, violation, cause);
        return true;
    }
}

/// <summary>Why a peer reports a parent lost (<see cref="ParentLost.Cause"/>, version 15).</summary>
public enum LossCause : byte
{
    /// <summary>The link ended, an attach failed, or the peer cut the parent off for sending nothing or a trickle (the coordinator tries the same parent again first).</summary>
    Lost = 0,

    /// <summary>The peer cut the parent off for a lag never made up (event 9204): more than two trickle bounds behind the head and not gaining on it.</summary>
    Lag = 1,
}

/// <summary>Child to parent: stop sending these shards.</summary>
public readonly record struct Detach(byte[] Shards)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.Detach, 1 + Shards.Length, in this, static (in Detach m, ref SpanWriter w) =>
    {
        w.WriteByte((byte)m.Shards.Length);
        foreach (var s in m.Shards) w.WriteByte(s);
    });

    /// <summary>Reads a detach body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Detach value)
    {
        value = default;
        if (!r.TryRead(out byte count) || count > Protocol.MaxShards || r.Remaining != count) return false;
        var shards = new byte[count];
        for (int i = 0; i < count; i++) r.TryRead(out shards[i]);
        value = new Detach(shards);
        return true;
    }
}

/// <summary>Peer to coordinator: leaving on purpose; the coordinator moves the peer's children and then lets it go.</summary>
public readonly record struct Leave(ulong PeerId)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.WriteUInt64Frame(writer, FrameType.Leave, PeerId);

    /// <summary>Reads a leave body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Leave value) => FrameWriting.TryReadUInt64Body(ref r, static v => new Leave(v), out value);
}

/// <summary>
/// Coordinator to peer, on the control link (protocol version 12 and later): stop serving
/// <paramref name="ChildId"/>, a child the coordinator took out of the overlay (it failed, or was
/// evicted) while this peer may still reach it: the plan gave its slot to another peer.
/// </summary>
public readonly record struct DropChild(ulong ChildId)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.WriteUInt64Frame(writer, FrameType.DropChild, ChildId);

    /// <summary>Reads a drop-child body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out DropChild value) => FrameWriting.TryReadUInt64Body(ref r, static v => new DropChild(v), out value);
}

/// <summary>
/// Peer to coordinator (protocol version 2 and later): <paramref name="ChildId"/>, a child this
/// peer serves, is slow: its oldest queued chunk has waited <paramref name="QueueAgeMs"/> ms and
/// its queue keeps growing. The coordinator demotes it if the plan has the sender as its parent.
/// From version 8 it carries the figures behind the finding (<paramref name="Rates"/>): what the
/// sender handed to the child's connection and what it queued for it over the window it judged,
/// in kbit/s; the coordinator quotes them when it stops a leaf that stays slow.
/// </summary>
public readonly record struct SlowChild(ulong ChildId, uint QueueAgeMs, (uint DownloadKbps, uint StreamKbps)? Rates = null)
{
    /// <summary>Body length: u64 child id, u32 queue age.</summary>
    public const int BodyLength = 12;

    /// <summary>Body length with the rates (version 8): two more u32.</summary>
    public const int BodyLengthWithRates = 20;

    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.SlowChild, Rates is null ? BodyLength : BodyLengthWithRates, in this, static (in SlowChild m, ref SpanWriter w) =>
    {
        w.WriteUInt64(m.ChildId);
        w.WriteUInt32(m.QueueAgeMs);
        if (m.Rates is { } rates)
        {
            w.WriteUInt32(rates.DownloadKbps);
            w.WriteUInt32(rates.StreamKbps);
        }
    });

    /// <summary>Reads a slow-child body: 12 bytes, or 20 with the rates.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out SlowChild value)
    {
        value = default;
        if (!FrameCodec.TryReadUInt64(ref r, out ulong child) || !FrameCodec.TryReadUInt32(ref r, out uint age)) return false;
        if (r.End)
        {
            value = new SlowChild(child, age);
            return true;
        }
        if (!FrameCodec.TryReadUInt32(ref r, out uint download) || !FrameCodec.TryReadUInt32(ref r, out uint stream) || !r.End) return false;
        value = new SlowChild(child, age, (download, stream));
        return true;
    }
}

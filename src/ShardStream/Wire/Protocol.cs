namespace ShardStream.Wire;

/// <summary>Constants of the ShardStream wire protocol (docs/protocol.md).</summary>
public static class Protocol
{
    /// <summary>
    /// The protocol version this build speaks: 2 added the SlowChild frame, 3 the signed stream,
    /// 4 the reachability probe (Hello role Probe, the join token in a Join's peer id) and the Notice frame,
    /// 5 the StreamHeader frame (the media header a peer joining an FLV or MPEG-TS stream mid-way writes first),
    /// 6 round-trip times and network coordinates (Ping, Pong, Landmarks; a coordinate in Hello and Heartbeat),
    /// 7 the Fill frame (and the first chunk a new parent holds, in a Move's entries),
    /// 8 the measured rates in a SlowChild frame,
    /// 9 the run id (in the placement Welcome, and covered by every signature of the stream),
    /// 10 a joiner's landmark rounds and its placing Join on one connection (the version in Landmarks),
    /// 11 a peer's measured RTTs to its parents in its control link's heartbeats,
    /// 12 the DropChild frame (the coordinator tells a parent to stop serving a child it took out of the overlay),
    /// 13 the stream a joiner asks for, in its Join (the coordinator refuses another stream's joiner before placing it),
    /// 14 the stream's head in the coordinator's heartbeats on a control link,
    /// 15 the cause in a ParentLost (a parent cut off for a lag never made up),
    /// 16 a probe answer that proves the join token without showing it (a keyed hash over the prober's nonce).
    /// </summary>
    public const ushort Version = 16;

    /// <summary>
    /// The first version whose probe answer proves the join token instead of showing it: the
    /// prober's Hello carries a fresh nonce, and the probed peer answers with
    /// <see cref="Welcome.ProbeProof"/> (HMAC-SHA256 under its token, <c>Trust.ProbeProof</c>) and a
    /// <see cref="Welcome.PeerId"/> of 0. A node of this build never shows its token to a probe, of
    /// any version; its coordinator asks for the proof with a probe of this version only, and places
    /// an older joiner (which shows its token to whoever probes it) as a leaf (docs/protocol.md, section 6;
    /// docs/security.md).
    /// </summary>
    public const ushort ProbeProofVersion = 16;

    /// <summary>Bytes of a probe answer's proof (<see cref="Welcome.ProbeProof"/>): an HMAC-SHA256.</summary>
    public const int ProbeProofLength = 32;

    /// <summary>
    /// The first version whose ParentLost may say that the peer cut that parent off for a lag it
    /// never made up (<see cref="ParentLost.Cause"/>, <see cref="LossCause.Lag"/>): the coordinator
    /// then moves the child to another parent instead of sending it back (docs/protocol.md,
    /// section 12; docs/resilience.md).
    /// </summary>
    public const ushort LossCauseVersion = 15;

    /// <summary>
    /// The first version whose control-link heartbeats from the coordinator carry the stream's head
    /// (the next chunk sequence number at the source, <see cref="Heartbeat.Head"/>): a peer whose
    /// parent sends it nothing of a shard that the source had long made cuts that parent off, as
    /// lost (docs/protocol.md, section 10; docs/security.md).
    /// </summary>
    public const ushort StreamHeadVersion = 14;

    /// <summary>
    /// The first version whose Join may name the stream the joiner will watch (<see cref="Hello.Stream"/>):
    /// a coordinator of another stream answers Goodbye(<see cref="GoodbyeCode.OtherStream"/>) with a
    /// proof of its own key instead of placing a joiner that would refuse its Welcome
    /// (docs/protocol.md, section 16).
    /// </summary>
    public const ushort StreamCheckVersion = 13;

    /// <summary>
    /// The first version with the DropChild frame: the coordinator tells each parent of a peer it
    /// took out of the overlay (failed, evicted) to stop serving it (docs/protocol.md, section 12).
    /// </summary>
    public const ushort DropChildVersion = 12;

    /// <summary>
    /// The first version whose heartbeats on a control link carry the RTTs the peer measured to its
    /// parents (<see cref="ParentRtt"/>): the coordinator moves a leaf for a shorter path only when
    /// the measured RTT to its parent says the edge is long (docs/protocol.md, section 17).
    /// </summary>
    public const ushort ParentRttVersion = 11;

    /// <summary>
    /// The first version whose Landmarks frame carries the version the connection speaks: a
    /// coordinator that sends it keeps the connection and reads the joiner's next Join on it, so a
    /// latency-aware join takes one connection instead of up to three (docs/protocol.md, section 17).
    /// </summary>
    public const ushort OneConnectionVersion = 10;

    /// <summary>Landmarks frames a joiner follows before it is placed: the landmarks, then the candidate parents.</summary>
    public const int MaxLandmarkRounds = 2;

    /// <summary>
    /// The first version with the run id: a coordinator draws one at start, its Welcome carries it,
    /// and every signature (hash lists, End, join proof, tickets, stream header) covers it. A node
    /// of this build speaks no older version (<see cref="MinVersion"/>): an older peer could not
    /// check a signature that covers the run id, and would blame an honest parent for it.
    /// </summary>
    public const ushort RunIdVersion = 9;

    /// <summary>Bytes of a run id.</summary>
    public const int RunIdLength = 16;

    /// <summary>The first version whose SlowChild frame carries the measured rates.</summary>
    public const ushort SlowChildRatesVersion = 8;

    /// <summary>The first version with the Fill frame (peer to coordinator) and a Move entry's FromSeq as the first chunk the new parent holds.</summary>
    public const ushort FillVersion = 7;

    /// <summary>The first version with Ping, Pong and Landmarks, and a network coordinate in Hello and Heartbeat.</summary>
    public const ushort PingVersion = 6;

    /// <summary>
    /// The most of a Pong's <c>hold_us</c> the pinger takes out of its RTT sample (QUIC's
    /// max_ack_delay, RFC 9000 section 18.2). An honest side answers a Ping at once, ahead of the
    /// chunks it has queued, so its Pong waits only for its writer: at most 568 ms measured (16
    /// viewers on 2 cores at a load average of 48; docs/protocol.md section 17). A hold above it
    /// counts as delay: the answering side looks farther, never nearer.
    /// </summary>
    public static readonly TimeSpan MaxPongHold = TimeSpan.FromSeconds(1);

    /// <summary>The first version with the StreamHeader frame (coordinator to peer, after a placement Welcome).</summary>
    public const ushort StreamHeaderVersion = 5;

    /// <summary>The first version with the SlowChild frame (peer to coordinator).</summary>
    public const ushort SlowChildVersion = 2;

    /// <summary>The first version with the signed stream: hash lists, signed End, the join proof and admission tickets.</summary>
    public const ushort SignedStreamVersion = 3;

    /// <summary>
    /// The oldest protocol version this build accepts. Versions 1 and 2 had no signed stream, and
    /// versions 3 to 8 signed without the run id: a node of this build neither serves such a peer
    /// (it could not verify what it gets, and would cut off honest parents for it) nor joins such a
    /// coordinator (its signatures do not say which run they belong to).
    /// </summary>
    public const ushort MinVersion = RunIdVersion;

    /// <summary>The version a connection speaks after <paramref name="hello"/>: the highest both sides speak (the caller checked that the ranges overlap).</summary>
    public static ushort Negotiate(Hello hello) => Math.Min(hello.MaxVersion, Version);

    /// <summary>"SHST": the first four bytes of a hello body, so that a stray client is recognised at once.</summary>
    public const uint Magic = 0x53485354;

    /// <summary>The first version with the reachability probe (Hello role Probe) and the Notice frame (coordinator to peer).</summary>
    public const ushort ProbeVersion = 4;

    /// <summary>The largest chunk payload.</summary>
    public const int MaxChunkLength = 64 * 1024;

    /// <summary>The largest value of a frame's length field (type byte plus body).</summary>
    public const int MaxFrameLength = MaxChunkLength + 256;

    /// <summary>Bytes before a frame's body: the u32 length and the type byte.</summary>
    public const int FrameHeaderLength = 5;

    /// <summary>Bytes of a chunk frame's body before its payload: shard, sequence number, offset.</summary>
    public const int ChunkHeaderLength = 1 + 8 + 8;

    /// <summary>The most shards a stream may have.</summary>
    public const int MaxShards = 16;

    /// <summary>The longest address or reason string, in UTF-8 bytes.</summary>
    public const int MaxStringLength = 1024;

    /// <summary>Bytes of the random nonce a joiner sends, which the coordinator signs to prove it holds the stream's key.</summary>
    public const int NonceLength = 16;

    /// <summary>Bytes of an Ed25519 public key: the stream's identity.</summary>
    public const int KeyLength = 32;

    /// <summary>Bytes of an Ed25519 signature.</summary>
    public const int SignatureLength = 64;

    /// <summary>Bytes of a chunk hash (BLAKE3).</summary>
    public const int HashLength = 32;

    /// <summary>The most chunk hashes one signed hash list carries (its body stays under 2.2 KiB).</summary>
    public const int MaxHashesPerList = 64;

    /// <summary>The longest admission ticket.</summary>
    public const int MaxTicketLength = 255;
}

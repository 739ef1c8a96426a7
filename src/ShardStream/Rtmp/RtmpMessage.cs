namespace ShardStream.Rtmp;

/// <summary>RTMP message type ids (RTMP specification, Adobe 2012, sections 5.4 and 7.1).</summary>
public enum RtmpMessageType : byte
{
    SetChunkSize = 1,
    Abort = 2,
    Acknowledgement = 3,
    UserControl = 4,
    WindowAcknowledgementSize = 5,
    SetPeerBandwidth = 6,
    Audio = 8,
    Video = 9,
    DataAmf3 = 15,
    SharedObjectAmf3 = 16,
    CommandAmf3 = 17,
    DataAmf0 = 18,
    SharedObjectAmf0 = 19,
    CommandAmf0 = 20,
    Aggregate = 22,
}

/// <summary>User Control event types (RTMP specification, section 7.1.7).</summary>
public enum UserControlEvent : ushort
{
    StreamBegin = 0,
    StreamEof = 1,
    StreamDry = 2,
    SetBufferLength = 3,
    StreamIsRecorded = 4,
    PingRequest = 6,
    PingResponse = 7,
}

/// <summary>
/// One whole RTMP message, reassembled from its chunks: the absolute timestamp (ms, 32 bits,
/// wrapping), the type, the message stream id and the payload.
/// </summary>
public sealed record RtmpMessage(int ChunkStreamId, uint Timestamp, RtmpMessageType Type, uint StreamId, byte[] Payload)
{
    public override string ToString() => $"{Type} csid={ChunkStreamId} msid={StreamId} ts={Timestamp} len={Payload.Length}";
}

/// <summary>The peer broke the RTMP protocol or one of our limits (or was refused: <see cref="RtmpRefusedException"/>); the message is the one-line reason logged.</summary>
public class RtmpProtocolException(string message) : Exception(message);

/// <summary>
/// A publish or play this node refused (wrong key, another publisher live, an unknown stream): the
/// refusal is logged as a warning with its reason (1105, 1107) and the close that follows at
/// information (1102), not as bad input (1101).
/// </summary>
public sealed class RtmpRefusedException(string message) : RtmpProtocolException(message);

/// <summary>
/// Bounds on what one RTMP connection may make us hold or do (documented in docs/security.md).
/// </summary>
public sealed record RtmpLimits
{
    /// <summary>Largest message accepted (the wire allows 16 MiB - 1). A 1080p keyframe at 20 Mbit/s is well under 2 MiB.</summary>
    public int MaxMessageLength { get; init; } = 8 * 1024 * 1024;

    /// <summary>Bytes of partly received messages held across all chunk streams of a connection.</summary>
    public int MaxBufferedBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>Distinct chunk stream ids a connection may use (ffmpeg and OBS use fewer than 10).</summary>
    public int MaxChunkStreams { get; init; } = 64;

    /// <summary>Time from accept to the end of the handshake (C2 received).</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Time from the handshake to a successful publish or play, and from the end of a publish to the next (or the close).</summary>
    public TimeSpan SessionStartTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Silence on a publishing or idle connection after which it is closed.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Deepest nesting of AMF0 objects and arrays in a command or data message.</summary>
    public int MaxAmfDepth { get; init; } = 16;

    /// <summary>Open RTMP connections from one IP address.</summary>
    public int MaxConnectionsPerAddress { get; init; } = 8;

    /// <summary>Open RTMP connections in all.</summary>
    public int MaxConnections { get; init; } = 256;

    /// <summary>
    /// How long a publisher's audio may wait for the video frame that follows it, so that both go
    /// to the coordinator's source together (one chunk, one signature); zero hands every read on
    /// at once. See <c>RtmpSession.HoldsAudio</c>.
    /// </summary>
    public TimeSpan MaxAudioHold { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Audio waits for video only while video flows: the last video tag came at most this long ago.</summary>
    public TimeSpan VideoFlowWindow { get; init; } = TimeSpan.FromSeconds(1);
}

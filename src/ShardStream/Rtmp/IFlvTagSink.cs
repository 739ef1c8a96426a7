namespace ShardStream.Rtmp;

/// <summary>
/// Where an RTMP publish goes: the publisher's audio, video and script-data messages as FLV tags
/// (the seam with the media layer, see docs/rtmp.md).
/// </summary>
public interface IFlvTagSink
{
    /// <summary>A publisher's stream starts (publish accepted); called again after a reconnect.</summary>
    void PublishStarted();

    /// <summary>
    /// One FLV tag: type 8 audio, 9 video or 18 script data; timestamp in ms (RTMP's 32-bit
    /// absolute timestamp); the body is the RTMP message payload, which is the FLV tag body (no
    /// 11-byte tag header, no PreviousTagSize). Script data arrives without "@setDataFrame": it
    /// starts with the AMF0 string "onMetaData". The memory is only valid during the call.
    /// </summary>
    ValueTask WriteTagAsync(byte tagType, uint timestamp, ReadOnlyMemory<byte> body, CancellationToken cancellationToken);

    /// <summary>The publisher left (FCUnpublish, deleteStream or disconnect).</summary>
    void PublishEnded();
}

/// <summary>One FLV tag for a player.</summary>
public readonly record struct FlvTagMessage(byte Type, uint Timestamp, ReadOnlyMemory<byte> Body);

/// <summary>
/// What an RTMP player is sent: for each new player, a sequence of tags that starts with
/// onMetaData, the sequence headers and a keyframe, then follows the live stream; it ends when the
/// stream ends. The memory of a tag is valid until the next one is asked for.
/// </summary>
public interface IFlvTagFeed
{
    IAsyncEnumerable<FlvTagMessage> SubscribeAsync(CancellationToken cancellationToken);
}

namespace ShardStream.Media;

/// <summary>The type of an FLV tag (FLV specification v10.1, E.4.1).</summary>
public enum FlvTagType : byte
{
    /// <summary>Audio data.</summary>
    Audio = 8,

    /// <summary>Video data.</summary>
    Video = 9,

    /// <summary>Script data (AMF0), e.g. onMetaData.</summary>
    Script = 18,
}

/// <summary>
/// One FLV tag: its type, its timestamp in milliseconds (the 24 bits and the extension byte
/// together) and its body (the tag's data, without the 11-byte tag header and without the
/// PreviousTagSize that follows it).
/// </summary>
public readonly record struct FlvTag(FlvTagType Type, uint Timestamp, ReadOnlyMemory<byte> Body)
{
    /// <summary>Bytes of a tag header: type, data size (u24), timestamp (u24 + u8), stream id (u24).</summary>
    public const int HeaderLength = 11;

    /// <summary>Bytes of the PreviousTagSize field after every tag.</summary>
    public const int TrailerLength = 4;

    /// <summary>The largest tag body: the data size field has 24 bits.</summary>
    public const int MaxBodyLength = 0xFFFFFF;

    /// <summary>What this tag is for a viewer (keyframe, sequence header, metadata, …).</summary>
    public FlvTagKind Kind => FlvTagInfo.Classify(Type, Body.Span);
}

/// <summary>
/// Receives a publisher's tags (the RTMP ingest is the producer). Implemented by
/// <c>Rtmp.FlvByteSink</c>, which turns them into the FLV byte stream the coordinator cuts.
/// </summary>
public interface IFlvTagSink
{
    /// <summary>A publisher's stream starts (its publish was accepted); called again after a reconnect.</summary>
    void PublishStarted();

    /// <summary>One tag; <paramref name="body"/> is valid only during the call.</summary>
    ValueTask WriteTagAsync(FlvTagType type, uint timestamp, ReadOnlyMemory<byte> body, CancellationToken cancellationToken);

    /// <summary>The publisher left; viewers carry on when the next <see cref="PublishStarted"/> brings new sequence headers.</summary>
    void PublishEnded();

    /// <summary>
    /// The tags written since the last call are to be handed on now: a sink that holds tags, to
    /// hand them on together, hands them on. Called after a read of the publisher's connection
    /// that gave tags, before the next read; a read that gave only audio, while video flows, is
    /// flushed with the next read's video frame (<c>RtmpSession.HoldsAudio</c>).
    /// </summary>
    ValueTask FlushAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;
}

/// <summary>
/// A node's live FLV stream for one local viewer at a time: each subscription yields the stream
/// header (onMetaData, sequence headers), then a keyframe, then the live tags; its queue is
/// bounded, and a viewer that falls behind skips ahead to the next keyframe.
/// </summary>
public interface IFlvTagFeed
{
    /// <summary>
    /// The tags for one viewer, until the stream ends or <paramref name="cancellationToken"/> fires.
    /// A yielded tag's body stays valid until the next MoveNextAsync.
    /// </summary>
    IAsyncEnumerable<FlvTag> SubscribeAsync(CancellationToken cancellationToken);
}

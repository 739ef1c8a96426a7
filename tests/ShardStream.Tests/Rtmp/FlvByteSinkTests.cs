using ShardStream.Media;
using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

/// <summary>The FLV byte stream <see cref="FlvByteSink"/> makes of one publish after another.</summary>
public class FlvByteSinkTests
{
    private static readonly byte[] Metadata = Amf0Writer.Encode("onMetaData", new AmfObject { { "width", 640.0 } });
    private static readonly byte[] Keyframe = Hex.Bytes("17 01 000000 00000002 6588");
    private static readonly byte[] Audio = Hex.Bytes("AF 01 21");

    private static async Task<List<(FlvTagType Type, uint Timestamp)>> TagsOf(FlvByteSink sink)
    {
        sink.Complete();
        using var bytes = new MemoryStream();
        await sink.Reader.CopyToAsync(bytes);
        var data = bytes.ToArray().AsSpan(Flv.PreambleLength);
        var tags = new List<(FlvTagType, uint)>();
        while (Flv.TryReadTag(data, out var type, out uint timestamp, out _, out int length))
        {
            tags.Add((type, timestamp));
            data = data[length..];
        }
        Assert.Equal(0, data.Length);
        return tags;
    }

    [Fact]
    public async Task A_second_publish_goes_on_40_ms_after_the_last_tag_with_its_onMetaData_at_0()
    {
        var sink = new FlvByteSink();
        foreach (int publish in new[] { 1, 2 })
        {
            sink.PublishStarted();
            // As ffmpeg publishes: @setDataFrame's onMetaData at 0, then the media from 0 on.
            await sink.WriteTagAsync(FlvTagType.Script, 0, Metadata, default);
            await sink.WriteTagAsync(FlvTagType.Video, 0, Keyframe, default);
            await sink.WriteTagAsync(FlvTagType.Audio, 23, Audio, default);
            await sink.WriteTagAsync(FlvTagType.Video, 1000, Keyframe, default);
            await sink.FlushAsync(default);
            sink.PublishEnded();
        }
        // The second onMetaData stays at 0, where ffmpeg reads a script tag as the stream's metadata;
        // at 1040 it opened a subtitle stream ("New subtitle stream 0:2 at ... DTS:1.04s").
        Assert.Equal(
            [(FlvTagType.Script, 0u), (FlvTagType.Video, 0u), (FlvTagType.Audio, 23u), (FlvTagType.Video, 1000u),
             (FlvTagType.Script, 0u), (FlvTagType.Video, 1040u), (FlvTagType.Audio, 1063u), (FlvTagType.Video, 2040u)],
            await TagsOf(sink));
    }
}

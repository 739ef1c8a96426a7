using ShardStream.Media;
using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

/// <summary>What a local RTMP player of a node gets from <see cref="FlvPlayHub"/>.</summary>
public class FlvPlayHubTests
{
    private static readonly byte[] Preamble = Hex.Bytes("464C5601 05 00000009 00000000");
    private static readonly byte[] Metadata = Amf0Writer.Encode("onMetaData", new AmfObject { { "width", 640.0 } });
    private static readonly byte[] AvcHeader = Hex.Bytes("17 00 000000 01640028");
    private static readonly byte[] AacHeader = Hex.Bytes("AF 00 1210");
    private static readonly byte[] Keyframe = Hex.Bytes("17 01 000000 00000002 6588");
    private static readonly byte[] Inter = Hex.Bytes("27 01 000000 00000002 419A");
    private static readonly byte[] Audio = Hex.Bytes("AF 01 21");
    // Enhanced RTMP: IsExHeader | frame type 1 | SequenceStart, 'hvc1', then a record; and a keyframe (CodedFramesX).
    private static readonly byte[] HevcHeader = Hex.Bytes("90 68766331 01 02");
    private static readonly byte[] HevcKeyframe = Hex.Bytes("93 68766331 00000002 2601");

    private static byte[] Tag(byte type, uint ts, byte[] body)
    {
        var t = new byte[11 + body.Length + 4];
        t[0] = type;
        t[1] = (byte)(body.Length >> 16); t[2] = (byte)(body.Length >> 8); t[3] = (byte)body.Length;
        t[4] = (byte)(ts >> 16); t[5] = (byte)(ts >> 8); t[6] = (byte)ts; t[7] = (byte)(ts >> 24);
        body.CopyTo(t, 11);
        int prev = 11 + body.Length;
        t[^4] = (byte)(prev >> 24); t[^3] = (byte)(prev >> 16); t[^2] = (byte)(prev >> 8); t[^1] = (byte)prev;
        return t;
    }

    private static async Task<List<FlvTag>> Take(FlvPlayHub hub, int count, Action? afterSubscribe = null)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var tags = new List<FlvTag>();
        var e = hub.SubscribeAsync(cts.Token).GetAsyncEnumerator();
        var first = e.MoveNextAsync(); // subscribes
        afterSubscribe?.Invoke();
        if (await first) tags.Add(e.Current with { Body = e.Current.Body.ToArray() });
        while (tags.Count < count && await e.MoveNextAsync()) tags.Add(e.Current with { Body = e.Current.Body.ToArray() });
        await e.DisposeAsync();
        return tags;
    }

    [Fact]
    public async Task A_player_joining_mid_stream_gets_the_headers_then_the_last_keyframe_then_live_tags()
    {
        var hub = new FlvPlayHub();
        // Written in odd pieces, as a node's output arrives.
        byte[] stream = [.. Preamble, .. Tag(18, 0, Metadata), .. Tag(9, 0, AvcHeader), .. Tag(8, 0, AacHeader),
                         .. Tag(9, 0, Keyframe), .. Tag(9, 33, Inter), .. Tag(9, 1000, Keyframe), .. Tag(8, 1010, Audio), .. Tag(9, 1033, Inter)];
        for (int i = 0; i < stream.Length; i += 7) hub.Write(stream.AsSpan(i, Math.Min(7, stream.Length - i)));

        var tags = await Take(hub, 7, () => hub.Write(Tag(9, 1066, Inter)));
        Assert.Equal([(byte)18, (byte)9, (byte)8, (byte)9, (byte)8, (byte)9, (byte)9], tags.Select(t => (byte)t.Type));
        Assert.Equal(Metadata, tags[0].Body.ToArray());
        Assert.Equal(AvcHeader, tags[1].Body.ToArray());
        Assert.Equal(AacHeader, tags[2].Body.ToArray());
        Assert.Equal(Keyframe, tags[3].Body.ToArray());
        // onMetaData at 0: ffmpeg takes a script tag with another timestamp for a subtitle stream
        // ("Stream #0:0: Subtitle: text" ahead of the video); the sequence headers at the keyframe's time.
        Assert.Equal([0u, 1000u, 1000u, 1000u, 1010u, 1033u, 1066u], tags.Select(t => t.Timestamp));
    }

    [Fact]
    public async Task A_player_that_comes_before_the_first_keyframe_gets_onMetaData_at_0_and_the_sequence_headers_at_the_keyframes_time()
    {
        var hub = new FlvPlayHub();
        hub.Write([.. Preamble, .. Tag(18, 0, Metadata), .. Tag(9, 0, AvcHeader), .. Tag(8, 0, AacHeader), .. Tag(8, 500, Audio)]);
        var tags = await Take(hub, 4, () => hub.Write([.. Tag(9, 1000, Keyframe), .. Tag(9, 1033, Inter)]));
        Assert.Equal([(byte)18, (byte)9, (byte)8, (byte)9], tags.Select(t => (byte)t.Type));
        Assert.Equal([0u, 1000u, 1000u, 1000u], tags.Select(t => t.Timestamp));
    }

    [Fact]
    public async Task A_player_that_falls_behind_skips_to_the_next_keyframe()
    {
        var hub = new FlvPlayHub { MaxQueuedBytes = 100 };
        hub.Write([.. Preamble, .. Tag(9, 0, AvcHeader), .. Tag(9, 0, Keyframe)]);
        var tags = await Take(hub, 3, () =>
        {
            // The player read the header, then nothing while these arrive: its queue passes 100
            // bytes, so what was queued (the first keyframe, the inter frames) is dropped.
            for (uint t = 33; t < 33 * 20; t += 33) hub.Write(Tag(9, t, Inter));
            hub.Write(Tag(9, 700, Keyframe));
            hub.Write(Tag(9, 733, Inter));
        });
        // It resumes at the next keyframe, never at an inter frame.
        Assert.Equal([(0u, AvcHeader), (700u, Keyframe), (733u, Inter)], tags.Select(t => (t.Timestamp, t.Body.ToArray())));
    }

    [Fact]
    public async Task Enhanced_RTMP_HEVC_sequence_start_and_keyframe_are_found()
    {
        var hub = new FlvPlayHub();
        hub.Write([.. Preamble, .. Tag(9, 0, HevcHeader), .. Tag(9, 0, HevcKeyframe), .. Tag(9, 40, Inter)]);
        var tags = await Take(hub, 3);
        Assert.Equal(HevcHeader, tags[0].Body.ToArray());
        Assert.Equal(HevcKeyframe, tags[1].Body.ToArray());
    }

    [Fact]
    public async Task A_stream_that_is_not_FLV_is_not_served()
    {
        var hub = new FlvPlayHub();
        hub.Write(new byte[] { 0x47, 0x40, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }); // MPEG-TS
        Assert.Empty(await Take(hub, 1));
        Assert.Contains("does not start with an FLV header", hub.NotFlv);
    }

    [Fact]
    public async Task A_tag_the_FLV_layout_does_not_allow_ends_the_players_with_the_reason()
    {
        var hub = new FlvPlayHub();
        hub.Write([.. Preamble, .. Tag(9, 0, AvcHeader), .. Tag(9, 0, Keyframe)]);
        var tags = await Take(hub, 10, () => hub.Write(Tag(7, 33, Inter))); // tag type 7: not audio, video or script data
        Assert.Equal([AvcHeader, Keyframe], tags.Select(t => t.Body.ToArray()));
        Assert.Contains("not well formed", hub.NotFlv);
        Assert.Contains("type 7", hub.NotFlv);
    }
}

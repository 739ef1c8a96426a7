using ShardStream.Media;

namespace ShardStream.Tests.Media;

/// <summary>Local viewers of a node's output: header and keyframe first, bounded queue, skip to the next keyframe.</summary>
public sealed class MediaHubTests
{
    private static readonly byte[] Head = [.. MediaStreams.Preamble(), .. MediaStreams.AvcHeader, .. MediaStreams.AacHeader];

    private static async Task<byte[]> TakeAllAsync(MediaViewer viewer)
    {
        var bytes = new List<byte>();
        foreach (var s in await viewer.TakeAsync(CancellationToken.None)) bytes.AddRange(s);
        return [.. bytes];
    }

    [Fact]
    public async Task A_viewer_that_comes_mid_stream_gets_the_header_then_the_next_keyframe()
    {
        var hub = new MediaHub();
        hub.Write(Head);
        hub.Write(MediaStreams.Keyframe(0, 100));
        hub.Write(MediaStreams.Inter(33, 50));
        using var viewer = hub.Subscribe()!;
        hub.Write(MediaStreams.Inter(66, 50)); // not a place to start: dropped for this viewer
        hub.Write(MediaStreams.Keyframe(1000, 100));
        byte[] got = await TakeAllAsync(viewer);
        Assert.Equal([.. Head, .. MediaStreams.Keyframe(1000, 100)], got);
        Assert.Equal(MediaFormat.Flv, await hub.Format);
    }

    [Fact]
    public async Task A_viewer_from_the_start_gets_the_stream_as_it_is()
    {
        var hub = new MediaHub();
        using var viewer = hub.Subscribe()!;
        byte[] stream = [.. Head, .. MediaStreams.Keyframe(0, 100), .. MediaStreams.Inter(33, 50)];
        hub.Write(stream);
        Assert.Equal(stream, await TakeAllAsync(viewer));
    }

    [Fact]
    public async Task A_viewer_that_falls_behind_skips_to_the_next_keyframe_and_never_holds_more_than_its_bound()
    {
        var hub = new MediaHub { MaxQueuedBytesPerViewer = 1000 };
        hub.Write(Head);
        hub.Write(MediaStreams.Keyframe(0, 100));
        using var viewer = hub.Subscribe()!;
        hub.Write(MediaStreams.Keyframe(1000, 100));
        for (int i = 1; i <= 20; i++) hub.Write(MediaStreams.Inter((uint)(1000 + 33 * i), 100)); // nobody reads
        Assert.True(viewer.QueuedBytes <= 1000, $"{viewer.QueuedBytes} bytes queued");
        Assert.Equal(1, viewer.Skips);
        Assert.Equal(0, viewer.QueuedBytes); // waiting for a keyframe: nothing queued
        hub.Write(MediaStreams.Keyframe(2000, 100));
        hub.Write(MediaStreams.Inter(2033, 100));
        // After the skip: the keyframe and what follows, with no second FLV file header.
        byte[] got = await TakeAllAsync(viewer);
        Assert.Equal([.. MediaStreams.Keyframe(2000, 100), .. MediaStreams.Inter(2033, 100)], got);
    }

    [Fact]
    public async Task The_viewers_of_a_raw_stream_get_nothing_and_the_end()
    {
        var hub = new MediaHub();
        hub.Write("hello\n"u8);
        Assert.Equal(MediaFormat.Raw, await hub.Format);
        hub.Complete();
        using var viewer = hub.Subscribe()!;
        Assert.Empty(await viewer.TakeAsync(CancellationToken.None));
    }

    [Fact]
    public void No_more_viewers_than_the_limit()
    {
        var hub = new MediaHub { MaxViewers = 2 };
        using var a = hub.Subscribe();
        using var b = hub.Subscribe();
        Assert.Null(hub.Subscribe());
        b!.Dispose();
        using var c = hub.Subscribe();
        Assert.NotNull(c);
    }

    [Fact]
    public void A_refused_viewer_is_told_which_limit_it_met()
    {
        var hub = new MediaHub { MaxViewers = 8 };
        var one = Enumerable.Range(0, 2).Select(_ => hub.Subscribe("192.0.2.1")).ToList();
        Assert.All(one, Assert.NotNull);
        Assert.Null(hub.Subscribe("192.0.2.1", out string? refusal));
        Assert.Equal("too many viewers from your address (2, a quarter of this node's 8)", refusal);
        var others = Enumerable.Range(0, 6).Select(i => hub.Subscribe($"192.0.2.{10 + i}")).ToList();
        Assert.All(others, Assert.NotNull);
        Assert.Null(hub.Subscribe("192.0.2.99", out refusal));
        Assert.Equal("too many viewers on this node (8)", refusal);
        one[0]!.Dispose();
        using var back = hub.Subscribe("192.0.2.1", out refusal);
        Assert.NotNull(back);
        Assert.Null(refusal);
        foreach (var v in one.Skip(1).Concat(others)) v!.Dispose();
    }
}

using Microsoft.AspNetCore.Http;
using ShardStream.Media;
using ShardStream.Tests.Nodes;

namespace ShardStream.Tests.Media;

/// <summary>A HEAD of /live.flv answers the headers a viewer would get, and is not logged as a viewer.</summary>
public sealed class MediaHttpHeadTests
{
    [Fact]
    public async Task A_HEAD_gets_the_viewers_headers_and_no_viewer_line_without_its_end()
    {
        var hub = new MediaHub();
        hub.Write([.. MediaStreams.Preamble(), .. MediaStreams.AvcHeader, .. MediaStreams.Keyframe(0, 100)]);
        var log = new LogCapture();
        var context = new DefaultHttpContext();
        context.Request.Method = "HEAD";
        context.Request.Path = "/live.flv";
        context.Response.Body = new MemoryStream();

        await MediaHttp.ServeAsync(context, hub, MediaFormat.Flv, log.Factory.CreateLogger("http")).WaitAsync(Overlay.Deadline);

        Assert.Equal(StatusCodes.Status200OK, context.Response.StatusCode);
        Assert.Equal("video/x-flv", context.Response.ContentType);
        Assert.Equal(0, hub.ViewerCount);
        var lines = log.Lines.Select(l => l.Message).ToList();
        Assert.False(lines.Any(l => l.Contains(" watches ", StringComparison.Ordinal)), $"a HEAD logged as a viewer:\n{string.Join("\n", lines)}");
    }
}

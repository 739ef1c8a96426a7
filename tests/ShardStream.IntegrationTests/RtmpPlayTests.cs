using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using ShardStream.Media;
using ShardStream.Rtmp;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The play side of the RTMP server against the real ffmpeg as a player (the same RTMP client code
/// ffplay runs): what a feed yields arrives as a stream ffmpeg decodes with no error, after
/// StreamBegin, Play.Reset, Play.Start and |RtmpSampleAccess; the stream's end ends the play.
/// </summary>
[Collection(CliCollection.Name)]
public sealed class RtmpPlayTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ss-rtmp-play-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The tags of an FLV file, as a feed that yields them all to each player.</summary>
    private sealed class FileFeed(byte[] flv) : IFlvTagFeed
    {
        public async IAsyncEnumerable<FlvTag> SubscribeAsync([EnumeratorCancellation] CancellationToken cancellationToken)
        {
            int pos = 9 + 4; // FLV header, PreviousTagSize0
            while (pos + 11 <= flv.Length)
            {
                int size = flv[pos + 1] << 16 | flv[pos + 2] << 8 | flv[pos + 3];
                uint ts = (uint)(flv[pos + 7] << 24 | flv[pos + 4] << 16 | flv[pos + 5] << 8 | flv[pos + 6]);
                yield return new FlvTag((FlvTagType)flv[pos], ts, flv.AsMemory(pos + 11, size));
                pos += 11 + size + 4;
                await Task.Yield();
            }
        }
    }

    [Fact]
    public async Task Ffmpeg_plays_the_feed_over_RTMP_and_decodes_every_frame()
    {
        if (RequiresTool.Missing(output, Ffmpeg.Missing())) return;
        string source = Path.Combine(_dir, "source.flv");
        var made = RequiresTool.Run("ffmpeg", ["-hide_banner", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
            "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-t", "4", "-f", "flv", source], TimeSpan.FromMinutes(2));
        Assert.True(made.ExitCode == 0, made.Stderr);
        Assert.Equal(0x09u, BinaryPrimitives.ReadUInt32BigEndian(File.ReadAllBytes(source).AsSpan(5)));

        await using var server = await RtmpServer.StartAsync(new RtmpServerOptions
        {
            ListenAddress = "127.0.0.1:0",
            Play = new FileFeed(File.ReadAllBytes(source)),
            PlayName = "stream",
        }, null, CancellationToken.None);

        string copy = Path.Combine(_dir, "played.flv");
        var played = RequiresTool.Run("ffmpeg", ["-hide_banner", "-v", "error", "-xerror", "-i", $"rtmp://{server.LocalAddress}/live/stream", "-c", "copy", "-f", "flv", copy], TimeSpan.FromMinutes(2));
        Assert.True(played.ExitCode == 0 && played.Stderr.Trim().Length == 0, $"ffmpeg as a player: exit {played.ExitCode}: {played.Stderr}");
        var (exit, errors) = Ffmpeg.Decode(copy);
        Assert.True(exit == 0 && errors.Length == 0, $"decode: {errors}");
        Assert.Equal(Ffmpeg.CountFrames(source), Ffmpeg.CountFrames(copy));
        Assert.Equal(120, Ffmpeg.CountFrames(copy).Video);

        var refused = RequiresTool.Run("ffmpeg", ["-hide_banner", "-v", "error", "-i", $"rtmp://{server.LocalAddress}/live/other", "-f", "null", "-"], TimeSpan.FromMinutes(2));
        Assert.NotEqual(0, refused.ExitCode);
        output.WriteLine($"ffmpeg playing an unknown stream: {refused.Stderr.Trim()}");
    }
}

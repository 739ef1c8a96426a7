using Microsoft.Extensions.Logging;
using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

/// <summary>
/// A player (<c>--rtmp-play</c>) of a node whose stream is not FLV (MPEG-TS on stdin), over real
/// TCP on 127.0.0.1: it is refused with the reason, and the node does not log that the stream ended.
/// </summary>
public sealed class RtmpNotFlvPlayTests
{
    [Fact]
    public async Task A_player_of_a_stream_that_is_not_FLV_is_refused_with_the_reason()
    {
        var log = new LineLogger();
        using var loggers = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Debug));
        var hub = new FlvPlayHub();
        hub.Write(new byte[] { 0x47, 0x40, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }); // MPEG-TS
        var server = await RtmpServer.StartAsync(new RtmpServerOptions
        {
            ListenAddress = "127.0.0.1:0",
            Play = hub,
            PlayName = "stream",
        }, loggers, CancellationToken.None);
        try
        {
            await using var client = await RtmpTestClient.PlayAsync(server.LocalAddress);
            var status = await client.ReadCommandAsync();
            var info = status is ["onStatus", _, _, AmfObject o] ? o : null;
            Assert.True(info is not null, $"no onStatus, got {string.Join(", ", status ?? [])}");
            Assert.Equal("NetStream.Play.StreamNotFound", info.Get("code"));
            Assert.Contains("does not start with an FLV header", info.Get("description") as string);
            Assert.True(await client.ClosedAsync());
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (!log.All().Contains("play refused"))
            {
                Assert.True(DateTime.UtcNow < deadline, $"no 'play refused' logged:\n{log.All()}");
                await Task.Delay(20);
            }
            Assert.Contains("does not start with an FLV header", log.All());
            Assert.DoesNotContain("the stream ended", log.All());
            // One warning says why; the connection's close that follows is not a second warning
            // as if the player had sent bad input.
            while (!log.All().Contains("closed: play refused"))
            {
                Assert.True(DateTime.UtcNow < deadline, $"the refused player's connection not logged as closed:\n{log.All()}");
                await Task.Delay(20);
            }
            string[] warnings = [.. log.All().Split('\n').Where(l => l.StartsWith("Warning "))];
            Assert.True(warnings.Length == 1, $"one warning for a refused player, not {warnings.Length}:\n{log.All()}");
        }
        finally
        {
            await server.DisposeAsync();
        }
    }
}

using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using ShardStream.Media;
using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

/// <summary>
/// A player (<c>--rtmp-play</c>) that stops reading, over real TCP on 127.0.0.1: it is closed at
/// the idle timeout, and its connection is gone with it, however much was still queued for it:
/// its place under the per-address limit is free again, and the server stops without waiting for it.
/// </summary>
public sealed class RtmpStalledPlayerTests
{
    /// <summary>Video tags of 64 KiB, as fast as the player takes them, until it is closed.</summary>
    private sealed class EndlessFeed : IFlvTagFeed
    {
        public async IAsyncEnumerable<FlvTag> SubscribeAsync([EnumeratorCancellation] CancellationToken cancellationToken)
        {
            var body = new byte[64 * 1024];
            body[0] = 0x17;
            body[1] = 0x01;
            for (uint ts = 0; !cancellationToken.IsCancellationRequested; ts += 33)
            {
                yield return new FlvTag(FlvTagType.Video, ts, body);
                await Task.Yield();
            }
        }
    }

    [Fact]
    public async Task A_player_that_stops_reading_is_closed_at_the_idle_timeout_and_its_connection_goes_with_it()
    {
        var log = new LineLogger();
        using var loggers = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Debug));
        var server = await RtmpServer.StartAsync(new RtmpServerOptions
        {
            ListenAddress = "127.0.0.1:0",
            Play = new EndlessFeed(),
            PlayName = "stream",
            Limits = new RtmpLimits { IdleTimeout = TimeSpan.FromSeconds(1), MaxConnectionsPerAddress = 1 },
        }, loggers, CancellationToken.None);
        try
        {
            // It plays, then reads nothing more: the server's sends to it stop going out.
            await using var stalled = await RtmpTestClient.PlayAsync(server.LocalAddress);
            await WaitUntilAsync(() => log.All().Contains("took more than 1 s to take a message"), "the server closed the stalled player", log);

            // Its place under the limit of 1 connection per address is free again: another player plays.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                try
                {
                    await using var next = await RtmpTestClient.PlayAsync(server.LocalAddress).WaitAsync(TimeSpan.FromSeconds(10));
                    break;
                }
                catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or NullReferenceException or TimeoutException or EndOfStreamException)
                {
                    Assert.True(DateTime.UtcNow < deadline, $"no second player within 30 s of the first one's close (the limit is 1 per address):\n{log.All()}");
                    await Task.Delay(200);
                }
            }
        }
        finally
        {
            var stop = server.DisposeAsync().AsTask();
            Assert.True(await Task.WhenAny(stop, Task.Delay(TimeSpan.FromSeconds(30))) == stop, $"the server did not stop within 30 s:\n{log.All()}");
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what, LineLogger log)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}:\n{log.All()}");
            await Task.Delay(20);
        }
    }
}

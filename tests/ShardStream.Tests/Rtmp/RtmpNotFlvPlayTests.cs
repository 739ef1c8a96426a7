using Microsoft.Extensions.Logging;
using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

/// <summary>
/// Connections an RTMP player endpoint (<c>--rtmp-play</c>) closes, over real TCP on 127.0.0.1: a
/// player of a node whose stream is not FLV (MPEG-TS on stdin) is refused with the reason, and the
/// node does not log that the stream ended; a connection that neither publishes nor plays is closed
/// at the start deadline.
/// </summary>
public sealed class RtmpNotFlvPlayTests : IAsyncDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private readonly LineLogger _log = new();
    private readonly ILoggerFactory _loggers;
    private RtmpServer? _server;

    public RtmpNotFlvPlayTests() => _loggers = LoggerFactory.Create(b => b.AddProvider(_log).SetMinimumLevel(LogLevel.Debug));

    [Fact]
    public async Task A_player_of_a_stream_that_is_not_FLV_is_refused_with_the_reason()
    {
        var hub = new FlvPlayHub();
        hub.Write(new byte[] { 0x47, 0x40, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }); // MPEG-TS
        var server = await StartAsync(hub, new RtmpLimits());

        await using var client = await RtmpTestClient.PlayAsync(server.LocalAddress);
        var status = await client.ReadCommandAsync();
        var info = status is ["onStatus", _, _, AmfObject o] ? o : null;
        Assert.True(info is not null, $"no onStatus, got {string.Join(", ", status ?? [])}");
        Assert.Equal("NetStream.Play.StreamNotFound", info.Get("code"));
        Assert.Contains("does not start with an FLV header", info.Get("description") as string);
        Assert.True(await client.ClosedAsync());
        await UntilLoggedAsync("play refused");
        Assert.Contains("does not start with an FLV header", _log.All());
        Assert.DoesNotContain("the stream ended", _log.All());
        // One warning says why; the connection's close that follows is not a second warning
        // as if the player had sent bad input.
        await UntilLoggedAsync("closed: play refused");
        string[] warnings = [.. _log.All().Split('\n').Where(l => l.StartsWith("Warning "))];
        Assert.True(warnings.Length == 1, $"one warning for a refused player, not {warnings.Length}:\n{_log.All()}");
    }

    /// <summary>Timed by the monotonic clock since 2026-12-06, not the wall clock; untested before.</summary>
    [Fact]
    public async Task A_connection_that_neither_publishes_nor_plays_is_closed_at_the_start_deadline()
    {
        var server = await StartAsync(new FlvPlayHub(), new RtmpLimits { SessionStartTimeout = TimeSpan.FromSeconds(1) });

        await using var client = await RtmpTestClient.ConnectAsync(server.LocalAddress);
        await client.HandshakeAsync(afterC2: RtmpTestClient.Encode(3, RtmpMessageType.CommandAmf0, 0, 0,
            Amf0Writer.Encode("connect", 1.0, new AmfObject { { "app", "live" } })));
        Assert.Equal(["_result", 1.0], (await client.ReadCommandAsync())![..2]);
        Assert.True(await client.ClosedAsync());
        await UntilLoggedAsync("closed: no publish or play within 1 s");
    }

    private async Task<RtmpServer> StartAsync(FlvPlayHub hub, RtmpLimits limits) =>
        _server = await RtmpServer.StartAsync(new RtmpServerOptions
        {
            ListenAddress = "127.0.0.1:0",
            Play = hub,
            PlayName = "stream",
            Limits = limits,
        }, _loggers, CancellationToken.None);

    private async Task UntilLoggedAsync(string fragment)
    {
        for (var deadline = DateTime.UtcNow + Deadline; !_log.All().Contains(fragment);)
        {
            Assert.True(DateTime.UtcNow < deadline, $"no '{fragment}' logged:\n{_log.All()}");
            await Task.Delay(20);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_server is not null) await _server.DisposeAsync();
        _loggers.Dispose();
    }
}

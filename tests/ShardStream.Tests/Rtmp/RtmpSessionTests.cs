using Microsoft.Extensions.Logging;
using ShardStream.Rtmp;
using ShardStream.Transport;

namespace ShardStream.Tests.Rtmp;

/// <summary>
/// The server side of a publish, over real TCP on 127.0.0.1, driven by a client built from the
/// codecs: the commands ffmpeg and OBS send, their answers with the transaction ids echoed, the key
/// check, one publisher at a time, acknowledgements and ping.
/// </summary>
public class RtmpSessionTests : IAsyncLifetime
{
    /// <summary>The server's transport: the default one, or the coordinator's (see the class below).</summary>
    protected virtual ITransport Transport => TcpTransport.Instance;

    private const string Key = "k3y-Secret-42";
    private readonly RecordingSink _sink = new();
    private readonly LineLogger _log = new();
    private ILoggerFactory _loggers = null!;
    private RtmpServer _server = null!;

    public async Task InitializeAsync()
    {
        _loggers = LoggerFactory.Create(b => b.AddProvider(_log).SetMinimumLevel(LogLevel.Debug));
        _server = await RtmpServer.StartAsync(new RtmpServerOptions { ListenAddress = "127.0.0.1:0", Ingest = _sink, PublishKey = Key, Transport = Transport }, _loggers, CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        _loggers.Dispose();
    }

    /// <summary>Handshake with connect in the same write as C2, then releaseStream, FCPublish, createStream.</summary>
    private async Task<RtmpTestClient> ConnectAndCreateStreamAsync(RtmpServer? server = null)
    {
        var client = await RtmpTestClient.ConnectAsync((server ?? _server).LocalAddress);
        var connect = RtmpTestClient.Encode(3, RtmpMessageType.CommandAmf0, 0, 0,
            Amf0Writer.Encode("connect", 1.0, new AmfObject { { "app", "live" }, { "type", "nonprivate" }, { "tcUrl", "rtmp://127.0.0.1/live" } }));
        await client.HandshakeAsync(afterC2: connect);
        Assert.Equal(Hex.Bytes("00000000"), client.S0S1S2[5..9]);

        var control = new List<RtmpMessage>();
        var result = await client.ReadCommandAsync(control);
        Assert.NotNull(result);
        Assert.Equal(["_result", 1.0], result[..2]);
        Assert.Equal("NetConnection.Connect.Success", Assert.IsType<AmfObject>(result[3]).Get("code"));
        Assert.Equal([RtmpMessageType.WindowAcknowledgementSize, RtmpMessageType.SetPeerBandwidth, RtmpMessageType.SetChunkSize], control.Select(m => m.Type));
        Assert.Equal(4096u, RtmpControl.ReadUInt32(control[2]));

        await client.CommandAsync(0, "releaseStream", 2.0, null, Key);
        await client.CommandAsync(0, "FCPublish", 3.0, null, Key);
        await client.CommandAsync(0, "createStream", 4.0, null);
        Assert.Equal(["_result", 2.0], (await client.ReadCommandAsync())![..2]);
        Assert.Equal(["_result", 3.0], (await client.ReadCommandAsync())![..2]);
        var created = await client.ReadCommandAsync();
        Assert.Equal(["_result", 4.0, null, 1.0], created);
        return client;
    }

    private static string? StatusCode(List<object?>? command) =>
        command is ["onStatus", _, _, AmfObject info] ? info.Get("code") as string : null;

    [Fact]
    public async Task A_publish_as_ffmpeg_sends_it_reaches_the_sink_as_FLV_tags()
    {
        await using var client = await ConnectAndCreateStreamAsync();
        await client.CommandAsync(1, "publish", 5.0, null, Key, "live");
        var control = new List<RtmpMessage>();
        Assert.Equal("NetStream.Publish.Start", StatusCode(await client.ReadCommandAsync(control)));
        Assert.Equal(Hex.Bytes("0000 00000001"), Assert.Single(control, m => m.Type == RtmpMessageType.UserControl).Payload);

        var metadata = Amf0Writer.Encode("@setDataFrame", "onMetaData", new AmfObject { { "width", 640.0 } });
        await client.SendAsync(4, RtmpMessageType.DataAmf0, 1, 0, metadata);
        await client.SendAsync(6, RtmpMessageType.Video, 1, 0, Hex.Bytes("17 00 000000 01640028"));
        await client.SendAsync(4, RtmpMessageType.Audio, 1, 23, Hex.Bytes("AF 00 1210"));
        await client.CommandAsync(0, "FCUnpublish", 6.0, null, Key);
        Assert.Equal(["_result", 6.0], (await client.ReadCommandAsync())![..2]);
        await client.CommandAsync(0, "deleteStream", 7.0, null, 1.0);

        await WaitUntil(() => _sink.Ended == 1);
        lock (_sink.Tags)
        {
            Assert.Equal(1, _sink.Started);
            Assert.Equal([(byte)18, (byte)9, (byte)8], _sink.Tags.Select(t => t.Type));
            Assert.Equal(Amf0Writer.Encode("onMetaData", new AmfObject { { "width", 640.0 } }), _sink.Tags[0].Body);
            Assert.Equal(23u, _sink.Tags[2].Timestamp);
        }
    }

    [Fact]
    public async Task Audio_alone_goes_on_with_the_next_video_frame_while_video_flows_and_when_the_publisher_leaves()
    {
        var sink = new RecordingSink();
        // Hold bounds far over any scheduling delay, so that only the tags decide.
        await using var server = await RtmpServer.StartAsync(new RtmpServerOptions
        {
            ListenAddress = "127.0.0.1:0",
            Transport = Transport,
            Ingest = sink,
            PublishKey = Key,
            Limits = new RtmpLimits { MaxAudioHold = TimeSpan.FromMinutes(10), VideoFlowWindow = TimeSpan.FromMinutes(10) },
        }, _loggers, CancellationToken.None);
        var client = await ConnectAndCreateStreamAsync(server);
        await client.CommandAsync(1, "publish", 5.0, null, Key, "live");
        Assert.Equal("NetStream.Publish.Start", StatusCode(await client.ReadCommandAsync()));

        // As ffmpeg interleaves 30 fps video and AAC: V0 A23 A46 V66 A69, each in a read of its
        // own (the next goes out once the server has taken the one before).
        (int Chunk, RtmpMessageType Type, uint At, string Body)[] tags =
        [
            (6, RtmpMessageType.Video, 0, "17 01 000000 AA"), (4, RtmpMessageType.Audio, 23, "AF 01 11"), (4, RtmpMessageType.Audio, 46, "AF 01 22"),
            (6, RtmpMessageType.Video, 66, "27 01 000000 BB"), (4, RtmpMessageType.Audio, 69, "AF 01 33"),
        ];
        for (int i = 0; i < tags.Length; i++)
        {
            await client.SendAsync(tags[i].Chunk, tags[i].Type, 1, tags[i].At, Hex.Bytes(tags[i].Body));
            await WaitUntil(() => { lock (sink.Tags) return sink.Tags.Count == i + 1; });
        }
        await client.DisposeAsync();
        await WaitUntil(() => sink.Ended == 1);
        lock (sink.Tags)
        {
            Assert.Equal([0u, 23u, 46u, 66u, 69u], sink.Tags.Select(t => t.Timestamp));
            // The video frame at once; the two audio frames with the next video frame; the last
            // audio frame when the publisher left.
            Assert.Equal([1, 4, 5], sink.Flushes);
        }
    }

    [Fact]
    public async Task Audio_without_video_goes_on_at_every_read()
    {
        await using var client = await ConnectAndCreateStreamAsync();
        await client.CommandAsync(1, "publish", 5.0, null, Key, "live");
        Assert.Equal("NetStream.Publish.Start", StatusCode(await client.ReadCommandAsync()));
        for (int i = 0; i < 3; i++)
        {
            await client.SendAsync(4, RtmpMessageType.Audio, 1, (uint)(23 * i), Hex.Bytes("AF 01 11"));
            await WaitUntil(() => { lock (_sink.Tags) return _sink.Flushes.Count == i + 1; });
        }
        lock (_sink.Tags) Assert.Equal([1, 2, 3], _sink.Flushes);
    }

    [Fact]
    public async Task A_wrong_key_gets_BadName_and_a_closed_connection_and_the_key_is_never_logged()
    {
        await using var client = await ConnectAndCreateStreamAsync();
        await client.CommandAsync(1, "publish", 5.0, null, "not-the-key", "live");
        Assert.Equal("NetStream.Publish.BadName", StatusCode(await client.ReadCommandAsync()));
        Assert.True(await client.ClosedAsync());
        Assert.Equal(0, _sink.Started);
        await WaitUntil(() => _log.All().Contains("wrong stream key"));
        Assert.DoesNotContain(Key, _log.All());
        Assert.DoesNotContain("not-the-key", _log.All());
    }

    [Fact]
    public async Task A_second_publisher_is_denied_and_the_first_goes_on()
    {
        await using var first = await ConnectAndCreateStreamAsync();
        await first.CommandAsync(1, "publish", 5.0, null, Key, "live");
        Assert.Equal("NetStream.Publish.Start", StatusCode(await first.ReadCommandAsync()));

        await using var second = await ConnectAndCreateStreamAsync();
        await second.CommandAsync(1, "publish", 5.0, null, Key, "live");
        Assert.Equal("NetStream.Publish.Denied", StatusCode(await second.ReadCommandAsync()));
        Assert.True(await second.ClosedAsync());

        await first.SendAsync(6, RtmpMessageType.Video, 1, 40, Hex.Bytes("27 01 000000 AA"));
        await WaitUntil(() => { lock (_sink.Tags) return _sink.Tags.Count == 1; });
        Assert.Equal(1, _sink.Started);
    }

    [Fact]
    public async Task A_publish_that_ends_after_the_start_deadline_leaves_the_connection_open_for_the_next_publish()
    {
        // Seen across namespaces: ffmpeg's FCUnpublish came in a read of its own, minutes after the
        // connection's start deadline, and the server closed at once with "no publish or play
        // within 30 s" (a warning, as for bad input) instead of waiting for what came next.
        var sink = new RecordingSink();
        var startTimeout = TimeSpan.FromSeconds(2);
        await using var server = await RtmpServer.StartAsync(new RtmpServerOptions
        {
            ListenAddress = "127.0.0.1:0",
            Transport = Transport,
            Ingest = sink,
            PublishKey = Key,
            Limits = new RtmpLimits { SessionStartTimeout = startTimeout },
        }, _loggers, CancellationToken.None);
        await using var client = await ConnectAndCreateStreamAsync(server);
        await client.CommandAsync(1, "publish", 5.0, null, Key, "live");
        Assert.Equal("NetStream.Publish.Start", StatusCode(await client.ReadCommandAsync()));
        await client.SendAsync(6, RtmpMessageType.Video, 1, 0, Hex.Bytes("17 01 000000 AA"));
        await WaitUntil(() => { lock (sink.Tags) return sink.Tags.Count == 1; });
        // Only time passes the start deadline; publishing, the connection is under the idle timeout (30 s).
        await Task.Delay(startTimeout + TimeSpan.FromSeconds(0.5));

        // The next publish goes right behind the FCUnpublish, as a publisher that starts again
        // sends it: the end of a publish starts the start deadline again (2 s here), and a test
        // that waited for the first answer before it sent the publish was closed "no publish or
        // play within 2 s" when its round trip took longer on a loaded machine (ci299).
        await client.CommandAsync(0, "FCUnpublish", 6.0, null, Key);
        await client.CommandAsync(1, "publish", 7.0, null, Key, "live");
        Assert.Equal(["_result", 6.0], (await client.ReadCommandAsync())![..2]);
        Assert.Equal("NetStream.Publish.Start", StatusCode(await client.ReadCommandAsync()));
        Assert.Equal(1, sink.Ended);
        Assert.Equal(2, sink.Started);
        Assert.DoesNotContain("no publish or play", _log.All());
    }

    [Fact]
    public async Task Ping_is_answered_and_acknowledgements_follow_the_window_asked_for()
    {
        await using var client = await ConnectAndCreateStreamAsync();
        await client.SendAsync(2, RtmpMessageType.UserControl, 0, 0, Hex.Bytes("0006 0000BEEF"));
        RtmpMessage? m;
        while ((m = await client.ReadAsync()) is { Type: not RtmpMessageType.UserControl }) { }
        Assert.Equal(Hex.Bytes("0007 0000BEEF"), m!.Payload);

        await client.SendAsync(2, RtmpMessageType.WindowAcknowledgementSize, 0, 0, RtmpControl.UInt32(1000));
        await client.CommandAsync(1, "publish", 5.0, null, Key, "live");
        await client.SendAsync(6, RtmpMessageType.Video, 1, 0, new byte[1500]);
        while ((m = await client.ReadAsync()) is { Type: not RtmpMessageType.Acknowledgement }) { }
        Assert.NotNull(m);
        Assert.True(RtmpControl.ReadUInt32(m) > 1500);
    }

    [Fact]
    public async Task A_command_before_connect_closes_the_connection_with_a_reason()
    {
        await using var client = await RtmpTestClient.ConnectAsync(_server.LocalAddress);
        await client.HandshakeAsync(RtmpTestClient.Encode(3, RtmpMessageType.CommandAmf0, 0, 0, Amf0Writer.Encode("publish", 1.0, null, Key)));
        Assert.True(await client.ClosedAsync());
        await WaitUntil(() => _log.All().Contains("command 'publish' before connect"));
    }


    [Fact]
    public async Task An_HTTP_request_on_the_RTMP_port_is_refused_at_its_first_byte_not_after_the_handshake_timeout()
    {
        // 37 bytes, far short of C0+C1 (1537): curl or a browser pointed at the RTMP port.
        await using var client = await RtmpTestClient.ConnectAsync(_server.LocalAddress);
        var sent = System.Diagnostics.Stopwatch.StartNew();
        await client.SendRawAsync("GET / HTTP/1.1\r\nHost: 127.0.0.1:1935\r\n\r\n"u8.ToArray());
        // One text line says what answered (a ShardStream peer given this port shows it), then the close.
        Assert.Equal("RTMP server: not an RTMP handshake\r\n", System.Text.Encoding.ASCII.GetString(await client.ReadToCloseAsync()));
        var took = sent.Elapsed;
        await WaitUntil(() => _log.All().Contains("closed: "));
        Assert.Contains("handshake version 71 ('G', text: an HTTP request?), not RTMP's 3", _log.All());
        Assert.True(took < TimeSpan.FromSeconds(5), $"closed {took.TotalSeconds:0.0} s after the request:\n{_log.All()}");
    }
    [Fact]
    public async Task Set_chunk_size_before_connect_as_OBS_sends_it_applies_to_the_connect_that_follows()
    {
        await using var client = await RtmpTestClient.ConnectAsync(_server.LocalAddress);
        // Set Chunk Size 4096, then a connect of more than 128 bytes in one chunk (it would be
        // misread at the default 128), in the same write as C2.
        var command = new AmfObject { { "app", "live" }, { "flashVer", "FMLE/3.0 (compatible; FMSc/1.0)" }, { "tcUrl", "rtmp://127.0.0.1:1935/live" }, { "swfUrl", "rtmp://127.0.0.1:1935/live" }, { "type", "nonprivate" } };
        byte[] connect = Amf0Writer.Encode("connect", 1.0, command);
        Assert.True(connect.Length > 128);
        await client.HandshakeAsync([.. RtmpTestClient.Encode(2, RtmpMessageType.SetChunkSize, 0, 0, RtmpControl.UInt32(4096)),
                                     .. RtmpTestClient.Encode(3, RtmpMessageType.CommandAmf0, 0, 0, connect, chunkSize: 4096)]);
        var result = await client.ReadCommandAsync();
        Assert.Equal("NetConnection.Connect.Success", Assert.IsType<AmfObject>(result![3]).Get("code"));
    }

    [Fact]
    public async Task Connections_over_the_per_address_limit_are_refused_at_accept_and_logged()
    {
        await using var server = await RtmpServer.StartAsync(new RtmpServerOptions
        {
            ListenAddress = "127.0.0.1:0",
            Transport = Transport,
            Ingest = _sink,
            Limits = new RtmpLimits { MaxConnectionsPerAddress = 2 },
        }, _loggers, CancellationToken.None);
        await TwoServedAndAThirdRefusedAsync(server, "2 RTMP connections open from 127.0.0.1, the limit per address");
    }

    [Fact]
    public async Task Connections_over_an_eighth_of_the_open_file_limit_are_refused_at_accept_and_counted()
    {
        await using var server = await RtmpServer.StartAsync(new RtmpServerOptions
        {
            ListenAddress = "127.0.0.1:0",
            Transport = Transport,
            Ingest = _sink,
            OpenFileLimit = 16,
        }, _loggers, CancellationToken.None);
        Assert.Equal(2, server.MaxConnections);
        await TwoServedAndAThirdRefusedAsync(server, "2 RTMP connections open, the most this node takes (an eighth of its open-file limit, 16; ulimit -n raises it)");
    }

    /// <summary>
    /// Any stranger can send garbage to the RTMP port, again and again: 10 connections that send
    /// no RTMP are each closed, and said in at most two warnings with their count and the last
    /// one's reason (event 1113, one line per 10 s), each in a debug line (1101); a publisher is
    /// served after them. Before, each was a warning of its own (1101) and nothing counted them.
    /// </summary>
    [Fact]
    public async Task Connections_sending_garbage_are_counted_in_at_most_two_warnings_and_a_publisher_is_served_after_them()
    {
        const int garbage = 10;
        for (int i = 0; i < garbage; i++)
        {
            await using var client = await RtmpTestClient.ConnectAsync(_server.LocalAddress);
            await client.SendRawAsync([0x47, .. Enumerable.Range(0, 200).Select(j => (byte)(j * 7919 + i))]);
            Assert.Equal(RtmpSession.NotRtmpLine.ToArray(), await client.ReadToCloseAsync());
        }
        await WaitUntil(() => _log.All().Contains($"rtmp: {garbage} connection(s) closed so far for bad input"));
        string[] warnings = [.. _log.All().Split('\n').Where(l => l.StartsWith("Warning ", StringComparison.Ordinal))];
        Assert.True(warnings.Length <= 2, $"{warnings.Length} warnings for {garbage} garbage connections:\n{string.Join('\n', warnings)}");
        Assert.Contains("handshake version 71 ('G', text: an HTTP request?), not RTMP's 3", warnings[^1]);
        Assert.Equal(garbage, _log.All().Split('\n').Count(l => l.StartsWith("Debug 1101 ", StringComparison.Ordinal)));

        await using var publisher = await ConnectAndCreateStreamAsync();
        await publisher.CommandAsync(1, "publish", 5.0, null, Key, "live");
        Assert.Equal("NetStream.Publish.Start", StatusCode(await publisher.ReadCommandAsync()));
    }

    /// <summary>Two connections are served, a third is refused at accept with <paramref name="reason"/> in one counted line.</summary>
    private async Task TwoServedAndAThirdRefusedAsync(RtmpServer server, string reason)
    {
        await using var a = await RtmpTestClient.ConnectAsync(server.LocalAddress);
        await using var b = await RtmpTestClient.ConnectAsync(server.LocalAddress);
        await WaitUntil(() => server.OpenConnections == 2);
        try
        {
            await using var c = await RtmpTestClient.ConnectAsync(server.LocalAddress);
            Assert.True(await c.ClosedAsync());
        }
        catch (System.Net.Sockets.SocketException)
        {
            // Reset by the server before the connect returned: refused as well.
        }
        await WaitUntil(() => _log.All().Contains("rtmp: 1 connection(s) refused so far, the last from 127.0.0.1:"));
        Assert.Contains(reason, _log.All());
        await a.HandshakeAsync(); // the first two are served
        Assert.Equal(3, a.S0S1S2[0]);
    }

    internal static async Task WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("condition not met within 60 s");
            await Task.Delay(20);
        }
    }
}

/// <summary>The same, on the transport of the coordinator's ingest: each connection read by a thread of its own.</summary>
public sealed class RtmpSessionOnReadingThreadsTests : RtmpSessionTests
{
    protected override ITransport Transport => TcpTransport.ReadingThreads;
}

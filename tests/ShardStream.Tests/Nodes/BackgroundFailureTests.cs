using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>An exception nobody expected ends what it broke, with a log line; it never vanishes in a task nobody awaits.</summary>
public sealed class BackgroundFailureTests
{
    [Fact]
    public async Task A_frame_handler_that_throws_ends_its_link_with_the_reason_and_logs_the_exception()
    {
        var net = new VirtualNetwork();
        var listener = await net.Host("a").ListenAsync("a:1", default);
        var client = await net.Host("b").ConnectAsync("a:1", default);
        var server = (await listener.AcceptAsync(default))!;
        var log = new RecordingLogger();
        await using var link = new Link(server, "test link", new LinkOptions(), log, TimeProvider.System);
        link.Start((_, _, _) => throw new KeyNotFoundException("a bug in a handler"));

        new Heartbeat(1).Write(client.Pipe.Output);
        new End(0, 1, 2).Write(client.Pipe.Output);
        await client.Pipe.Output.FlushAsync();

        var reason = await link.Closed.WaitAsync(Overlay.Deadline);
        Assert.Equal(CloseCode.InternalError, reason.Code);
        Assert.Contains("a bug in a handler", reason.Text);
        Assert.IsType<KeyNotFoundException>(reason.Exception);
        Assert.Contains(log.Lines, l => l.Level == Microsoft.Extensions.Logging.LogLevel.Error && l.Exception is KeyNotFoundException);
    }

    [Fact]
    public async Task A_background_task_that_fails_is_logged_with_what_it_was()
    {
        var log = new RecordingLogger();
        var failing = Task.Run(() => throw new InvalidOperationException("boom"));
        failing.Observe(log, "sending moves");
        await Overlay.WaitUntilAsync(() => !log.Lines.IsEmpty, "the failure is logged");
        var line = Assert.Single(log.Lines);
        Assert.Equal(9100, line.Id.Id);
        Assert.Contains("sending moves", line.Message);
        Assert.IsType<InvalidOperationException>(line.Exception);
    }
}

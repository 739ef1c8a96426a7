using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>A link that ends says why with a code its owner can match on, not only a text.</summary>
public sealed class LinkCloseReasonTests
{
    [Fact]
    public async Task A_frame_of_length_zero_ends_the_link_as_a_protocol_violation()
    {
        var (link, client) = await OpenAsync();
        await using var _ = link;
        // A length field of 0: no frame can be that short.
        await client.Pipe.Output.WriteAsync(new byte[] { 0, 0, 0, 0 });

        var reason = await link.Closed.WaitAsync(Overlay.Deadline);
        Assert.Equal(CloseCode.ProtocolViolation, reason.Code);
        Assert.True(reason.IsViolation);
        Assert.Equal("protocol error: frame with length 0", reason.Text);
        Assert.IsType<ProtocolException>(reason.Exception);
    }

    [Fact]
    public async Task A_goodbye_from_the_other_side_ends_the_link_with_its_words()
    {
        var (link, client) = await OpenAsync();
        await using var _ = link;
        new Goodbye(GoodbyeCode.Refused, "go away").Write(client.Pipe.Output);
        await client.Pipe.Output.FlushAsync();
        await client.CloseOutputAsync();

        var reason = await link.Closed.WaitAsync(Overlay.Deadline);
        Assert.Equal(CloseCode.Goodbye, reason.Code);
        Assert.False(reason.IsViolation);
        Assert.Equal("the other side said goodbye (Refused): go away", reason.Text);
        Assert.Equal(GoodbyeCode.Refused, link.ReceivedGoodbye);
    }

    [Fact]
    public async Task A_connection_closed_without_a_goodbye_is_told_from_one_this_side_ended()
    {
        var (remote, client) = await OpenAsync();
        await using var _ = remote;
        await client.CloseOutputAsync();
        Assert.Equal(CloseCode.RemoteClosed, (await remote.Closed.WaitAsync(Overlay.Deadline)).Code);

        var (aborted, _) = await OpenAsync();
        await using var __ = aborted;
        aborted.Abort("replaced");
        Assert.Equal(new CloseReason(CloseCode.Aborted, "replaced"), await aborted.Closed.WaitAsync(Overlay.Deadline));
    }

    private static async Task<(Link Link, IConnection Client)> OpenAsync()
    {
        var net = new VirtualNetwork();
        var listener = await net.Host("a").ListenAsync("a:1", default);
        var client = await net.Host("b").ConnectAsync("a:1", default);
        var server = (await listener.AcceptAsync(default))!;
        var link = new Link(server, "test link", new LinkOptions(), NullLogger.Instance, TimeProvider.System);
        link.Start((_, _, _) => { });
        return (link, client);
    }
}

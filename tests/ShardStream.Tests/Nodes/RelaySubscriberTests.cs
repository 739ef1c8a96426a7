using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Who a node serves, as the relay lists it: a closed link is not a child any more, even before
/// the node's unsubscription (a continuation of the close, run on the thread pool) has run.
/// ResilienceTests once saw a leaver's children listed after LeaveAsync had closed every link,
/// at load average 80, when that continuation ran late.
/// </summary>
public sealed class RelaySubscriberTests
{
    [Fact]
    public async Task A_closed_link_is_not_listed_as_served()
    {
        var network = new VirtualNetwork();
        await using var listener = await network.Host("parent").ListenAsync("parent:1", CancellationToken.None);
        var connection = await network.Host("child").ConnectAsync("parent:1", CancellationToken.None);
        var relay = new Relay(2, 1 << 20, TimeSpan.FromSeconds(10), TimeProvider.System);
        await using var open = new Link(connection, "open", new TestOptions().LinkOptions, NullLogger.Instance, TimeProvider.System);
        var closedConnection = await network.Host("child").ConnectAsync("parent:1", CancellationToken.None);
        await using var closed = new Link(closedConnection, "closed", new TestOptions().LinkOptions, NullLogger.Instance, TimeProvider.System);
        relay.Subscribe(open, 0, 0);
        relay.Subscribe(closed, 0, 0);
        relay.Subscribe(closed, 1, 0);

        closed.Abort("the child left");

        Assert.Equal([open], relay.Subscribers());
        Assert.Equal([open], relay.SubscribersOf(0));
        Assert.Empty(relay.SubscribersOf(1));
    }

    [Fact]
    public async Task A_retired_relay_cuts_off_its_children_and_any_link_that_subscribes_later()
    {
        var network = new VirtualNetwork();
        await using var listener = await network.Host("parent").ListenAsync("parent:1", CancellationToken.None);
        var relay = new Relay(2, 1 << 20, TimeSpan.FromSeconds(10), TimeProvider.System);
        await using var served = new Link(await network.Host("child").ConnectAsync("parent:1", CancellationToken.None), "served", new TestOptions().LinkOptions, NullLogger.Instance, TimeProvider.System);
        await using var late = new Link(await network.Host("child").ConnectAsync("parent:1", CancellationToken.None), "late", new TestOptions().LinkOptions, NullLogger.Instance, TimeProvider.System);
        relay.Subscribe(served, 0, 0);

        relay.Retire("a new run");
        // An attach whose handshake began before the new run subscribes afterwards.
        relay.Subscribe(late, 1, 0);

        Assert.Equal("a new run", (await served.Closed.WaitAsync(TimeSpan.FromSeconds(10))).Text);
        Assert.Equal("a new run", (await late.Closed.WaitAsync(TimeSpan.FromSeconds(10))).Text);
        Assert.Empty(relay.Subscribers());
    }

    private sealed record TestOptions : NodeOptions;
}

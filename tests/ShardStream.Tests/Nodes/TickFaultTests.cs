using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The heartbeat tick of a node serves every link: a fault in the tick of one link (a bug) must
/// close that link with a logged reason and leave heartbeats and failure detection running for
/// the others, instead of ending the tick loop for the whole node without a word.
/// </summary>
public sealed class TickFaultTests
{
    [Fact]
    public async Task A_link_whose_tick_throws_is_closed_with_a_reason_and_the_other_links_keep_being_ticked()
    {
        var network = new VirtualNetwork();
        await using var other = await network.Host("other").ListenAsync("other:1", CancellationToken.None);
        var log = new RecordingLogger();
        await using var node = new FaultyTickNode(network.Host("node"), log);
        await node.StartAsync();
        var bad = node.Open(await network.Host("node").ConnectAsync("other:1", CancellationToken.None), "bad");
        var good = node.Open(await network.Host("node").ConnectAsync("other:1", CancellationToken.None), "good");

        var reason = await bad.Closed.WaitAsync(Overlay.Deadline);
        int ticksOfGoodThen = node.TicksOf("good");
        // The loop goes on: the good link is ticked again, several times, after the bad one went.
        await Overlay.WaitUntilAsync(() => node.TicksOf("good") >= ticksOfGoodThen + 3, "the other link is still ticked");

        Assert.Contains("heartbeat tick failed", reason.Text);
        Assert.Contains("tick fault for the test", reason.Text);
        Assert.False(good.Closed.IsCompleted, "the good link closed too");
        Assert.Contains(log.Lines, l => l.Id.Id == 8004 && l.Message.Contains("bad") && l.Message.Contains("tick fault for the test"));
    }

    /// <summary>A node whose tick of the link named "bad" throws, and which counts the ticks of the others.</summary>
    private sealed class FaultyTickNode(ITransport transport, RecordingLogger log)
        : Node(new PeerOptions { JoinAddress = "coord:1", ListenAddress = "node:1" }, transport, log, TimeProvider.System)
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> _ticks = new();

        public Task StartAsync() => ListenAsync(CancellationToken.None);

        public Link Open(IConnection connection, string name) => NewLink(connection, name);

        public int TicksOf(string name) => _ticks.GetValueOrDefault(name);

        private protected override bool ShownAliveOtherwise(Link link)
        {
            if (link.Name == "bad") throw new InvalidOperationException("tick fault for the test");
            _ticks.AddOrUpdate(link.Name, 1, (_, n) => n + 1);
            return false;
        }

        private protected override void OnSlowChild(SlowChildren.Finding finding)
        {
        }

        private protected override Task OnJoinAsync(Link link, ShardStream.Wire.Hello hello) => Task.CompletedTask;

        private protected override ShardStream.Trust.StreamRun? AdmissionRun => null;

        private protected override ulong NodeId => 7;

        private protected override int ShardCount => 1;
    }
}

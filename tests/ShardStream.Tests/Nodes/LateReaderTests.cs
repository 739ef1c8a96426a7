using Microsoft.Extensions.Logging;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A child whose read loop runs behind (a loaded process: its parent's bytes arrived and wait in
/// its receive buffer) is late itself, not its parent: the failure detector and the checks of what
/// a parent sends (events 9202-9204) excuse a link whose input waits unread
/// (<see cref="ShardStream.Transport.IConnection.HasUnreadInput"/>, a TCP socket's receive
/// buffer). Connections of the in-process virtual network said none ever waited, so in every
/// in-process test a child whose reading ran behind on a loaded test host judged its parent by the
/// chunks it had read, while its control link, which carries little, kept bringing the head:
/// ci273 (load about 100) cut the honest-enough relay of
/// <c>TrickledStreamTests.The_children_of_a_relay_that_keeps_them_behind_by_less_than_the_lag_bound_…</c>
/// as a trickle (9203), which TCP would have excused.
/// </summary>
public class LateReaderTests
{
    /// <remarks>
    /// K = 1, heartbeat timeout 2 s: an honest relay's children stop reading its link for 6 s
    /// (longer than two heartbeat timeouts, less than the 1 MiB the receiving side holds at
    /// 160 KiB/s) while the source runs and their control links go on, then read again. With
    /// <paramref name="stuttering"/>, the children's tick loops also do not run for 0.4 s of every
    /// 0.8 s (<see cref="PausingTime"/>): half of every window counts as paused, and the windows
    /// are judged all the same (lengthened by that time), the held bytes read by then.
    /// </remarks>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_child_whose_reading_runs_behind_keeps_its_parent_and_writes_the_whole_stream(bool stuttering)
    {
        var log = new RecordingLogger();
        await using var overlay = await Overlay.StartAsync(shards: 1, minPeers: 3, heartbeatTimeout: TimeSpan.FromSeconds(2), loggers: log);
        var relay = await overlay.AddPeerAsync();
        var readers = new List<HeldReadingTransport>();
        for (int i = 0; i < 4; i++)
            await overlay.AddPeerAsync(network: t =>
            {
                var held = new HeldReadingTransport(t, overlay.PeerById(relay.Id).Host);
                readers.Add(held);
                return held;
            }, time: stuttering ? new PausingTime(TimeSpan.FromSeconds(0.8), TimeSpan.FromSeconds(0.4)) : null);
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, seed: 1));
        await Overlay.WaitUntilAsync(() => overlay.Peers.All(p => p.Peer.BytesWritten > 0), "every viewer wrote the first bytes");
        var children = overlay.Peers.Where(p => p.Peer.Id != relay.Id && p.Peer.ParentIds().All(id => id == relay.Id)).ToList();
        Assert.NotEmpty(children);

        await using (var source = LiveSource.Start(overlay, rate: 160 * 1024, maxSeconds: 20, seed: 2))
        {
            await Overlay.WaitUntilAsync(() => source.Elapsed >= TimeSpan.FromSeconds(4), "the source ran 4 s");
            int before = log.Lines.Count;
            foreach (var r in readers) r.Held = true;
            var heldAt = source.Elapsed;
            await Overlay.WaitUntilAsync(() => source.Elapsed >= heldAt + TimeSpan.FromSeconds(6), "the children did not read their parent's link for 6 s");
            foreach (var r in readers) r.Held = false;
            await Overlay.WaitUntilAsync(() => source.Ended, "the source wrote its 20 s", TimeSpan.FromSeconds(120));
            var said = log.Lines.Skip(before).Where(l => l.Level >= LogLevel.Information && l.Message.StartsWith($"parent {relay.Id} (", StringComparison.Ordinal)).ToList();
            Assert.True(said.Count == 0, $"a child judged the relay whose bytes it had not read:\n{string.Join("\n", said.Select(l => $"{l.Id.Id} {l.Message}"))}");
            Assert.All(children, c => Assert.Equal([relay.Id], c.Peer.ParentIds()));
        }
        await overlay.EndAsync(TimeSpan.FromSeconds(120));
        foreach (var p in overlay.Peers) await overlay.AssertIdenticalAsync(p);
    }
}

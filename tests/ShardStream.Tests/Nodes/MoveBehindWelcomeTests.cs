using System.Buffers;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Adversary;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A Move that comes right behind a joiner's Welcome (the next joiner's placement, or a latency
/// move, while the Welcome is still on its way) is later than the Welcome's plan and wins over it,
/// however the joiner's threads run: the peer ends under the parent the Move names, as the plan has it.
/// </summary>
public sealed class MoveBehindWelcomeTests
{
    [Fact]
    public async Task A_move_read_right_behind_the_welcome_wins_over_the_welcomes_parent_even_when_that_attach_completes_last()
    {
        var net = new VirtualNetwork();
        Coordinator? coordinator = null;
        int welcomeParent = -1, moveParent = -1, joinerId = -1;
        // Peers 1 and 2 fill the coordinator's two slots (K = 1); the joiner goes under one of
        // them. Its Welcome is followed at once by a Move of its shard to the other one, and the
        // Welcome's parent is made far (400 ms each way), so the Welcome's attach completes last.
        var tampering = new TamperingTransport(net.Host("coord"), (type, frame) =>
        {
            if (type != FrameType.Welcome) return [frame];
            var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(frame, Protocol.FrameHeaderLength, frame.Length - Protocol.FrameHeaderLength));
            if (!Welcome.TryRead(ref reader, out var welcome) || welcome.PeerId != 3) return [frame];
            var entry = Assert.Single(welcome.Shards);
            welcomeParent = (int)entry.ParentId;
            moveParent = welcomeParent == 1 ? 2 : 1;
            joinerId = (int)welcome.PeerId;
            net.SetLatency("p3", $"p{welcomeParent}", TimeSpan.FromMilliseconds(400));
            var ticket = coordinator!.IssueTicket(moveParent, joinerId, 0);
            return [frame, Frame(new Move([new ShardAssignment(0, AssignmentKind.Redirect, (ulong)moveParent, 0, $"p{moveParent}:1", ticket)]).Write)];
        });
        tampering.Active = true;
        var timeouts = (Heartbeat: TimeSpan.FromSeconds(30), Interval: TimeSpan.FromSeconds(1));
        coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", ShardCount = 1, HeartbeatTimeout = timeouts.Heartbeat, HeartbeatInterval = timeouts.Interval }, tampering, Overlay.Loggers);
        await using var _ = coordinator;
        await coordinator.StartAsync(default);
        var peers = new List<Peer>();
        try
        {
            for (int i = 1; i <= 2; i++)
            {
                var peer = new Peer(Options(i), net.Host($"p{i}"), Overlay.Loggers);
                peers.Add(peer);
                await peer.StartAsync(default).WaitAsync(Overlay.Deadline);
            }

            // The joiner's own threads decide when its read loop takes the Move in: here its
            // "joined" line is slow to log (a loaded machine: until the Move is being applied),
            // so the Move is in before the joiner has started its Welcome's attaches.
            using var capture = new LogCapture();
            var joiner = new Peer(Options(3), net.Host("p3"), new HeldLogLine(capture.Factory, 1703, new ManualResetEventSlim(), releasedBy: 1705));
            peers.Add(joiner);
            await joiner.StartAsync(default).WaitAsync(Overlay.Deadline);
            Assert.Equal(3, joinerId);

            // Both attaches end: the Welcome's (superseded, or installed in place of the Move's).
            await Overlay.WaitUntilAsync(() => capture.Has(LogLevel.Debug, "superseded by a later move") || capture.Has(LogLevel.Debug, "moved to another parent"),
                "the joiner is done with both attaches");
            Assert.True(joiner.ParentIds()[0] == moveParent,
                $"the joiner gets shard 0 from peer {joiner.ParentIds()[0]}: its Welcome named peer {welcomeParent}, the Move behind it peer {moveParent}");
        }
        finally
        {
            foreach (var p in peers) await p.DisposeAsync();
        }
    }

    /// <summary>
    /// A Move whose attach is still under way when the control link breaks is older than the
    /// Welcome of the rejoin: the coordinator's plan may have changed since (a later Move lost
    /// with the link), and the Welcome says where the plan has the peer now. Here peer 3 is under
    /// one relay; a Move to the other relay (far: its attach takes seconds) is sent on its
    /// control link, which breaks while that attach is under way; the rejoin's Welcome, in the
    /// same place, names the first relay, whose link the peer still has. The old attach, when it
    /// completes, must not take the peer away from it.
    /// </summary>
    [Fact]
    public async Task A_move_still_attaching_when_the_control_link_breaks_does_not_win_over_the_rejoins_welcome()
    {
        var net = new VirtualNetwork();
        Coordinator? coordinator = null;
        int planParent = -1, staleParent = -1;
        var armed = 0;
        // Once armed, the next frame the coordinator sends peer 3 is followed by a Move to the other relay.
        var tampering = new TamperingTransport(net.Host("coord"), (type, frame) =>
        {
            if (Interlocked.CompareExchange(ref armed, 0, 1) != 1) return [frame];
            var ticket = coordinator!.IssueTicket(staleParent, 3, 0);
            return [frame, Frame(new Move([new ShardAssignment(0, AssignmentKind.Redirect, (ulong)staleParent, 0, $"p{staleParent}:1", ticket)]).Write)];
        })
        { OnlyTo = "p3" };
        var timeouts = (Heartbeat: TimeSpan.FromSeconds(30), Interval: TimeSpan.FromSeconds(1));
        coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", ShardCount = 1, HeartbeatTimeout = timeouts.Heartbeat, HeartbeatInterval = timeouts.Interval }, tampering, Overlay.Loggers);
        await using var _ = coordinator;
        await coordinator.StartAsync(default);
        var peers = new List<Peer>();
        try
        {
            for (int i = 1; i <= 2; i++)
            {
                var peer = new Peer(Options(i), net.Host($"p{i}"), Overlay.Loggers);
                peers.Add(peer);
                await peer.StartAsync(default).WaitAsync(Overlay.Deadline);
            }

            using var capture = new LogCapture();
            var joiner = new Peer(Options(3), net.Host("p3"), capture.Factory);
            peers.Add(joiner);
            await joiner.StartAsync(default).WaitAsync(Overlay.Deadline);
            await Overlay.WaitUntilAsync(() => joiner.ParentIds()[0] is 1 or 2, "peer 3 is attached to a relay");
            planParent = joiner.ParentIds()[0];
            staleParent = planParent == 1 ? 2 : 1;
            net.SetLatency("p3", $"p{staleParent}", TimeSpan.FromMilliseconds(700));
            tampering.Active = true;
            Volatile.Write(ref armed, 1);
            await Overlay.WaitUntilAsync(() => capture.Has(LogLevel.Information, $"to peer {staleParent} "), "peer 3 starts the Move's attach");
            net.Cut("p3", "coord");
            await Overlay.WaitUntilAsync(() => capture.Has(LogLevel.Information, "joined again in the same place"), "peer 3 joins again");
            Assert.Equal(0, Volatile.Read(ref armed));

            // The old attach ends either way: superseded, or installed in place of the relay the plan has.
            await Overlay.WaitUntilAsync(() => capture.Has(LogLevel.Debug, "superseded by a later move") || capture.Has(LogLevel.Debug, "moved to another parent"),
                "peer 3 is done with the old Move's attach");
            Assert.True(joiner.ParentIds()[0] == planParent,
                $"peer 3 gets shard 0 from peer {joiner.ParentIds()[0]}: the rejoin's Welcome named peer {planParent}, the Move from before the break peer {staleParent}");
        }
        finally
        {
            foreach (var p in peers) await p.DisposeAsync();
        }
    }

    /// <summary>
    /// The peer reports Attached once its Welcome's attaches, and each Move's, are done; the
    /// coordinator counts the reports on each control link against the Moves it queued there
    /// behind the stream, and sends a Move ahead only once the peer has read them all. A Move read
    /// on a control link that broke while its attach was under way was reported on the rejoin's
    /// new link: one report early there. Here (the set-up of the test above) the coordinator must
    /// hear two reports from peer 3: its first Welcome's and its rejoin's.
    /// </summary>
    [Fact]
    public async Task A_move_read_on_a_control_link_that_broke_is_not_reported_on_the_rejoins_link()
    {
        var net = new VirtualNetwork();
        Coordinator? coordinator = null;
        int staleParent = -1;
        var armed = 0;
        var tampering = new TamperingTransport(net.Host("coord"), (type, frame) =>
        {
            if (Interlocked.CompareExchange(ref armed, 0, 1) != 1) return [frame];
            var ticket = coordinator!.IssueTicket(staleParent, 3, 0);
            return [frame, Frame(new Move([new ShardAssignment(0, AssignmentKind.Redirect, (ulong)staleParent, 0, $"p{staleParent}:1", ticket)]).Write)];
        })
        { OnlyTo = "p3" };
        using var coordinatorLog = new LogCapture();
        coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", ShardCount = 1, HeartbeatTimeout = TimeSpan.FromSeconds(30), HeartbeatInterval = TimeSpan.FromSeconds(1) }, tampering, coordinatorLog.Factory);
        await using var _ = coordinator;
        await coordinator.StartAsync(default);
        var peers = new List<Peer>();
        try
        {
            for (int i = 1; i <= 2; i++)
            {
                var peer = new Peer(Options(i), net.Host($"p{i}"), Overlay.Loggers);
                peers.Add(peer);
                await peer.StartAsync(default).WaitAsync(Overlay.Deadline);
            }

            using var capture = new LogCapture();
            var joiner = new Peer(Options(3), net.Host("p3"), capture.Factory);
            peers.Add(joiner);
            await joiner.StartAsync(default).WaitAsync(Overlay.Deadline);
            await Overlay.WaitUntilAsync(() => joiner.ParentIds()[0] is 1 or 2, "peer 3 is attached to a relay");
            staleParent = joiner.ParentIds()[0] == 1 ? 2 : 1;
            net.SetLatency("p3", $"p{staleParent}", TimeSpan.FromMilliseconds(700));
            tampering.Active = true;
            Volatile.Write(ref armed, 1);
            await Overlay.WaitUntilAsync(() => capture.Has(LogLevel.Information, $"to peer {staleParent} "), "peer 3 starts the Move's attach");
            net.Cut("p3", "coord");
            await Overlay.WaitUntilAsync(() => capture.Has(LogLevel.Information, "joined again in the same place"), "peer 3 joins again");
            await Overlay.WaitUntilAsync(() => capture.Has(LogLevel.Debug, "move of shard(s) 0 applied"), "peer 3 is done with the old Move");

            // A Leave after it on the same link: once the coordinator has read it, it has read every report before it.
            var leaving = joiner.LeaveAsync(TimeSpan.FromSeconds(10));
            await Overlay.WaitUntilAsync(() => coordinatorLog.Has(LogLevel.Information, "peer 3 is leaving"), "the coordinator reads peer 3's Leave");
            int reports = coordinatorLog.Lines.Count(l => l.Message.Contains("peer 3 attached to all its parents", StringComparison.Ordinal));
            Assert.True(reports == 2, $"the coordinator heard {reports} Attached reports from peer 3, not 2 (its Welcome's, its rejoin's)");
            await leaving.WaitAsync(Overlay.Deadline);
        }
        finally
        {
            foreach (var p in peers) await p.DisposeAsync();
        }
    }

    private static PeerOptions Options(int i) => new()
    {
        JoinAddress = "coord:1",
        ListenAddress = $"p{i}:1",
        HeartbeatTimeout = TimeSpan.FromSeconds(30),
        HeartbeatInterval = TimeSpan.FromSeconds(1),
    };

    private static byte[] Frame(Action<IBufferWriter<byte>> write)
    {
        var buffer = new ArrayBufferWriter<byte>();
        write(buffer);
        return buffer.WrittenSpan.ToArray();
    }
}

using System.Buffers;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// What a peer tells the coordinator when a parent link closes (<see cref="ParentLossReporter"/>).
/// </summary>
public sealed class ParentLossReporterTests
{
    /// <summary>
    /// A viewer cut a stale relay off for what it sent, and completed the stream from another
    /// parent before that link's close was handled: the report was dropped, so the coordinator
    /// never refused the liar (StaleRunTests, red in a fresh-clone CI). A parent cut off for what
    /// it sent is reported even then; a parent lost for any other reason after the end is not.
    /// </summary>
    [Fact]
    public async Task A_parent_cut_off_for_what_it_sent_is_reported_even_when_the_stream_completed_meanwhile()
    {
        await using var parentLink = await ParentLink.OpenAsync();
        var fromParent = parentLink.FromParent;

        var complete = new Reassembler(1, 0, 0);
        complete.SetEnd(0, 0, []);
        Assert.True(complete.IsComplete);

        var violation = new CloseReason(CloseCode.BadData, "bad data: hash list of shard 0 from chunk 0 does not carry the stream's signature for this run");
        var peer = new StubPeer(complete);
        Report(peer, fromParent, violation);
        var lost = SingleParentLost(peer);
        Assert.Equal(1UL, lost.ParentId);
        Assert.Equal([new ShardStart(0, 24)], lost.Shards);
        Assert.Equal(violation.Text, lost.Violation);

        // Closed for another reason after the end: nothing to repair, nothing said.
        var quiet = new StubPeer(complete);
        Report(quiet, fromParent, new CloseReason(CloseCode.Closed, "stream complete"));
        Assert.Empty(quiet.Sent);
    }

    /// <summary>
    /// A viewer cut a stale relay off for what it sent, and a move gave the relay's shard another
    /// parent before that link's close was handled (StaleRunTests, red in a fresh-clone CI): the
    /// link was the parent of nothing any more, and the report was dropped. The liar is accused
    /// with the shard it served when it sent what failed; a parent closed for any other reason
    /// after its shards moved is not reported (the move repaired them).
    /// </summary>
    [Fact]
    public async Task A_parent_cut_off_for_what_it_sent_is_reported_with_the_shards_it_served_then_even_when_a_move_took_them_meanwhile()
    {
        await using var parentLink = await ParentLink.OpenAsync();
        var fromParent = parentLink.FromParent;
        var running = new Reassembler(1, 0, 0);
        var violation = new CloseReason(CloseCode.BadData, "bad data: hash list of shard 0 from chunk 0 does not carry the stream's signature for this run");

        var moved = new StubPeer(running, current: [], whenCutOff: [new ShardStart(0, 0)]);
        Report(moved, fromParent, violation);
        var lost = SingleParentLost(moved);
        Assert.Equal(1UL, lost.ParentId);
        Assert.Equal([new ShardStart(0, 0)], lost.Shards);
        Assert.Equal(violation.Text, lost.Violation);

        var quiet = new StubPeer(running, current: [], whenCutOff: []);
        Report(quiet, fromParent, new CloseReason(CloseCode.ConnectionLost, "connection lost: connection reset by peer"));
        Assert.Empty(quiet.Sent);
    }

    /// <summary>
    /// A parent cut off for a lag never made up is reported with that cause to a coordinator of
    /// version 15 or later, and without it to an older one (whose ParentLost has no such byte and
    /// which would take the frame for malformed): the version is the one of the control link when
    /// the report goes, which a rejoin since the cut may have changed. A cut for another reason has
    /// no cause.
    /// </summary>
    [Theory]
    [InlineData(Protocol.LossCauseVersion, true)]
    [InlineData(Protocol.LossCauseVersion - 1, false)]
    public async Task A_lag_cut_is_reported_with_its_cause_only_to_a_coordinator_that_reads_it(int version, bool said)
    {
        await using var parentLink = await ParentLink.OpenAsync();
        var fromParent = parentLink.FromParent;
        var running = new Reassembler(1, 0, 0);
        var cut = new CloseReason(CloseCode.Closed, "shard 0 is more than 23 s behind");

        var peer = new StubPeer(running) { Version = (ushort)version };
        var reporter = new ParentLossReporter(new PeerOptions { JoinAddress = "coord:1" }, peer, new ShardStalls(), NullLogger.Instance, TimeProvider.System, CancellationToken.None);
        reporter.CutForLag(fromParent);
        reporter.OnParentClosed(fromParent, 1, cut);
        var lost = SingleParentLost(peer);
        Assert.Equal(said ? LossCause.Lag : LossCause.Lost, lost.Cause);
        var frame = Assert.Single(peer.Sent);
        Assert.Equal(said, frame.Length == FrameSize(new ParentLost(1, lost.Shards, "", LossCause.Lag)));

    }

    /// <summary>
    /// A report no Move answers, with its shard still without a parent, is due a rejoin in place
    /// after <see cref="ParentLossReporter.UnansweredAfter"/>, once per bound, at most
    /// <see cref="ParentLossReporter.MaxUnansweredRejoins"/> times in ten bounds; a Move about the
    /// shard taken in answers it.
    /// </summary>
    [Fact]
    public async Task A_report_no_move_answers_is_due_a_rejoin_after_the_bound_and_a_bounded_number_of_times()
    {
        await using var parentLink = await ParentLink.OpenAsync();
        var clock = new ManualClock();
        var peer = new StubPeer(new Reassembler(1, 0, 0));
        var reporter = new ParentLossReporter(new PeerOptions { JoinAddress = "coord:1" }, peer, new ShardStalls(), NullLogger.Instance, clock, CancellationToken.None);
        var bound = reporter.UnansweredAfter;
        Assert.Equal(TimeSpan.FromSeconds(15), bound);
        reporter.OnParentClosed(parentLink.FromParent, 1, new CloseReason(CloseCode.ConnectionLost, "connection lost: connection reset by peer"));
        SingleParentLost(peer);

        clock.Advance(bound - TimeSpan.FromMilliseconds(1));
        Assert.Null(reporter.Unanswered());
        clock.Advance(TimeSpan.FromMilliseconds(1));
        var due = Assert.NotNull(reporter.Unanswered());
        Assert.Equal(1UL, due.Parent);
        Assert.Equal([0], due.Shards);
        // Its wait starts again: the next one a bound later, and no more than the most in ten bounds.
        Assert.Null(reporter.Unanswered());
        for (int i = 1; i < ParentLossReporter.MaxUnansweredRejoins; i++)
        {
            clock.Advance(bound);
            Assert.NotNull(reporter.Unanswered());
        }
        clock.Advance(bound);
        Assert.Null(reporter.Unanswered());
        clock.Advance(bound * 10);
        Assert.NotNull(reporter.Unanswered());

        // A Move about the shard taken in answers the report.
        clock.Advance(bound);
        peer.Generation++;
        Assert.Null(reporter.Unanswered());
        clock.Advance(bound * 20);
        Assert.Null(reporter.Unanswered());
    }

    /// <summary>A clock that moves only when told.</summary>
    private sealed class ManualClock : TimeProvider
    {
        private long _ticks = 1;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => _ticks;

        public void Advance(TimeSpan by) => _ticks += by.Ticks;
    }

    private static int FrameSize(ParentLost message)
    {
        var buffer = new ArrayBufferWriter<byte>();
        message.Write(buffer);
        return buffer.WrittenCount;
    }

    private sealed record TestOptions : NodeOptions;

    /// <summary>A child's link from its parent, on a virtual network (the parent's side kept open).</summary>
    private sealed class ParentLink(IConnectionListener listener, IConnection parentSide, Link fromParent) : IAsyncDisposable
    {
        public Link FromParent => fromParent;

        public static async Task<ParentLink> OpenAsync()
        {
            var network = new VirtualNetwork();
            var listener = await network.Host("parent").ListenAsync("parent:1", CancellationToken.None);
            var childSide = await network.Host("child").ConnectAsync("parent:1", CancellationToken.None);
            var parentSide = (await listener.AcceptAsync(CancellationToken.None))!;
            return new ParentLink(listener, parentSide, new Link(childSide, "from parent", new TestOptions().LinkOptions, NullLogger.Instance, TimeProvider.System));
        }

        public async ValueTask DisposeAsync()
        {
            await fromParent.DisposeAsync();
            await parentSide.DisposeAsync();
            await listener.DisposeAsync();
        }
    }

    /// <summary>A reporter of <paramref name="peer"/> handles the close of its link to parent 1.</summary>
    private static void Report(StubPeer peer, Link fromParent, CloseReason closed) =>
        new ParentLossReporter(new PeerOptions { JoinAddress = "coord:1" }, peer, new ShardStalls(), NullLogger.Instance, TimeProvider.System, CancellationToken.None)
            .OnParentClosed(fromParent, 1, closed);

    /// <summary>The one frame <paramref name="peer"/> sent the coordinator, which is a ParentLost.</summary>
    private static ParentLost SingleParentLost(StubPeer peer)
    {
        var frame = new ReadOnlySequence<byte>(Assert.Single(peer.Sent));
        Assert.True(FrameCodec.TryReadFrame(ref frame, out var type, out var body));
        Assert.Equal(FrameType.ParentLost, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(ParentLost.TryRead(ref reader, out var lost));
        return lost;
    }

    /// <summary>
    /// A peer with <paramref name="current"/> the shards still on the closing parent link (shard 0
    /// by default), and <paramref name="whenCutOff"/> those it had when it sent what cut it off.
    /// </summary>
    private sealed class StubPeer(Reassembler reassembler, ShardStart[]? current = null, ShardStart[]? whenCutOff = null) : IPeerParents
    {
        public List<byte[]> Sent { get; } = [];

        public Reassembler Reassembler => reassembler;

        public StreamVerifier Verifier => throw new NotSupportedException();

        public Relay Relay => throw new NotSupportedException();

        public bool Leaving => false;

        public ushort Version { get; init; } = Protocol.Version;

        public bool IsParentOf(int shard, Link link) => shard == 0;

        public (Link? Parent, long Since) ParentOf(int shard) => (null, 0);

        public ShardStart[] TakeShardsOf(Link link) => current ?? [new ShardStart(0, 24)];

        public ShardStart[] TakeShardsWhenCutOff(Link link) => whenCutOff ?? [];

        public ShardStart[] WithoutParent(byte[] shards) => [];

        public long Generation { get; set; }

        public long MoveGenerationOf(int shard) => Generation;

        public bool IsCoordinator(Link link) => false;

        public void SendToCoordinator(Action<IBufferWriter<byte>> write)
        {
            var buffer = new ArrayBufferWriter<byte>();
            write(buffer);
            Sent.Add(buffer.WrittenSpan.ToArray());
        }

        public void Fail(string reason) => throw new InvalidOperationException(reason);

        public void Progress(int shard)
        {
        }
    }
}

using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// <see cref="PeerSession.AppliedNotedMove"/> across a rejoin in place: the coordinator sent a
/// child back to the parent it reported lost (RepairService), and the child joined again in its
/// place before reporting that parent again (its control link broke, or a report of another shard
/// went unanswered, ParentLossReporter.Unanswered). A second report about that parent counts as
/// unreachable (event 804, and a parent unreachable by enough children is made a leaf) only when
/// the child never reached it: its attach failed before its Attached on the link it came on.
/// </summary>
public sealed class NotedMoveRejoinTests
{
    [Fact]
    public async Task A_move_applied_before_a_rejoin_in_place_stays_applied_on_the_new_link()
    {
        await using var links = await SentBackAsync();
        var (session, first, second) = links;
        session.ReportedAttached(first);
        Assert.True(session.AppliedNotedMove);

        // It joins again in its place: the coordinator swaps the link (Admission.TryRejoinInPlace).
        session.Control = second;

        // It reached parent 7 before; a report about it now is a cut, not an attach that failed.
        Assert.True(session.AppliedNotedMove);
        session.ReportedAttached(second);
        Assert.True(session.AppliedNotedMove);
    }

    [Fact]
    public async Task A_move_not_yet_applied_at_a_rejoin_in_place_is_applied_once_the_welcome_attaches_are_done()
    {
        await using var links = await SentBackAsync();
        var (session, first, second) = links;
        Assert.False(session.AppliedNotedMove);

        session.Control = second;

        // The rejoin's Welcome places the shard where the plan has it (parent 7): a report before
        // its Attached is of an attach that failed, one after it of a parent it reached.
        Assert.False(session.AppliedNotedMove);
        session.ReportedAttached(second);
        Assert.True(session.AppliedNotedMove);
        // The Attached of the Move on the old link, read after the swap, counts for nothing.
        session.NoteNextMove();
        session.ReportedAttached(first);
        Assert.False(session.AppliedNotedMove);
    }

    /// <summary>A peer's two control links (the second for its rejoin) and its session, on the first.</summary>
    private sealed record Links(PeerSession Session, Link First, Link Second) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await First.DisposeAsync();
            await Second.DisposeAsync();
        }
    }

    /// <summary>A peer welcomed on its first control link (its Attached came), then sent back to parent 7 with the Move noted (RepairService does so for a report about 7).</summary>
    private static async Task<Links> SentBackAsync()
    {
        var network = new VirtualNetwork();
        var links = new Links(null!, await ControlAsync(network, 1), await ControlAsync(network, 2));
        links = links with { Session = new PeerSession(1, "p:1", links.First) };
        links.Session.ReportedAttached(links.First);
        links.Session.NoteNextMove();
        links.Session.SendMove(MoveTo(7));
        return links;
    }

    /// <summary>The coordinator's end of the peer's <paramref name="n"/>th control link.</summary>
    private static async Task<Link> ControlAsync(VirtualNetwork network, int n)
    {
        await using var listener = await network.Host("coord").ListenAsync($"coord:{n}", CancellationToken.None);
        _ = await network.Host("p").ConnectAsync($"coord:{n}", CancellationToken.None);
        var coordinatorSide = (await listener.AcceptAsync(CancellationToken.None))!;
        return new Link(coordinatorSide, "peer 1", new TestOptions().LinkOptions, NullLogger.Instance, TimeProvider.System);
    }

    private sealed record TestOptions : NodeOptions;

    private static Move MoveTo(ulong parent) => new([new ShardAssignment(0, AssignmentKind.Redirect, parent, 0, $"p{parent}:1")]);
}

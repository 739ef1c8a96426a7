using System.Diagnostics;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A child reports a lost parent once and waits for a Move. A path on which the coordinator
/// answers with no Move (bc8a3b1 fixed one: a silent parent that joined again in its place) left
/// the child with no parent for that shard for the rest of the stream. The coordinator here drops
/// one report unread, as such a path does: the child must still get the shard again.
/// </summary>
public sealed class UnansweredParentLostTests
{
    [Fact]
    public async Task A_child_whose_parent_lost_report_gets_no_answer_gets_the_shard_again_with_no_byte_lost()
    {
        var s = await RelayAndChild.StartAsync(TimeSpan.FromSeconds(2), seed: 73_000);
        await using var overlay = s.Overlay;

        // The child's first report is dropped unread: no Move answers it.
        int dropped = 0;
        overlay.Coordinator.ParentLostRead = (reporter, _) => reporter != s.Child.Id || Interlocked.Exchange(ref dropped, 1) != 0;
        overlay.Network.Cut(s.RelayHost, s.ChildHost);
        await Overlay.WaitUntilAsync(() => Volatile.Read(ref dropped) == 1, "the child reported its parent lost, and the coordinator dropped the report");

        // What a viewer checks: it writes the rest while the stream runs, every byte of the source.
        await s.WriteTheRestAndCheckAsync("after the unanswered report");
    }

    [Fact]
    public async Task A_child_told_not_to_join_again_after_losing_the_coordinator_still_gets_an_unanswered_shard_again()
    {
        // --rejoin-seconds 0: a child that loses its control link ends. Joining again for an
        // unanswered report, it keeps that link open, and the coordinator aborts it once it has
        // sent the Welcome on the new one: that close is no lost coordinator.
        var s = await RelayAndChild.StartAsync(TimeSpan.FromSeconds(2), seed: 74_000, child: o => o with { RejoinFor = TimeSpan.Zero });
        await using var overlay = s.Overlay;
        var childRun = overlay.PeerById(s.Child.Id).Run;

        int dropped = 0;
        overlay.Coordinator.ParentLostRead = (reporter, _) => reporter != s.Child.Id || Interlocked.Exchange(ref dropped, 1) != 0;
        // The Welcome takes a latency to reach the child; the abort of its old link is felt at once
        // (as a reset overtakes nothing on a real path either when the new connection is slower).
        overlay.Network.SetLatency(s.ChildHost, "coord", TimeSpan.FromMilliseconds(300));
        overlay.Network.Cut(s.RelayHost, s.ChildHost);
        await Overlay.WaitUntilAsync(() => Volatile.Read(ref dropped) == 1, "the child reported its parent lost, and the coordinator dropped the report");
        await Overlay.WaitUntilAsync(() => s.Child.Rejoins == 1 || childRun.IsCompleted, "the child joined again for its unanswered report");
        Assert.False(childRun.IsCompleted, $"the child ended: {childRun.Exception?.InnerException?.Message}");

        await s.WriteTheRestAndCheckAsync("after the unanswered report");
    }

    [Fact]
    public async Task A_report_overdue_while_another_rejoin_is_under_way_spends_no_rejoin_and_says_nothing()
    {
        var logs = new LogCapture();
        var s = await RelayAndChild.StartAsync(TimeSpan.FromSeconds(2), seed: 75_000, loggers: logs.Factory);
        await using var overlay = s.Overlay;

        // Another rejoin of the child is under way, held there.
        await s.Child.RejoinUnderWay.WaitAsync();
        long droppedAt = 0;
        int dropped = 0;
        overlay.Coordinator.ParentLostRead = (reporter, _) =>
        {
            if (reporter != s.Child.Id || Volatile.Read(ref dropped) != 0) return true;
            Volatile.Write(ref droppedAt, Stopwatch.GetTimestamp());
            Volatile.Write(ref dropped, 1);
            return false;
        };
        // Ticks of the child once its report is overdue (noted when sent, before the coordinator read it).
        var bound = s.Child.UnansweredAfter;
        int overdueTicks = 0;
        s.Child.UnansweredChecked = () =>
        {
            if (Volatile.Read(ref dropped) == 1 && Stopwatch.GetElapsedTime(Volatile.Read(ref droppedAt)) > bound) Interlocked.Increment(ref overdueTicks);
        };
        overlay.Network.Cut(s.RelayHost, s.ChildHost);
        await Overlay.WaitUntilAsync(() => Volatile.Read(ref dropped) == 1, "the child reported its parent lost, and the coordinator dropped the report");
        await Overlay.WaitUntilAsync(() => Volatile.Read(ref overdueTicks) >= 2, "two ticks of the child with its report overdue", bound + TimeSpan.FromSeconds(60));

        // Nothing said, nothing spent: the child says it joins again only when it does.
        const string JoiningAgain = "and no Move came";
        Assert.DoesNotContain(logs.Lines, l => l.Message.Contains(JoiningAgain, StringComparison.Ordinal));
        Assert.Equal(0, s.Child.Rejoins);

        // Once the other rejoin is over, the report makes the child join again, and it says so once.
        s.Child.RejoinUnderWay.Release();
        await Overlay.WaitUntilAsync(() => s.Child.Rejoins == 1, "the child joined again for its unanswered report");
        Assert.Single(logs.Lines, l => l.Message.Contains(JoiningAgain, StringComparison.Ordinal));
        await s.WriteTheRestAndCheckAsync("after the unanswered report");
    }
}

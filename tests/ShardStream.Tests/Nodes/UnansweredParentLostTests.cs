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
}

using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>Log lines about repairs (orphans, moves, short ends): operators filter on the event ids, 9300..9399.</summary>
internal static partial class RepairLog
{
    [LoggerMessage(9300, LogLevel.Warning, "{Link} ended shard {Shard} at chunk {FinalSeq} but never sent chunk {Next}: not taken as a gap (time {Times}); asking the coordinator for the chunks elsewhere", EventName = "ShortEnd")]
    public static partial void ShortEnd(ILogger log, string link, int shard, long finalSeq, long next, int times);

    [LoggerMessage(9301, LogLevel.Warning, "peer {Id}: no other node has room for shard(s) {Shards}; it attaches to parent {Parent} once more in {Seconds:0.#} s instead of staying without them", EventName = "SameParentAgain")]
    public static partial void SameParentAgain(ILogger log, int id, int parent, string shards, double seconds);

    [LoggerMessage(9302, LogLevel.Warning, "peer {Id} lost the coordinator as a parent again right after attaching to it again: it attaches to it once more in {Seconds:0.#} s (the coordinator is every peer's last resort)", EventName = "CoordinatorAgain")]
    public static partial void CoordinatorAgain(ILogger log, int id, double seconds);

    [LoggerMessage(9303, LogLevel.Information, "peer {Id}: filling shard {Shard} from chunk {From} up to chunk {Until} on its control link (its new parent holds only from there); first chunk sent {First}", EventName = "Filling")]
    public static partial void Filling(ILogger log, int id, int shard, long from, long until, long first);

    [LoggerMessage(9304, LogLevel.Information, "shard(s) {Shards} behind what parent {Parent} holds (from chunk {HeldFrom}): taking the chunks before it from the coordinator first", EventName = "FillBeforeMove")]
    public static partial void FillBeforeMove(ILogger log, string shards, ulong parent, ulong heldFrom);

    [LoggerMessage(9305, LogLevel.Warning, "shard(s) {Shards}: the coordinator's fill up to chunk {Until} stopped at chunk {Next} (nothing came for {Seconds:0.#} s); attaching to parent {Parent} anyway", EventName = "FillStalled")]
    public static partial void FillStalled(ILogger log, string shards, ulong until, long next, double seconds, ulong parent);

    [LoggerMessage(9315, LogLevel.Warning, "shard(s) {Shards}: the coordinator's fill up to chunk {Until} broke off with the control link at chunk {Next}; not attaching them to parent {Parent}, which holds only from chunk {Until}: the fill is asked again once this peer has joined again in its place", EventName = "FillBrokenOff")]
    public static partial void FillBrokenOff(ILogger log, string shards, ulong until, long next, ulong parent);

    [LoggerMessage(9316, LogLevel.Warning, "peer {Id} asked again for the fill of shard {Shard} up to chunk {Until} that its last move of the shard owed it, which a rejoin in place gave back once already and it took: nothing sent (a fill is given back once per move)", EventName = "FillSpent")]
    public static partial void FillSpent(ILogger log, int id, int shard, long until);

    [LoggerMessage(9308, LogLevel.Information, "peer {Id} lost parent {Parent}, which is itself being repaired for shard(s) {Shards} (since {Seconds:0.#} s: it lost its own parent or was moved), so has nothing to send: not counted against it; attaching it there again (excuse {Count} of {Max} in {Period:0} s)", EventName = "StarvedParent")]
    public static partial void StarvedParent(ILogger log, int id, int parent, string shards, double seconds, int count, int max, double period);

    [LoggerMessage(9310, LogLevel.Information, "peer {Id} lost parent {Parent} {Seconds:0.#} s before that parent began a repair itself: not counted against it after all (excuse {Count} of {Max} in {Period:0} s)", EventName = "StarvedParentBefore")]
    public static partial void StarvedParentBefore(ILogger log, int id, int parent, double seconds, int count, int max, double period);

    [LoggerMessage(9309, LogLevel.Warning, "peer {Id} lost parent {Parent} {Count} times in {Period:0} s, each counted against it: the edge is taken out of the plan (the parent answers, and is not made a leaf for this)", EventName = "CutTooOften")]
    public static partial void CutTooOften(ILogger log, int id, int parent, int count, double period);

    [LoggerMessage(9311, LogLevel.Information, "peer {Id} lost parent {Parent}, which is not in the overlay and was never its parent in the plan: nothing to repair", EventName = "NeverItsParent")]
    public static partial void NeverItsParent(ILogger log, int id, int parent);

    [LoggerMessage(9312, LogLevel.Information, "peer {Id} lost the coordinator as a parent, which still sends it shard(s) {Shards} on a link that keeps up: attaching it there again, not taken as a repair (its children's cuts of it are not excused for it)", EventName = "SourceStillFeeds")]
    public static partial void SourceStillFeeds(ILogger log, int id, string shards);

    [LoggerMessage(9313, LogLevel.Information, "peer {Id} lost parent {Parent}, which began a repair of shard(s) {Shards} {Seconds:0.#} s ago but gets them from the coordinator on a link that keeps up: counted against it", EventName = "StarvedParentFed")]
    public static partial void StarvedParentFed(ILogger log, int id, int parent, string shards, double seconds);

    [LoggerMessage(9314, LogLevel.Information, "peer {Id} lost parent {Parent}, which is not in the overlay and was never its parent of shard(s) {Shards} in the plan: nothing to repair for those", EventName = "NeverFedIt")]
    public static partial void NeverFedIt(ILogger log, int id, int parent, string shards);

    [LoggerMessage(9320, LogLevel.Warning, "peer {Id} cut parent {Parent} off for a lag it never made up in shard(s) {Shards}: the edge is taken out of the plan and it is moved to another parent, not sent back (the parent answers, and is not made a leaf for this)", EventName = "CutForLag")]
    public static partial void CutForLag(ILogger log, int id, int parent, string shards);

    [LoggerMessage(9323, LogLevel.Warning, "peer {Id} lost parent {Parent}, and the next chunk it lacks of shard {Shard} has been in the coordinator's replay window for {Seconds:0.#} s (-1: gone from it already) of {Window:0.#}: it is moved to another parent, not sent back to wait for this one (not counted against it)", EventName = "TooOldToWait")]
    public static partial void TooOldToWait(ILogger log, int id, int parent, byte shard, double seconds, double window);

    [LoggerMessage(9321, LogLevel.Warning, "peer {Id} had {Count} other peers moved to make it room in {Period:0} s (each a leaf exchanging places with it in one shard) as its edges were taken out of the plan on its own reports: more likely slow itself (or lying) than they. Until the first of them is that old, its lag cuts are taken as plain lost parents (sent back, counted), and an edge taken out moves it only into a free slot, no other peer to make it room", EventName = "DropsCapped")]
    public static partial void DropsCapped(ILogger log, int id, int count, double period);

    [LoggerMessage(9322, LogLevel.Warning, "peer {Id} sent more lost-parent reports than the coordinator takes ({Burst} at once, then one per {Seconds:0.##} s): {Count} dropped since the last such line (said at most once per 10 s); an honest peer whose report goes unanswered joins again in its place", EventName = "ReportsDropped")]
    public static partial void ReportsDropped(ILogger log, int id, int count, int burst, double seconds);

    [LoggerMessage(9306, LogLevel.Information, "peer {Id} is out of the overlay ({Why}): told its parent(s) {Parents} to stop serving it", EventName = "ParentsToldToDrop")]
    public static partial void ParentsToldToDrop(ILogger log, int id, string why, string parents);

    [LoggerMessage(9307, LogLevel.Information, "the coordinator took child {Child} out of the overlay: stopped serving it ({Links} link(s) closed)", EventName = "ChildDropped")]
    public static partial void ChildDropped(ILogger log, int child, int links);
}

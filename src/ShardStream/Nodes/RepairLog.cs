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
}

using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>
/// Log lines about a bound a node enforces on what others send it (docs/security.md, "Limits an
/// attacker cannot raise"): operators filter on the event ids, 9200..9299.
/// </summary>
internal static partial class BoundsLog
{
    [LoggerMessage(9200, LogLevel.Warning, "{Link}: cutting it off, shard {Shard} is too far behind the others: {Reason}", EventName = "ShardHeldBack")]
    public static partial void ShardHeldBack(ILogger log, string link, int shard, string reason);

    [LoggerMessage(9201, LogLevel.Warning, "{Link}: cutting it off, a chunk it sent was refused: {Reason}", EventName = "ReassemblyFull")]
    public static partial void ReassemblyFull(ILogger log, string link, string reason);

    [LoggerMessage(9202, LogLevel.Warning, "{Link}: cutting it off, it sent no chunk of shard {Shard} for {Waited}, though the source had made chunk {Seq} of it by then (the stream's head was {Head})", EventName = "ShardWithheld")]
    public static partial void ShardWithheld(ILogger log, string link, int shard, string waited, long seq, long head);

    [LoggerMessage(9203, LogLevel.Warning, "{Link}: cutting it off, it sent {Chunks} chunk(s) of shard {Shard} in the last {Seconds:0.#} s while the source made {Made}, and still not chunk {Seq}, which the source had made by then (the stream's head was {Head})", EventName = "ShardTrickled")]
    public static partial void ShardTrickled(ILogger log, string link, int shard, long chunks, double seconds, string made, long seq, long head);

    [LoggerMessage(9204, LogLevel.Warning, "{Link}: cutting it off, shard {Shard} is more than {Behind:0.#} s behind the head, and it sent {Chunks} chunk(s) of it in the last {Seconds:0.#} s while the source made {Made}: not catching up (its next chunk is {Seq}; the head then was {Head})", EventName = "ShardLagging")]
    public static partial void ShardLagging(ILogger log, string link, int shard, double behind, long chunks, double seconds, string made, long seq, long head);
}

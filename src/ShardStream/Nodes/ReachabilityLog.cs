using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>Log lines about who can connect to whom: probes, unreachable parents, leaves.</summary>
internal static partial class ReachabilityLog
{
    [LoggerMessage(EventId = 801, EventName = "RelaysNothing", Level = LogLevel.Warning,
        Message = "this peer relays nothing: {Reason}. It still receives the whole stream. To relay, {Advice}")]
    public static partial void RelaysNothing(ILogger logger, string reason, string advice);

    [LoggerMessage(EventId = 802, EventName = "UnknownNotice", Level = LogLevel.Information, Message = "the coordinator says (notice {Code}): {Text}")]
    public static partial void UnknownNotice(ILogger logger, ushort code, string text);

    [LoggerMessage(EventId = 803, EventName = "ProbeFailed", Level = LogLevel.Warning,
        Message = "peer {Id} ({Address}) does not accept connections ({Reason}): placed as a leaf")]
    public static partial void ProbeFailed(ILogger logger, int id, string address, string reason);

    [LoggerMessage(EventId = 804, EventName = "EdgeDropped", Level = LogLevel.Warning,
        Message = "peer {Id} cannot connect to parent {Parent} ({Address}) even after a second attempt: shard(s) {Shards} re-placed under other parents, never that one again")]
    public static partial void EdgeDropped(ILogger logger, int id, int parent, string address, string shards);

    [LoggerMessage(EventId = 805, EventName = "NoOtherParent", Level = LogLevel.Warning,
        Message = "peer {Id} cannot connect to parent {Parent} ({Address}), and no other node has room for shard {Shard}")]
    public static partial void NoOtherParent(ILogger logger, int id, int parent, string address, int shard);

    [LoggerMessage(EventId = 806, EventName = "UnreachableParentDemoted", Level = LogLevel.Warning,
        Message = "{Count} peers (children, or joiners that measured it) cannot connect to peer {Id} ({Address}): it is made a leaf, its children move to other parents")]
    public static partial void UnreachableParentDemoted(ILogger logger, int count, int id, string address);

    [LoggerMessage(EventId = 807, EventName = "MeasuredUnreachable", Level = LogLevel.Information,
        Message = "peer {Id} could not connect to peer {Other} ({Address}), one of the nodes it was asked to measure ({Count} peer(s) cannot connect to it so far)")]
    public static partial void MeasuredUnreachable(ILogger logger, int id, int other, string address, int count);

    [LoggerMessage(EventId = 808, EventName = "ProbeAnsweredLate", Level = LogLevel.Information,
        Message = "{Address} accepted the reachability probe's connection but did not answer its hello within {Seconds:0.#} s (a busy machine?): taken as reachable; its children will report it if they cannot connect")]
    public static partial void ProbeAnsweredLate(ILogger logger, string address, double seconds);

    [LoggerMessage(EventId = 809, EventName = "UnreachableParentKept", Level = LogLevel.Warning,
        Message = "{Count} peers say they cannot connect to peer {Id} ({Address}), but its child peer {Child} reaches it (it reports a round trip on its link to it): it stays a relay; only their edges to it are taken out")]
    public static partial void UnreachableParentKept(ILogger logger, int count, int id, string address, int child);

    [LoggerMessage(EventId = 810, EventName = "OlderPeerLeaf", Level = LogLevel.Warning,
        Message = "peer {Id} ({Address}) speaks protocol version {Version}, whose answer to a reachability probe shows its join token to whoever asks: placed as a leaf, unprobed (version {ProofVersion} proves the token without showing it)")]
    public static partial void OlderPeerLeaf(ILogger logger, int id, string address, int version, int proofVersion);
}

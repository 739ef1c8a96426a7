using System.Buffers;
using ShardStream.Streaming;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// What a peer's parts (<see cref="PeerIntake"/>, <see cref="ParentLossReporter"/>) need of the
/// peer that owns them: its run (reassembler, verifier, relay), its parent links per shard (kept
/// under the peer's lock), and its control link to the coordinator.
/// </summary>
internal interface IPeerParents
{
    /// <summary>The reassembler of the current run.</summary>
    Reassembler Reassembler { get; }

    /// <summary>Checks chunks, hash lists and ends against the stream's key.</summary>
    StreamVerifier Verifier { get; }

    /// <summary>This peer's fan-out to its children.</summary>
    Relay Relay { get; }

    /// <summary>The peer is leaving on purpose.</summary>
    bool Leaving { get; }

    /// <summary>True when <paramref name="link"/> is the parent of <paramref name="shard"/> now.</summary>
    bool IsParentOf(int shard, Link link);

    /// <summary>The parent of <paramref name="shard"/> now, and since when (a timestamp).</summary>
    (Link? Parent, long Since) ParentOf(int shard);

    /// <summary>Takes every shard <paramref name="link"/> was the parent of off it, with the next chunk wanted of each.</summary>
    ShardStart[] TakeShardsOf(Link link);

    /// <summary>
    /// The shards <paramref name="link"/> was the parent of when it sent what got it cut off (a
    /// violation), with the next chunk wanted of each then, even those a move has given another
    /// parent since; empty when it sent nothing of the kind. Taken once: the note goes with the link.
    /// </summary>
    ShardStart[] TakeShardsWhenCutOff(Link link);

    /// <summary>How many moves of <paramref name="shard"/> this peer has taken in (a Move, or a rejoin's Welcome): a new one answers a report about it.</summary>
    long MoveGenerationOf(int shard);

    /// <summary>The shards of <paramref name="shards"/> that have no parent now, with the next chunk wanted of each.</summary>
    ShardStart[] WithoutParent(byte[] shards);

    /// <summary>The coordinator as a parent: trusted, never cut off for room.</summary>
    bool IsCoordinator(Link link);

    /// <summary>The protocol version the coordinator chose in its Welcome on the control link now.</summary>
    ushort Version { get; }

    /// <summary>Sends a frame to the coordinator on the control link, if there is one.</summary>
    void SendToCoordinator(Action<IBufferWriter<byte>> write);

    /// <summary>Ends the run with a reason (the peer cannot go on).</summary>
    void Fail(string reason);

    /// <summary>A new chunk of <paramref name="shard"/> arrived from a parent (the stream still flows: see <c>Peer.ShownAliveOtherwise</c> and <c>Peer.CheckParents</c>).</summary>
    void Progress(int shard);
}

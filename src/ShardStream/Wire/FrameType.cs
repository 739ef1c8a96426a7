namespace ShardStream.Wire;

/// <summary>The type byte of a frame. See docs/protocol.md for every field.</summary>
public enum FrameType : byte
{
    /// <summary>First frame of every connection, from the connecting side.</summary>
    Hello = 1,

    /// <summary>The answer to a hello: shards served on this connection and redirects.</summary>
    Welcome = 2,

    /// <summary>A piece of one shard's stream.</summary>
    Chunk = 3,

    /// <summary>A shard's stream is over: no chunk with a higher sequence number will follow.</summary>
    End = 4,

    /// <summary>The sender closes the connection, with a reason.</summary>
    Goodbye = 5,

    /// <summary>Keeps a quiet connection alive; either direction.</summary>
    Heartbeat = 6,

    /// <summary>Peer to coordinator: the peer is connected to a parent for every shard.</summary>
    Attached = 7,

    /// <summary>Coordinator to peer: take these shards from a new parent (repair, rebalancing).</summary>
    Move = 8,

    /// <summary>Peer to coordinator: the parent of these shards is gone.</summary>
    ParentLost = 9,

    /// <summary>Child to parent: stop sending these shards (they moved to another parent).</summary>
    Detach = 10,

    /// <summary>Peer to coordinator: I am leaving on purpose; move my children first.</summary>
    Leave = 11,

    /// <summary>Peer to coordinator (version 2): a child of mine cannot keep up; demote it.</summary>
    SlowChild = 12,

    /// <summary>Parent to child (version 3): the coordinator's signed hashes of the next chunks of a shard.</summary>
    Hashes = 13,

    /// <summary>Coordinator to peer (version 4): something the peer should know and tell its user, e.g. that it relays nothing.</summary>
    Notice = 14,

    /// <summary>Coordinator to peer (version 5): the signed media header a peer writes before its first chunk (FLV or MPEG-TS streams).</summary>
    StreamHeader = 15,

    /// <summary>Either side (version 6): answer with a pong, to measure the round-trip time.</summary>
    Ping = 16,

    /// <summary>Either side (version 6): the answer to a ping, with the answering side's network coordinate.</summary>
    Pong = 17,

    /// <summary>Coordinator to joiner (version 6): measure these nodes, then join again with a coordinate.</summary>
    Landmarks = 18,

    /// <summary>Peer to coordinator (version 7): send these shards on the control link up to a chunk, then stop (a parent that joined later holds the rest).</summary>
    Fill = 19,

    /// <summary>Coordinator to peer (version 12): stop serving this child; the coordinator took it out of the overlay.</summary>
    DropChild = 20,
}

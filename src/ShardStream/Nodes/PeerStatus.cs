namespace ShardStream.Nodes;

/// <summary>A peer at one moment, as it sees itself (see <see cref="Peer.Status"/>).</summary>
/// <param name="Id">Its id in the overlay (0 before the welcome).</param>
/// <param name="ShardCount">K (0 before the welcome).</param>
/// <param name="StartOffset">The stream offset of its first output byte.</param>
/// <param name="BytesWritten">Bytes written to its output.</param>
/// <param name="BytesReceived">Stream bytes accepted from its parents (duplicates dropped).</param>
/// <param name="NewestOffset">The stream offset just past the newest chunk received on any shard.</param>
/// <param name="LostBytes">Bytes skipped in gaps.</param>
/// <param name="OutputBacklog">Bytes reassembled and waiting to be written to its output.</param>
/// <param name="Parents">Per shard, the id of its parent (0 = the coordinator, -1 = none now).</param>
/// <param name="Children">Per shard, the ids of the children it sends that shard to.</param>
/// <param name="WindowBytes">Bytes held in its replay window.</param>
/// <param name="WindowLimit">The replay window's byte limit.</param>
/// <param name="StalledShards">Shards whose parent was lost and that have had neither a chunk nor the shard's End from a new parent yet (0 once the stream is complete).</param>
/// <param name="Complete">The whole stream was received.</param>
public sealed record PeerStatus(int Id, int ShardCount, long StartOffset, long BytesWritten, long BytesReceived, long NewestOffset, long LostBytes,
    long OutputBacklog, int[] Parents, int[][] Children, long WindowBytes, long WindowLimit, int StalledShards, bool Complete)
{
    /// <summary>
    /// How far this peer's output is behind the newest byte it has received: bytes received but
    /// not yet written (waiting for an earlier chunk of another shard, or for the output). The
    /// delay from the source to this peer's parents is not in it (docs/dashboard.md).
    /// </summary>
    public long BehindNewest => Math.Max(0, NewestOffset - (StartOffset + BytesWritten + LostBytes));
}

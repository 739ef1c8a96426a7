using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>Log lines of what a coordinator and a peer share: links, refusals, serving children (event ids 1600..1649; see docs/logging.md).</summary>
internal static partial class NodeLog
{
    [LoggerMessage(1600, LogLevel.Warning, "{Link}: refused: {Reason}", EventName = "Refused")]
    public static partial void Refused(ILogger log, string link, string reason);

    [LoggerMessage(1601, LogLevel.Information, "{Link}: serving shard(s) {Shards}", EventName = "Serving")]
    public static partial void Serving(ILogger log, string link, string shards);

    [LoggerMessage(1602, LogLevel.Debug, "{Link}: detached shard(s) {Shards}", EventName = "Detached")]
    public static partial void Detached(ILogger log, string link, string shards);

    [LoggerMessage(1603, LogLevel.Debug, "{Link}: answering a reachability probe", EventName = "AnsweringProbe")]
    public static partial void AnsweringProbe(ILogger log, string link);

    [LoggerMessage(1604, LogLevel.Warning, "closing with {N} child link(s) still open after the drain timeout: {Links}", EventName = "ChildrenStillOpen")]
    public static partial void ChildrenStillOpen(ILogger log, int n, string links);

    [LoggerMessage(1605, LogLevel.Debug, "{Link}: disposing after close: {Reason}", EventName = "DisposeFailed")]
    public static partial void DisposeFailed(ILogger log, string link, string reason);

    [LoggerMessage(1606, LogLevel.Debug, "{Link}: heartbeats every {Seconds:0.#} s from now on, as the other side does", EventName = "HeartbeatIntervalFollowed")]
    public static partial void HeartbeatIntervalFollowed(ILogger log, string link, double seconds);

    [LoggerMessage(1607, LogLevel.Warning, "{Link}: asked for shard {Shard} from chunk {Asked}, which this node no longer holds: it starts at chunk {First} (its window holds {Chunks} chunk(s) from {Oldest} to {Newest} in {Bytes} bytes of memory)", EventName = "ServingLater")]
    public static partial void ServingLater(ILogger log, string link, int shard, long asked, long first, int chunks, long oldest, long newest, long bytes);

    [LoggerMessage(1608, LogLevel.Warning, "our BLAKE3 did not give the Blake3 package's hash in its check at start ({Failure}): the package hashes every chunk body on this node, slower below 16 KiB (a 4 KiB chunk ~3.5x); please report it with this CPU's model", EventName = "ChunkHashCheckFailed")]
    public static partial void ChunkHashCheckFailed(ILogger log, string failure);
}

/// <summary>Log lines of the coordinator: its run, joins and leaves, lost parents, accusations (event ids 1650..1699; see docs/logging.md).</summary>
internal static partial class CoordinatorLog
{
    [LoggerMessage(1650, LogLevel.Information, "coordinator listening on {Address}, {K} shard(s), {Topology} topology, upload budget {Budget} shard-streams", EventName = "Listening")]
    public static partial void Listening(ILogger log, string address, int k, string topology, int budget);

    [LoggerMessage(1651, LogLevel.Information, "stream address {Address}{Ephemeral}, run {Run}; a viewer checks it watches this stream with: shardstream peer -c {Listen} --stream {Stream}{Hint}", EventName = "StreamAddress")]
    public static partial void StreamAddress(ILogger log, string address, string ephemeral, string run, string listen, string stream, string hint);

    [LoggerMessage(1652, LogLevel.Information, "waiting for {N} peer(s) before streaming", EventName = "WaitingForPeers")]
    public static partial void WaitingForPeers(ILogger log, int n);

    [LoggerMessage(1653, LogLevel.Information, "streaming", EventName = "Streaming")]
    public static partial void Streaming(ILogger log);

    [LoggerMessage(1654, LogLevel.Information, "source ended after {Bytes} bytes in {Chunks} chunks; waiting for peers to finish", EventName = "SourceEnded")]
    public static partial void SourceEnded(ILogger log, long bytes, long chunks);

    [LoggerMessage(1655, LogLevel.Information, "done", EventName = "Done")]
    public static partial void Done(ILogger log);

    [LoggerMessage(1656, LogLevel.Debug, "{Link}: listens on {Listen}, advertised at {Advertised}", EventName = "Advertised")]
    public static partial void Advertised(ILogger log, string link, string listen, string advertised);

    [LoggerMessage(1657, LogLevel.Information, "peer {Id} ({Address}) joined at offset {Offset}, budget {Budget}: {Parents}", EventName = "PeerJoined")]
    public static partial void PeerJoined(ILogger log, int id, string address, ulong offset, int budget, string parents);

    [LoggerMessage(1658, LogLevel.Debug, "peer {Id} attached to all its parents", EventName = "PeerAttached")]
    public static partial void PeerAttached(ILogger log, int id);

    [LoggerMessage(1659, LogLevel.Debug, "peer {Id} left: {Reason}; {N} reattachment(s) sent after the end", EventName = "PeerLeftAfterEnd")]
    public static partial void PeerLeftAfterEnd(ILogger log, int id, string reason, int n);

    [LoggerMessage(1660, LogLevel.Information, "peer {Id} {How} ({Reason}); {N} reattachment(s) sent", EventName = "PeerRemoved")]
    public static partial void PeerRemoved(ILogger log, int id, string how, string reason, int n);

    [LoggerMessage(1661, LogLevel.Debug, "peer {Id} lost parent {Parent}, which is already out of the overlay", EventName = "LostParentAlreadyOut")]
    public static partial void LostParentAlreadyOut(ILogger log, int id, int parent);

    [LoggerMessage(1662, LogLevel.Information, "peer {Id} lost parent {Parent}, which has been silent for {Silence:0.0} s: taking it for dead", EventName = "LostParentSilent")]
    public static partial void LostParentSilent(ILogger log, int id, int parent, double silence);

    [LoggerMessage(1663, LogLevel.Information, "control links heartbeat every {Seconds:0.#} s from now on (was {Before:0.#} s): {Peers} peers held (--control-heartbeat S pins it)", EventName = "ControlHeartbeatChanged")]
    public static partial void ControlHeartbeatChanged(ILogger log, double seconds, int peers, double before);

    [LoggerMessage(1664, LogLevel.Information, "peer {Id} lost parent {Parent}, which still answers the coordinator: attaching it there again for shard(s) {Shards}", EventName = "ReattachingToSameParent")]
    public static partial void ReattachingToSameParent(ILogger log, int id, int parent, string shards);

    [LoggerMessage(1670, LogLevel.Information, "a joiner from {Address} declares an upload of {Declared:0.##}x the stream rate; counted as the cap, {Cap:0.##}x (--max-upload)", EventName = "UploadCapped")]
    public static partial void UploadCapped(ILogger log, string address, double declared, double cap);

    [LoggerMessage(1671, LogLevel.Warning, "peer {Id} says the coordinator sent it bad data ({Reason}); treated as a lost link", EventName = "CoordinatorAccused")]
    public static partial void CoordinatorAccused(ILogger log, int id, string reason);

    [LoggerMessage(1672, LogLevel.Debug, "peer {Id} cut off parent {Parent}, which is already out of the overlay: {Reason}", EventName = "AccusedAlreadyOut")]
    public static partial void AccusedAlreadyOut(ILogger log, int id, int parent, string reason);

    [LoggerMessage(1673, LogLevel.Warning, "peer {Id} accuses peer {Parent}, which is not its parent in the plan; ignored: {Reason}", EventName = "AccusationIgnored")]
    public static partial void AccusationIgnored(ILogger log, int id, int parent, string reason);

    [LoggerMessage(1674, LogLevel.Warning, "peer {Id} accuses parent {Parent} after accusing {Before} others, the most heard from one peer; evicting the accuser instead", EventName = "AccuserEvicted")]
    public static partial void AccuserEvicted(ILogger log, int id, int parent, int before);

    [LoggerMessage(1675, LogLevel.Warning, "peer {Parent} ({Address}) is cut off: its child {Id} reports: {Reason}; its children move, and its address is refused from now on", EventName = "ParentCutOff")]
    public static partial void ParentCutOff(ILogger log, int parent, string address, int id, string reason);

    [LoggerMessage(1678, LogLevel.Warning, "peer {Parent} ({Address}) is cut off: its child {Id} reports: {Reason}; it had left the overlay already (its children moved then), and its address is refused from now on", EventName = "DepartedParentCutOff")]
    public static partial void DepartedParentCutOff(ILogger log, int parent, string address, int id, string reason);

    [LoggerMessage(1676, LogLevel.Debug, "{Link}: sending {Count} node(s) to measure before the join", EventName = "SendingLandmarks")]
    public static partial void SendingLandmarks(ILogger log, string link, int count);

    [LoggerMessage(1677, LogLevel.Information, "round {Round} of latency moves: moving {Count} peer edge(s) to parents with a much lower estimated delay from the source: {Moves}", EventName = "LatencyMoves")]
    public static partial void LatencyMoves(ILogger log, long round, int count, string moves);

    [LoggerMessage(1679, LogLevel.Warning, "candidate memory full: {Remembered} joiners were sent their candidate parents within the last {Seconds} s and have not been placed; {Skipped} joiner(s) since the last such line were placed without measuring their candidates (a place chosen on estimates, not a failed join); a flood of joiners that never finish joining?", EventName = "CandidateTokensFull")]
    public static partial void CandidateTokensFull(ILogger log, int remembered, int seconds, int skipped);

    [LoggerMessage(1680, LogLevel.Debug, "peer {Id} reported an RTT to node {Nodes}, which never was its parent in the plan during its session (or is no longer remembered as a former one): ignored, a move is not judged by it", EventName = "ParentRttIgnored")]
    public static partial void ParentRttIgnored(ILogger log, int id, string nodes);

    [LoggerMessage(1681, LogLevel.Debug, "peer {Id} claims a coordinate {Estimated:F1} ms from the coordinator, which measured it at least {Measured:F1} ms away: the plan holds it {Measured:F1} ms away (its height raised by the difference)", EventName = "CoordinateDiscounted")]
    public static partial void CoordinateDiscounted(ILogger log, int id, double estimated, double measured);

    [LoggerMessage(1682, LogLevel.Debug, "peer {Id} claims a coordinate {Estimated:F1} ms from the coordinator, which measured it at least {Measured:F1} ms away: the plan holds it as claimed again", EventName = "CoordinateAgrees")]
    public static partial void CoordinateAgrees(ILogger log, int id, double estimated, double measured);

    [LoggerMessage(1688, LogLevel.Debug, "peer {Id} claims a coordinate that puts it {Estimated:F1} ms from peer {Witness}, which measured it at least {Measured:F1} ms away ({Count} of the peers it was a parent of measured it more than twice as far as claimed): the plan holds it where their RTTs put it, {Held:F1} ms from peer {Witness}", EventName = "CoordinateContradicted")]
    public static partial void CoordinateContradicted(ILogger log, int id, double estimated, int witness, double measured, int count, double held);

    [LoggerMessage(1689, LogLevel.Debug, "peer {Id}: {Count} of the peers it was a parent of contradict its claimed coordinate now (a hold lasts while one does and another measured it more than 60 ms farther than claimed): the plan holds it as claimed again", EventName = "CoordinateWitnessed")]
    public static partial void CoordinateWitnessed(ILogger log, int id, int count);

    [LoggerMessage(1683, LogLevel.Information, "planned a rebuild by regions of {Peers} peers in {PlanMs:F0} ms outside the plan's lock (copying what it reads took {CopyMs:F0} ms under it): {Outcome}", EventName = "RebuildPlanned")]
    public static partial void RebuildPlanned(ILogger log, int peers, double planMs, double copyMs, string outcome);

    [LoggerMessage(1687, LogLevel.Error, "planning a rebuild by regions of {Peers} peers failed after {PlanMs:F0} ms ({Reason}): its series of rebuilds ends (the next starts once joins and leaves since it began reach a tenth of the peers); leaf moves go on", EventName = "RebuildPlanningFailed")]
    public static partial void RebuildPlanningFailed(ILogger log, int peers, double planMs, string reason, Exception exception);

    [LoggerMessage(1684, LogLevel.Debug, "joiner {Id} claims a coordinate {Estimated:F1} ms from the coordinator, whose handshake with it took {Measured:F1} ms: placed as {Measured:F1} ms away (its height raised by the difference)", EventName = "JoinCoordinateDiscounted")]
    public static partial void JoinCoordinateDiscounted(ILogger log, int id, double estimated, double measured);

    [LoggerMessage(1685, LogLevel.Debug, "joiner {Id} says it measured {Said:F1} ms to the coordinator, whose handshake with it took {Measured:F1} ms: placed by {Measured:F1} ms", EventName = "JoinRttRaised")]
    public static partial void JoinRttRaised(ILogger log, int id, double said, double measured);

    [LoggerMessage(1686, LogLevel.Information, "joiner {Id}: its connection's handshake gave no usable RTT (a SYN-ACK sent again, a SYN cookie, a failed TCP_INFO read, or no sample), so nothing checks the coordinate and RTTs its Join claims: placed as if it had claimed none (latency-blind), its coordinate taken once its control link has its own samples", EventName = "JoinPlacedBlind")]
    public static partial void JoinPlacedBlind(ILogger log, int id);

    [LoggerMessage(1690, LogLevel.Warning, "a joiner from {Remote} asked for stream {Asked}, not ours ({Ours}): refused, no placement", EventName = "OtherStreamRefused")]
    public static partial void OtherStreamRefused(ILogger log, string remote, string asked, string ours);

    [LoggerMessage(1692, LogLevel.Warning, "{Count} peer(s) still behind at the end of the wait for them: told them the coordinator stops, ahead of what was queued for them ({Said})", EventName = "StoppingWithPeersBehind")]
    public static partial void StoppingWithPeersBehind(ILogger log, int count, string said);
}

/// <summary>Log lines of a peer: joining, its parents, leaving, the end (event ids 1700..1749; see docs/logging.md).</summary>
internal static partial class PeerLog
{
    [LoggerMessage(1700, LogLevel.Information, "{Address} redirects the join to {Next}", EventName = "Redirected")]
    public static partial void Redirected(ILogger log, string address, string next);

    [LoggerMessage(1701, LogLevel.Information, "the coordinator proved it holds the key of stream {Address}, the one asked for", EventName = "KeyProved")]
    public static partial void KeyProved(ILogger log, string address);

    [LoggerMessage(1702, LogLevel.Information, "pinned stream {Address}: the key the coordinator proved it holds (pass --stream {Stream} to insist on it)", EventName = "KeyPinned")]
    public static partial void KeyPinned(ILogger log, string address, string stream);

    [LoggerMessage(1703, LogLevel.Information, "joined as peer {Id} at offset {Offset}; {K} shard(s): {Parents}", EventName = "Joined")]
    public static partial void Joined(ILogger log, int id, long offset, int k, string parents);

    [LoggerMessage(1704, LogLevel.Warning, "cannot attach to {Address}: {Reason}", EventName = "AttachFailed")]
    public static partial void AttachFailed(ILogger log, string address, string reason);

    /// <summary><paramref name="parent"/>: "coordinator" or "peer N"; <paramref name="address"/>: where this peer connects to it.</summary>
    [LoggerMessage(1705, LogLevel.Information, "moving shard(s) {Shards} to {Parent} ({Address})", EventName = "Moving")]
    public static partial void Moving(ILogger log, string shards, string parent, string address);

    [LoggerMessage(1706, LogLevel.Error, "cut off parent {Parent} (shard(s) {Shards}): {Reason}", EventName = "ParentCutOff")]
    public static partial void ParentCutOff(ILogger log, ulong parent, string shards, string reason);

    [LoggerMessage(1707, LogLevel.Warning, "lost parent {Parent} for shard(s) {Shards}: {Reason}", EventName = "ParentLost")]
    public static partial void ParentLost(ILogger log, ulong parent, string shards, string reason);

    [LoggerMessage(1708, LogLevel.Information, "leaving: asking the coordinator to move my children", EventName = "Leaving")]
    public static partial void Leaving(ILogger log);

    [LoggerMessage(1709, LogLevel.Warning, "leaving with {N} child link(s) still open after {Timeout} s", EventName = "LeftChildrenOpen")]
    public static partial void LeftChildrenOpen(ILogger log, int n, double timeout);

    [LoggerMessage(1710, LogLevel.Error, "stream complete with {Lost} bytes lost: {Bytes} bytes written from offset {Offset}", EventName = "CompleteWithLoss")]
    public static partial void CompleteWithLoss(ILogger log, long lost, long bytes, long offset);

    [LoggerMessage(1711, LogLevel.Information, "stream complete: {Bytes} bytes written from offset {Offset}", EventName = "Complete")]
    public static partial void Complete(ILogger log, long bytes, long offset);

    [LoggerMessage(1712, LogLevel.Error, "lost bytes {From}..{To} ({Length} bytes, chunks {FromSeq}..{ToSeq}): older than every replay window that could serve them; continuing at offset {Next}", EventName = "BytesLost")]
    public static partial void BytesLost(ILogger log, long from, long to, long length, long fromSeq, long toSeq, long next);

    [LoggerMessage(1713, LogLevel.Information, "measured {Count} of {Total} node(s) the coordinator named ({Measured} in all; coordinator {Rtt:0.#} ms): network coordinate ({X:0.#}, {Y:0.#}) height {Height:0.#} ms, estimated error {Error:0.##}", EventName = "LandmarksMeasured")]
    public static partial void LandmarksMeasured(ILogger log, int count, int total, int measured, double rtt, double x, double y, double height, double error);

    [LoggerMessage(1714, LogLevel.Debug, "landmark {Address} not measured: {Reason}", EventName = "LandmarkNotMeasured")]
    public static partial void LandmarkNotMeasured(ILogger log, string address, string reason);

    [LoggerMessage(1715, LogLevel.Information, "listening on {Listen}; other peers are told {Advertised}", EventName = "PeerListening")]
    public static partial void Listening(ILogger log, string listen, string advertised);

    [LoggerMessage(1716, LogLevel.Information, "the connection to {Address} kept for the next Join after the landmarks was closed ({Reason}); joining on a new connection", EventName = "KeptConnectionLost")]
    public static partial void KeptConnectionLost(ILogger log, string address, string reason);

    [LoggerMessage(1717, LogLevel.Debug, "move of shard(s) {Shards} applied; {Report}", EventName = "MoveApplied")]
    public static partial void MoveApplied(ILogger log, string shards, string report);

    [LoggerMessage(1718, LogLevel.Debug, "move of shard(s) {Shards} not taken in: it came on a control link replaced since (the Welcome on the new one says where the plan has this peer)", EventName = "MoveFromReplacedControl")]
    public static partial void MoveFromReplacedControl(ILogger log, string shards);

    [LoggerMessage(1719, LogLevel.Information, "network coordinate fitted again to the nodes measured at the join: the fit it replaces took {Used:0.#} ms to the coordinator, its control link's least RTT is {Least:0.#} ms in {Samples} samples; from ({FromX:0.#}, {FromY:0.#}) height {FromHeight:0.#} ms to ({X:0.#}, {Y:0.#}) height {Height:0.#} ms, estimated error {Error:0.##}", EventName = "CoordinateRefitted")]
    public static partial void Refitted(ILogger log, double used, double least, int samples, double fromX, double fromY, double fromHeight, double x, double y, double height, double error);

    [LoggerMessage(1720, LogLevel.Information, "{Address} did not read this peer's Join with the stream it asks for (a node older than protocol version 13): joining again without it; the coordinator's key is checked at its Welcome", EventName = "StreamNotRead")]
    public static partial void StreamNotRead(ILogger log, string address);
}

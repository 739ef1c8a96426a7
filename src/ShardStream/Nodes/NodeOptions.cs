using ShardStream.Topology;
using ShardStream.Transport;

namespace ShardStream.Nodes;

/// <summary>Settings every node has.</summary>
public abstract record NodeOptions
{
    /// <summary>Where to accept children; port 0 picks a free port.</summary>
    public string ListenAddress { get; init; } = "127.0.0.1:0";

    /// <summary>The replay window's byte bound (over all shards).</summary>
    public long ReplayWindowBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>The replay window's age bound.</summary>
    public TimeSpan ReplayWindowAge { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How often a quiet link sends a heartbeat.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// The least silence after which a link may be taken for dead. Beyond it, the link's φ accrual
    /// failure detector decides from the gaps the link has seen (a punctual other side is taken
    /// for dead right at this timeout; one that has been answering late is given longer), up to
    /// <see cref="MaxSilence"/>.
    /// </summary>
    public TimeSpan HeartbeatTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>φ at or above which a silent link is taken for dead (default 8: a 1 in 10^8 chance that a living side is silent that long).</summary>
    public double FailureThreshold { get; init; } = 8;

    /// <summary>A link silent this long is taken for dead whatever φ says; null for 4 x <see cref="HeartbeatTimeout"/>.</summary>
    public TimeSpan? MaxSilence { get; init; }

    /// <summary>A child with more than this many bytes waiting to be sent is cut off as too slow.</summary>
    public long MaxQueuedBytesPerChild { get; init; } = 64L * 1024 * 1024;

    /// <summary>
    /// A child whose oldest queued chunk has waited this long while its queue grew is slow: it
    /// no longer paces the source and is demoted to a leaf (docs/resilience.md#slow-viewers).
    /// </summary>
    public TimeSpan SlowChildAge { get; init; } = TimeSpan.FromSeconds(1.5);

    /// <summary>A slow child still slow this long after it was found slow is stopped, told its measured download and the stream rate.</summary>
    public TimeSpan SlowChildGrace { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// At most one peer is demoted for being slow within this time, overlay-wide (the coordinator
    /// decides). One slow viewer is demoted at once; many relays found slow together point to a
    /// busy machine or network rather than to slow viewers, and demoting them all would only
    /// drain the overlay's upload.
    /// </summary>
    public TimeSpan DemotionSpacing { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// An accepted connection that has not sent a whole hello within this time is closed (a
    /// honest node sends it right after connecting; slowloris trickles it forever).
    /// </summary>
    public TimeSpan HelloTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>A connect that is not answered within this time fails (a black-holed address would otherwise take the kernel's ~2 minutes).</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>At most this many accepted connections wait for their hello at once; the oldest is dropped to make room.</summary>
    public int MaxPendingHellos { get; init; } = 1024;

    /// <summary>
    /// This process's limit on open files (the CLI reads it; null: no bound). A .NET process out of
    /// file descriptors aborts ("Out of memory.") at its next new thread, so a node keeps clear of
    /// the limit: it stops accepting while the descriptors it holds (its TCP connections and the
    /// rest, measured: <see cref="ProcessDescriptors"/>) are within <see cref="AcceptReserve"/> of
    /// it, and a coordinator tells joiners it is busy (they try again) once its connections reach
    /// <see cref="MaxConnectionsForJoins"/>. See docs/security.md.
    /// </summary>
    public int? OpenFileLimit { get; init; }

    /// <summary>Descriptors kept for the runtime's new needs and dial-backs while accepting: a sixteenth of <see cref="OpenFileLimit"/>, at least 64.</summary>
    internal int AcceptReserve => Math.Max(64, (OpenFileLimit ?? 0) / 16);

    /// <summary>
    /// The connections a coordinator may hold and still admit a join: the limit, less the
    /// connections that may wait for a hello, less a reserve of an eighth of the limit (at least
    /// 128) for the dial-back probes of joins in progress and the runtime's own descriptors.
    /// </summary>
    internal int? MaxConnectionsForJoins => OpenFileLimit is { } limit ? Math.Max(1, limit - MaxPendingHellos - Math.Max(128, limit / 8)) : null;

    /// <summary>At most this many connections from one remote address wait for their hello at once; its oldest is dropped to make room.</summary>
    public int MaxPendingHellosPerAddress { get; init; } = 64;

    /// <summary>After the end of the stream, how long to wait for children to finish before closing.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(60);

    internal LinkOptions LinkOptions => new()
    {
        MaxQueuedBytes = MaxQueuedBytesPerChild,
        HeartbeatInterval = HeartbeatInterval,
        FailureDetector = new FailureDetectorOptions
        {
            Threshold = FailureThreshold,
            MinSilence = HeartbeatTimeout,
            MaxSilence = MaxSilence is { } most ? (most > HeartbeatTimeout ? most : HeartbeatTimeout) : HeartbeatTimeout * 4,
            // Sampled as often as the node's timer looks at its links; a quiet link hears a
            // heartbeat every interval or a little more.
            SampleInterval = HeartbeatInterval / 2,
            ExpectedInterval = HeartbeatInterval,
            MinStandardDeviation = HeartbeatInterval / 4,
        },
        CloseTimeout = HeartbeatTimeout,
    };
}

/// <summary>Settings of a <see cref="Coordinator"/>.</summary>
public sealed record CoordinatorOptions : NodeOptions
{
    /// <summary>K, the number of shards (1 or 2 for now).</summary>
    public int ShardCount { get; init; } = 1;

    /// <summary>The placement policy; null picks the seed's: binary for K=1, tessellated for K=2.</summary>
    public TopologyKind? Topology { get; init; }

    /// <summary>The coordinator's upload as a multiple of the stream rate; null for K+1 shard-streams.</summary>
    public double? Upload { get; init; }

    /// <summary>Hold the source until this many peers are attached.</summary>
    public int MinPeers { get; init; }

    /// <summary>
    /// The most upload a joiner is believed, as a multiple of the stream rate: a peer that declares
    /// more is placed as if it had declared this (a liar cannot buy a place near the root).
    /// </summary>
    public double MaxPeerUpload { get; init; } = 4;

    /// <summary>
    /// A peer demoted because a parent found it slow gets its budget back once it has kept up this
    /// long under other parents, while the source produced (docs/resilience.md, "Re-promoted");
    /// each later demotion of the same peer doubles it. No CLI flag: tests shorten it.
    /// </summary>
    public TimeSpan RepromotionProbation { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The stream's key; null makes an ephemeral one (the stream address then changes at every start).</summary>
    public Trust.StreamSigner? Signer { get; init; }

    /// <summary>
    /// Keeps a version-10 joiner's connection after Landmarks and reads its next Join on it
    /// (docs/protocol.md, section 17). False answers as a version-9 coordinator did: Landmarks
    /// without a version, then close (tests of a new joiner's fallback).
    /// </summary>
    internal bool OneConnectionJoins { get; init; } = true;

    /// <summary>A signed hash list covers at most this many chunks of a shard (1..64).</summary>
    public int MaxHashesPerList { get; init; } = 32;

    /// <summary>
    /// Chunks wait at most this long at the source for their hash list to be signed (a list is
    /// signed sooner when it is full, and a live source's sooner still: <see cref="MinSigningInterval"/>).
    /// So it bounds the wait of a source read with full reads (a file, a backlog): long enough that
    /// such a source fills its lists (32 chunks of 64 KiB at ~100 MB/s per shard), half the
    /// verifications per chunk at every peer of lists cut at 5 ms. Paid once, not per hop.
    /// </summary>
    public TimeSpan MaxSigningDelay { get; init; } = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// When the source has caught up (a read came back short), what it gave is signed as soon as
    /// the last signature is this old: a live source's chunks wait about half of it, and each
    /// shard costs at most one signature per interval (one verification per interval at each peer).
    /// </summary>
    public TimeSpan MinSigningInterval { get; init; } = TimeSpan.FromMilliseconds(2);

    /// <summary>
    /// A raw source's short read (a live source's record) is appended to the chunk before it while
    /// that chunk still waits for its signature and has room, instead of becoming a chunk of its
    /// own: one hash on the wire and one hash to compute at every peer for all the records of a
    /// signing interval. Nothing waits longer than it would anyway; chunks are then no longer one
    /// per read. Off by default (docs/performance.md, "Merging a live source's small reads").
    /// </summary>
    public bool MergeShortReads { get; init; }

    /// <summary>
    /// How often a peer and the coordinator heartbeat each other on a quiet control link, pinned;
    /// null (the default) to choose it from the number of peers held (see
    /// <see cref="ControlHeartbeatsPerSecond"/>). Longer cuts the coordinator's heartbeat traffic
    /// (one frame each way per peer and interval) at the price of finding a frozen peer, or a peer
    /// a frozen coordinator, later (docs/resilience.md#heartbeats-and-failure-detection). At most
    /// <see cref="Peer.MaxControlHeartbeat"/>, which is what a peer accepts; the heartbeat interval
    /// pins the heartbeats of every link to it.
    /// </summary>
    public TimeSpan? ControlHeartbeatInterval { get; init; }

    /// <summary>
    /// Without <see cref="ControlHeartbeatInterval"/>: the control-link heartbeat interval is the
    /// number of peers held divided by this, in whole seconds, between the heartbeat interval and
    /// <see cref="Peer.MaxControlHeartbeat"/>, with hysteresis (<see cref="ControlHeartbeats"/>),
    /// so that the coordinator hears about this many heartbeats a second whatever its size. 1,000
    /// (the default) keeps 1 s up to 1,999 peers and costs this 2-core machine ~2% of a core
    /// (docs/performance.md, "Control-link heartbeats chosen from the number of peers").
    /// </summary>
    public double ControlHeartbeatsPerSecond { get; init; } = 1000;

    /// <summary>
    /// How long a peer whose control link broke on its side (no goodbye, not timed out here) keeps
    /// its place for it to join again; null (the default) for 4 x <see cref="NodeOptions.HeartbeatTimeout"/>,
    /// the longest silence a link is allowed by default. A child that reports the peer lost ends the
    /// wait at once (docs/protocol.md, "Rejoining").
    /// </summary>
    public TimeSpan? RejoinGrace { get; init; }

    /// <summary>
    /// Place by latency (docs/topology.md, "Latency"): a version-6 joiner first measures the RTT to
    /// a few landmarks and joins with the network coordinate they give; the planner then prefers, among
    /// the placements the policy allows, the parents that give it the lowest estimated delay from the
    /// source. Off by default in the library; the CLI turns it on (<c>--latency-aware false</c> turns it off).
    /// </summary>
    public bool LatencyAware { get; init; }

    /// <summary>
    /// With <see cref="LatencyAware"/>: at most this many peers a second, over the whole overlay,
    /// are moved to a parent that gives them a much lower estimated delay from the source
    /// (<see cref="Topology.Planner.ImproveLatency"/>; each move is a Move frame the peer follows
    /// without losing bytes) when the RTT the peer measured to its parent bears the move out
    /// (docs/topology.md, "Improving over time"). 0 (the default in the library, where
    /// <see cref="LatencyAware"/> is off too) turns moving off; the CLI's default is 4, the floor
    /// of <see cref="LatencyMovesShare"/> with the rebuild on
    /// (<c>--latency-moves 0</c> turns it off).
    /// </summary>
    public int LatencyMovesPerSecond { get; init; }

    /// <summary>
    /// With <see cref="LatencyRebuild"/>: each round may move this share of the live peers instead of
    /// <see cref="LatencyMovesPerSecond"/> when that is more and the overlay has at least
    /// <see cref="LatencyRebuildMinPeers"/> peers (<see cref="Topology.Planner.MovesCap"/>), so that a
    /// rebuild takes about the same time at any size. 0 (the default in the library) keeps the cap
    /// fixed; the CLI's default is <see cref="Topology.Planner.RebuildMovesShare"/> (1%), with
    /// <see cref="LatencyMovesPerSecond"/> 4 as its floor, and a given <c>--latency-moves</c> fixes the cap.
    /// </summary>
    public double LatencyMovesShare { get; init; }

    /// <summary>
    /// How often the coordinator looks for latency moves (one call of <see cref="Topology.Planner.ImproveLatency"/>,
    /// at most <see cref="LatencyMovesPerSecond"/> moves each): once a second. Tests shorten it to
    /// run the same rounds (a moved peer rests <see cref="Topology.Planner.ImproveRest"/> of them)
    /// in less wall time; the cap then holds per round, not per second.
    /// </summary>
    internal TimeSpan LatencyMoveInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// With <see cref="LatencyMovesPerSecond"/>: each round of latency moves first carries out a rebuild
    /// of every tree by regions (<see cref="Topology.Planner.RebuildLatency"/>, from the peers'
    /// coordinates, the control links' RTTs and the parent-link RTTs their heartbeats report), under
    /// the same cap (a step that needs more, an exchange of two relays' places, waits while the
    /// rounds save their unused moves for it); leaf moves take the seconds it leaves unused. Off by default (CLI:
    /// <c>--latency-rebuild</c>); it plans nothing under <see cref="LatencyRebuildMinPeers"/> peers.
    /// See docs/topology.md, "The rebuild by regions", for how many moves it takes.
    /// </summary>
    public bool LatencyRebuild { get; init; }

    /// <summary>
    /// With <see cref="LatencyRebuild"/>: fewest peers for a rebuild to be planned (<see cref="Topology.PlannerOptions.RebuildMinPeers"/>,
    /// <see cref="Topology.Planner.RebuildMinPeers"/> by default; CLI: <c>--latency-rebuild-min-peers</c>).
    /// Smaller overlays gain from it too in the simulator, their trees within blind + 1 while it is
    /// under way since 2026-12-06 (docs/topology.md, "The rebuild by regions", "Small overlays");
    /// tests lower it to run a rebuild with real nodes.
    /// </summary>
    public int LatencyRebuildMinPeers { get; init; } = ShardStream.Topology.Planner.RebuildMinPeers;

    /// <summary>
    /// With <see cref="LatencyRebuild"/>: least estimated gain, with the measured RTTs, for a planned rebuild to be carried out
    /// (<see cref="Topology.PlannerOptions.RebuildMinGainShare"/>, <see cref="Topology.Planner.RebuildMinGainShare"/>
    /// by default); a test sets -1 so that a small overlay's plan is carried out whatever its estimate.
    /// </summary>
    internal double LatencyRebuildMinGainShare { get; init; } = ShardStream.Topology.Planner.RebuildMinGainShare;

    /// <summary>The policy in force.</summary>
    public TopologyKind EffectiveTopology => Topology ?? (ShardCount == 2 ? TopologyKind.Tessellated : ShardCount == 1 ? TopologyKind.Binary : TopologyKind.Striped);

    /// <summary>The coordinator's budget in shard-streams.</summary>
    public int SourceBudget => Upload is { } x ? Budgets.FromMultiple(x, ShardCount) : ShardCount + 1;

    /// <summary>
    /// How far back a joining peer's stream starts: the oldest chunk produced within this time.
    /// A peer that the planner moves under a new joiner is then never behind what the joiner holds.
    /// </summary>
    public TimeSpan JoinBacklog { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Admission control: joins (and rejoins) worked on at once, from the hello to the welcome
    /// (the dial-back probe, the signatures, the placement); null (the default) for no limit. See
    /// JoinSlots.cs, and docs/performance.md for why it is off by default.
    /// </summary>
    public int? MaxJoinsInProgress { get; init; }

    /// <summary>Joins that may wait for a turn beyond <see cref="MaxJoinsInProgress"/>; any more are told the coordinator is busy at once.</summary>
    public int MaxJoinsWaiting { get; init; } = 256;

    /// <summary>The longest a join waits for a turn before it is told the coordinator is busy (it then tries again after a backoff).</summary>
    public TimeSpan MaxJoinWait { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Throws <see cref="ArgumentException"/> with a message for a user when a setting cannot work.</summary>
    public void Validate()
    {
        if (ShardCount is < 1 or > Wire.Protocol.MaxShards)
            throw new ArgumentException($"shard count {ShardCount} is not supported: use 1 to {Wire.Protocol.MaxShards} (1 = binary tree, 2 = the 1.5 tessellation, 3 and more = striped trees)");
        if (EffectiveTopology == TopologyKind.Binary && ShardCount != 1)
            throw new ArgumentException($"the binary topology needs exactly 1 shard, not {ShardCount}");
        if (EffectiveTopology == TopologyKind.Tessellated && ShardCount != 2)
            throw new ArgumentException($"the tessellated topology needs exactly 2 shards, not {ShardCount}");
        if (MinPeers < 0) throw new ArgumentException("--min-peers cannot be negative");
        if (SourceBudget < ShardCount)
            throw new ArgumentException($"the coordinator's upload must allow at least one shard-stream per shard ({ShardCount} x 1/{ShardCount} of the stream rate = 1x)");
        if (MaxPeerUpload < 0 || double.IsNaN(MaxPeerUpload)) throw new ArgumentException("--max-upload cannot be negative");
        if (MaxHashesPerList is < 1 or > Wire.Protocol.MaxHashesPerList) throw new ArgumentException($"a hash list covers 1 to {Wire.Protocol.MaxHashesPerList} chunks");
        if (MaxSigningDelay <= TimeSpan.Zero || MinSigningInterval < TimeSpan.Zero) throw new ArgumentException("the signing delay must be positive and the signing interval not negative");
        if (MaxJoinsInProgress is < 1 || MaxJoinsWaiting < 0 || MaxJoinWait < TimeSpan.Zero) throw new ArgumentException("joins in progress (--max-joins) must be at least 1, joins waiting and their wait not negative");
        if (JoinBacklog < TimeSpan.Zero || JoinBacklog >= ReplayWindowAge) throw new ArgumentException($"the replay window (--replay-seconds, {ReplayWindowAge.TotalSeconds:0.##} s) must be longer than the {JoinBacklog.TotalSeconds:0.##} s a new viewer's stream starts back");
        if (LatencyMoveInterval <= TimeSpan.Zero) throw new ArgumentException("the interval between latency-move rounds must be positive");
        if (LatencyMovesPerSecond < 0) throw new ArgumentException("moves for a lower delay a second (--latency-moves) must be 0 or more");
        if (!(LatencyMovesShare is >= 0 and <= 1)) throw new ArgumentException($"the share of the peers moved a second for a lower delay must be between 0 and 1, got {LatencyMovesShare}");
        // The CLI takes at least Planner.RebuildLeastPeers (CoordinatorCommand); tests go lower.
        if (LatencyRebuildMinPeers < 1) throw new ArgumentException($"the fewest peers for a rebuild by regions must be at least 1, got {LatencyRebuildMinPeers}");
        if (RepromotionProbation <= TimeSpan.Zero) throw new ArgumentException("the re-promotion probation must be positive");
        if (RejoinGrace < TimeSpan.Zero) throw new ArgumentException("the rejoin grace cannot be negative");
        if (!(ControlHeartbeatsPerSecond > 0)) throw new ArgumentException("the control-link heartbeats a second must be positive");
        if (ControlHeartbeatInterval is { } control && (control < HeartbeatInterval || control > Peer.MaxControlHeartbeat))
            throw new ArgumentException($"the control-link heartbeat interval must lie between the heartbeat interval ({HeartbeatInterval.TotalSeconds:0.##} s) and {Peer.MaxControlHeartbeat.TotalSeconds:0} s");
    }
}

/// <summary>Settings of a <see cref="Peer"/>.</summary>
public sealed record PeerOptions : NodeOptions
{
    /// <summary>The newest protocol version this peer's Join offers (tests: a version-9 joiner, which joins again after each Landmarks).</summary>
    internal ushort MaxVersion { get; init; } = Wire.Protocol.Version;

    /// <summary>Any node of the overlay: the coordinator, or a peer that will redirect to it.</summary>
    public required string JoinAddress { get; init; }

    /// <summary>This peer's upload as a multiple of the stream rate; null for K+1 shard-streams; 0 for a viewer that relays nothing.</summary>
    public double? Upload { get; init; }

    /// <summary>
    /// The address other nodes should connect to for this peer's children, when it differs from
    /// <see cref="NodeOptions.ListenAddress"/> (port forwarding, containers, a public name); null
    /// to advertise the listen address (one on 0.0.0.0 or [::] is advertised by the coordinator at
    /// the address this peer's connection came from).
    /// </summary>
    public string? AdvertiseAddress { get; init; }

    /// <summary>
    /// The stream this viewer wants (its address, the coordinator's public key). Null: the peer
    /// pins the key the coordinator proves it holds when it joins, and logs it.
    /// </summary>
    public Trust.StreamKey? Stream { get; init; }

    /// <summary>How many redirects to follow before giving up.</summary>
    public int MaxRedirects { get; init; } = 8;

    /// <summary>
    /// A latency-aware coordinator asks a joiner to measure a few nodes, in at most two rounds
    /// (landmarks, then candidate parents): each round takes at most this long, connects included.
    /// A node that has not answered by then is left out; one this joiner could not even connect to
    /// is reported as such (docs/protocol.md, section 17). Default 1 s.
    /// </summary>
    public TimeSpan MeasureTimeout { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Stream bytes in order but not yet written to the output; past this the peer stops with "the output is slower than the stream".</summary>
    public long MaxOutputBacklogBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>
    /// Memory that chunks from other peers, waiting for an earlier chunk of another shard, may keep
    /// alive (buffers and receive slabs), and one chunk per KiB of it. A chunk past it is refused:
    /// its sender and the parent of the lagging shard are cut off and repaired.
    /// </summary>
    public long MaxReassemblyBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>
    /// After losing the coordinator (its link timed out or broke, it evicted this peer, or it went
    /// away), keep trying to join again for this long, with backoff (0.5 s doubling to 8 s, each
    /// times a jitter of 0.5 to 1.5), instead of stopping; <see cref="TimeSpan.Zero"/> stops at
    /// once. Default 60 s. A first join that the coordinator was busy for, or took and then dropped
    /// or left unanswered, is tried again the same way, for this long from that first failure.
    /// The peer resumes at its own next chunk where a replay window still holds it, else it skips with a logged gap (docs/resilience.md, "Rejoining").
    /// </summary>
    public TimeSpan RejoinFor { get; init; } = TimeSpan.FromSeconds(60);
}

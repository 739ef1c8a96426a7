using System.Buffers;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using ShardStream.Streaming;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// A peer's intake: what its parents send of the stream (chunks, hash lists, ends), checked, kept
/// in the reassembler, put in order for the output and forwarded to its children, one frame of a
/// shard at a time. It owns the ready list and the output queue (bounded by
/// <see cref="PeerOptions.MaxOutputBacklogBytes"/>), the per-shard intake locks and the count of
/// short ends. When the reassembler's
/// bound refuses a chunk it cuts off the lagging parent and the sender
/// (<see cref="CutOffForRoom"/>), and tells the <see cref="ParentLossReporter"/>.
/// </summary>
internal sealed class PeerIntake(PeerOptions options, IPeerParents peer, ParentLossReporter reporter, ShardStalls stalls, ILogger log, TimeProvider time)
{
    /// <summary>A peer takes a parent's End over chunks it never received only after this many parents ended the shard short.</summary>
    internal const int ShortEndsBeforeGap = 3;

    private readonly Channel<Chunk> _output = Channel.CreateUnbounded<Chunk>(new UnboundedChannelOptions { SingleReader = true });
    private long _outputBacklog;
    private readonly List<Chunk> _ready = [];

    /// <summary>One slot per shard: chunks, hash lists and ends of a shard are taken in one at a time (see <see cref="OnFrame"/>).</summary>
    private readonly object[] _shardIntake = Enumerable.Range(0, Protocol.MaxShards).Select(_ => new object()).ToArray();

    /// <summary>How many times each shard's End came from a parent while chunks of the shard were missing (see <see cref="RefuseShortEnd"/>).</summary>
    private readonly int[] _shortEnds = new int[Protocol.MaxShards];

    /// <summary>Chunks in stream order, for the output.</summary>
    public ChannelReader<Chunk> Output => _output.Reader;

    /// <summary>Bytes put in order and not yet written to the output.</summary>
    public long OutputBacklog => Interlocked.Read(ref _outputBacklog);

    /// <summary>The lock under which chunks are added to the reassembler (a new run replaces it under this lock too).</summary>
    public object ReadyGate => _ready;

    /// <summary>Called for a parent's chunk that is due (no duplicate), just before its check (tests hold a chunk there).</summary>
    public Action<Link, long>? ChunkDue { get; set; }

    /// <summary>A chunk went to the output.</summary>
    public void Written(int length) => Interlocked.Add(ref _outputBacklog, -length);

    /// <summary>
    /// A chunk, hash list or end from a parent, of a shard below <paramref name="shardCount"/>.
    /// False for any other frame (the peer handles it).
    /// </summary>
    public bool OnFrame(Link link, FrameType type, ReadOnlySequence<byte> body, int shardCount)
    {
        switch (type)
        {
            case FrameType.Chunk:
                if (!ChunkHeader.TryRead(body, out var header, out var payload)) throw new ProtocolException("malformed chunk frame");
                if (header.Shard >= shardCount) throw new ProtocolException($"chunk of shard {header.Shard}, the stream has {shardCount}");
                // One chunk of a shard at a time, from the check to the relay: during a move the old
                // parent's chunk in flight and the new parent's replay of it arrive on two links at
                // once, and the second must find the first kept (a duplicate), not its hash taken
                // (an honest parent accused) or a later chunk kept before it (a gap).
                lock (_shardIntake[header.Shard]) OnChunk(link, header, body, payload);
                return true;
            case FrameType.End:
                var reader = new SequenceReader<byte>(body);
                if (!End.TryRead(ref reader, out var end)) throw new ProtocolException("malformed end frame");
                if (end.Shard >= shardCount) throw new ProtocolException($"end of shard {end.Shard}, the stream has {shardCount}");
                lock (_shardIntake[end.Shard]) OnEnd(link, end);
                return true;
            case FrameType.Hashes:
                var hashReader = new SequenceReader<byte>(body);
                if (!HashList.TryRead(ref hashReader, out var list)) throw new ProtocolException("malformed hash list frame");
                if (list.Shard >= shardCount) throw new ProtocolException($"hash list of shard {list.Shard}, the stream has {shardCount}");
                lock (_shardIntake[list.Shard])
                {
                    if (!peer.IsParentOf(list.Shard, link)) return true;
                    peer.Verifier.AddHashList(list, peer.Reassembler.NextSeqOf(list.Shard));
                    // Forwarded as it came (TryRead accepts only the one encoding): no second encoding per list.
                    peer.Relay.PublishHashList(list, FrameWriting.FromBody(FrameType.Hashes, body));
                }
                return true;
            default:
                return false;
        }
    }

    /// <summary>A shard's End from a parent, under its shard's intake lock.</summary>
    private void OnEnd(Link link, End end)
    {
        // Only the shard's current parent can say it has sent everything.
        if (!peer.IsParentOf(end.Shard, link)) return;
        // A parent cut off for room had chunks of the shard refused: its End would skip them.
        if (link.IsClosing) return;
        peer.Verifier.VerifyEnd(end);
        // An End while chunks of the shard are missing: see RefuseShortEnd.
        if (RefuseShortEnd(link, end)) return;
        peer.Relay.PublishEnd(end);
        stalls.ShardEnded(end.Shard);
        lock (_ready)
        {
            peer.Reassembler.SetEnd((long)end.FinalSeq, (long)end.FinalOffset, _ready, end.Shard);
            FlushReady();
        }
    }

    /// <summary>
    /// A parent ended a shard while chunks of it below the end never came from it: it withheld
    /// them, or its own window or upstream lost them. Taken at its word, the child would skip those
    /// chunks as lost for good, while another node's window may still hold them. So the End is
    /// neither applied nor forwarded; the link is closed with the reason, the coordinator hears of
    /// a lost parent and repairs it (the same parent once more, then another one), and the shard
    /// resumes at its next chunk. The gap is taken (and counted in <see cref="Peer.LostBytes"/>) only
    /// when <see cref="ShortEndsBeforeGap"/> parents ended it short, or when the coordinator did
    /// (the source: what it no longer holds, no one is owed).
    /// </summary>
    private bool RefuseShortEnd(Link link, End end)
    {
        var reassembler = peer.Reassembler;
        long next = reassembler.NextSeqOf(end.Shard);
        if (next >= (long)end.FinalSeq || reassembler.IsComplete || peer.IsCoordinator(link)) return false;
        int times = Interlocked.Increment(ref _shortEnds[end.Shard]);
        if (times >= ShortEndsBeforeGap) return false;
        RepairLog.ShortEnd(log, link.Name, end.Shard, (long)end.FinalSeq, next, times);
        link.CloseAsync(GoodbyeCode.Normal, $"ended shard {end.Shard} at chunk {end.FinalSeq} without sending chunks from {next} on").Observe(log, $"{link.Name}: closing");
        return true;
    }

    /// <summary>A chunk from a parent, under its shard's intake lock: checked, kept, written in order and forwarded.</summary>
    private void OnChunk(Link link, in ChunkHeader header, ReadOnlySequence<byte> body, ReadOnlySequence<byte> payload)
    {
        // After a move the old parent may still have chunks of the shard in flight: not ours any more.
        if (!peer.IsParentOf(header.Shard, link)) return;
        // Cut off for room (below): nothing more of it, so each shard stays in order.
        if (link.IsClosing) return;
        var reassembler = peer.Reassembler;
        // A duplicate (a new parent replays what the old one sent) is dropped unchecked: it
        // is neither written nor forwarded. Anything else is checked before either.
        if ((long)header.Seq < reassembler.NextSeqOf(header.Shard)) return;
        ChunkDue?.Invoke(link, (long)header.Seq);
        peer.Verifier.VerifyChunk(header, body);
        var chunk = Chunk.FromReceived(header.Shard, (long)header.Seq, (long)header.Offset, payload);
        peer.Progress(header.Shard);
        stalls.Received(header.Shard, chunk.Length, chunk.Offset + chunk.Length);
        // Kept before it is forwarded: a chunk refused for room is not forwarded either, so
        // the children of a relay that lacks a shard are not pushed past their own bound.
        chunk.Retain();
        lock (_ready)
        {
            reassembler = peer.Reassembler;
            try
            {
                // The coordinator is trusted: its chunks are kept past the bound, and only the lagging parent is cut off.
                reassembler.Add(chunk, _ready, options.MaxReassemblyBytes, trusted: peer.IsCoordinator(link));
                if (reassembler.Full is { } kept)
                {
                    reassembler.Full = null;
                    CutOffForRoom(link, kept);
                }
            }
            catch (ReassemblyFullException full)
            {
                chunk.Release();
                CutOffForRoom(link, full);
                return;
            }
            FlushReady();
        }
        peer.Relay.Publish(chunk);
        chunk.Release();
    }

    /// <summary>
    /// A chunk was refused at the reassembler's bound: chunks of the other shards wait for the
    /// lagging shard's next chunk. That shard's parent holds the stream back (it withholds the
    /// shard, or is too slow for this peer), and the sender of the refused chunk may send nothing
    /// more that this peer can take in order. Both links close with the reason (no accusation:
    /// slowness is no proof of a lie); the coordinator hears of lost parents and repairs them,
    /// and each shard resumes from its next chunk. The coordinator is never cut off (it sends what
    /// its source reads, and its control link is this peer's place in the overlay).
    /// </summary>
    private void CutOffForRoom(Link sender, ReassemblyFullException full)
    {
        var (lagging, since) = peer.ParentOf(full.LaggingShard);
        // A parent that took the lagging shard over lately is replaying it from its window: it is
        // not the one holding the stream back (cutting it made every repair after a withholding
        // relay undo the next one, docs/resilience.md "Orphans").
        bool replaying = time.GetElapsedTime(since) < options.HeartbeatTimeout;
        if (lagging is not null && lagging != sender && !lagging.IsClosing && !peer.IsCoordinator(lagging) && !replaying)
        {
            BoundsLog.ShardHeldBack(log, lagging.Name, full.LaggingShard, full.Message);
            lagging.CloseAsync(GoodbyeCode.Normal, $"shard {full.LaggingShard} is too far behind the others: {full.Message}").Observe(log, $"{lagging.Name}: closing");
        }
        if (full.Kept || sender.IsClosing) return;
        BoundsLog.ReassemblyFull(log, sender.Name, full.Message);
        reporter.CutForRoom(sender, full.LaggingShard, peer.Reassembler.NextSeqOf(full.LaggingShard));
        sender.CloseAsync(GoodbyeCode.Normal, $"shard {full.RefusedShard} is too far ahead of shard {full.LaggingShard}: {full.Message}").Observe(log, $"{sender.Name}: closing");
    }

    /// <summary>Hands the chunks put in order to the output. Called under <see cref="ReadyGate"/>.</summary>
    public void FlushReady()
    {
        foreach (var c in _ready)
        {
            long waiting = Interlocked.Add(ref _outputBacklog, c.Length);
            _output.Writer.TryWrite(c);
            // A viewer whose output (stdout, a pipe to a player) is slower than the stream would
            // grow without bound: it stops with the reason instead (it costs only itself).
            if (waiting > options.MaxOutputBacklogBytes)
                peer.Fail($"the output is slower than the stream: {waiting} bytes are waiting to be written, the limit is {options.MaxOutputBacklogBytes}");
        }
        _ready.Clear();
        if (peer.Reassembler.IsComplete)
        {
            stalls.Completed();
            _output.Writer.TryComplete();
        }
    }
}

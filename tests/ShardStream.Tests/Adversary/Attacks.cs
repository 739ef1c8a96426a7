using System.Buffers.Binary;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>What a lying relay does to the frames it sends its children (see <see cref="TamperingTransport"/>).</summary>
public static class Attacks
{
    private const int Body = Protocol.FrameHeaderLength;
    private const int Payload = Body + Protocol.ChunkHeaderLength;

    /// <summary>
    /// A trickle (one rewriter per connection: <see cref="TamperingTransport.PerConnection"/>):
    /// holds back every chunk, hash list and End, in order, and lets them go up to and including
    /// one chunk per <paramref name="every"/>; everything else (heartbeats, pongs) goes at once.
    /// Never silent for long, every chunk right and in order, ever further behind.
    /// </summary>
    public static Func<FrameRewriter> Trickle(TimeSpan every) => () =>
    {
        var held = new Queue<(FrameType Type, byte[] Frame)>();
        long last = 0;
        return (type, frame) =>
        {
            bool stream = type is FrameType.Chunk or FrameType.Hashes or FrameType.End;
            if (stream) held.Enqueue((type, frame.ToArray()));
            var sent = new List<byte[]>();
            // Any frame the node sends (a heartbeat once the stream is quiet) lets the next one go when due.
            if (held.Count > 0 && (last == 0 || System.Diagnostics.Stopwatch.GetElapsedTime(last) >= every))
            {
                last = System.Diagnostics.Stopwatch.GetTimestamp();
                ReleaseOneChunk(held, sent);
            }
            if (!stream) sent.Add(frame);
            return sent;
        };
    };

    /// <summary>
    /// A share (one rewriter per connection: <see cref="TamperingTransport.PerConnection"/>): holds
    /// back every chunk, hash list and End, in order, and lets one chunk go (with what came before
    /// it) for each 1/<paramref name="share"/> chunks the node gives it: a child gets that share of
    /// the stream's rate, every chunk right and in order, more than the trickle check's half with
    /// a share above 0.5, and falls ever further behind the head. With <paramref name="replay"/>,
    /// the chunks the node gives it in the connection's first <paramref name="replay"/> (its replay
    /// window, sent at the attach) earn nothing: a child sent back to it after a cut gets that share
    /// of the live rate from where it was, and never gains on the head (a parent whose path carries
    /// only that share of the stream's rate).
    /// </summary>
    public static Func<FrameRewriter> Share(double share, TimeSpan replay = default) => () =>
    {
        var held = new Queue<(FrameType Type, byte[] Frame)>();
        double credit = 0;
        long first = 0;
        return (type, frame) =>
        {
            if (first == 0) first = System.Diagnostics.Stopwatch.GetTimestamp();
            bool stream = type is FrameType.Chunk or FrameType.Hashes or FrameType.End;
            if (stream) held.Enqueue((type, frame.ToArray()));
            if (type == FrameType.Chunk && System.Diagnostics.Stopwatch.GetElapsedTime(first) >= replay) credit += share;
            var sent = new List<byte[]>();
            while (credit >= 1 && held.Count > 0)
            {
                ReleaseOneChunk(held, sent);
                credit -= 1;
            }
            if (!stream) sent.Add(frame);
            return sent;
        };
    };

    /// <summary>
    /// A lag kept (one rewriter per connection): lets <paramref name="share"/> of the chunks through
    /// as <see cref="Share"/> until the oldest chunk it holds has waited <paramref name="by"/>, and
    /// from then on sends what it holds one chunk per <paramref name="every"/> (the rate the
    /// source makes chunks at), none before it came, and any that waited <paramref name="by"/> at
    /// once: a child falls <paramref name="by"/> behind the head and then gets the stream at its
    /// rate from the relay's backlog, which takes up a hold-up of the source as an honest parent
    /// that far behind does; every chunk right and in order. Everything else goes at once.
    /// </summary>
    public static Func<FrameRewriter> LagThenFullRate(double share, TimeSpan by, TimeSpan every) => () =>
    {
        var held = new Queue<(FrameType Type, byte[] Frame)>();
        // When each chunk held came.
        var came = new Queue<long>();
        double credit = 0;
        bool paced = false;
        long next = 0;
        long interval = (long)(every.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
        return (type, frame) =>
        {
            long now = System.Diagnostics.Stopwatch.GetTimestamp();
            bool stream = type is FrameType.Chunk or FrameType.Hashes or FrameType.End;
            if (stream) held.Enqueue((type, frame.ToArray()));
            if (type == FrameType.Chunk) came.Enqueue(now);
            bool Waited() => came.Count > 0 && System.Diagnostics.Stopwatch.GetElapsedTime(came.Peek(), now) >= by;
            var sent = new List<byte[]>();
            if (!paced && Waited()) (paced, next) = (true, now);
            if (paced)
            {
                // Any frame the node sends (a heartbeat once the stream is quiet) lets go what is due by now.
                while (came.TryPeek(out long at) && (Math.Max(next, at) <= now || Waited()))
                {
                    next = Math.Max(next, at) + interval;
                    came.Dequeue();
                    ReleaseOneChunk(held, sent);
                }
                // An End after the last chunk goes with it.
                if (came.Count == 0) while (held.TryDequeue(out var f)) sent.Add(f.Frame);
            }
            else if (type == FrameType.Chunk && (credit += share) >= 1)
            {
                credit -= 1;
                came.Dequeue();
                ReleaseOneChunk(held, sent);
            }
            if (!stream) sent.Add(frame);
            return sent;
        };
    };

    /// <summary>
    /// A stall (one rewriter per connection): holds back every chunk, hash list and End, and lets
    /// them go, up to and including one chunk, once: <paramref name="after"/> after the connection's
    /// first frame. A child so cut it off two heartbeat timeouts after that one chunk, not after
    /// its attach: the liar sets how far apart its children's cuts come.
    /// </summary>
    public static Func<FrameRewriter> StallAfterOneChunk(TimeSpan after) => () =>
    {
        var held = new Queue<(FrameType Type, byte[] Frame)>();
        long first = 0;
        bool released = false;
        return (type, frame) =>
        {
            if (first == 0) first = System.Diagnostics.Stopwatch.GetTimestamp();
            bool stream = type is FrameType.Chunk or FrameType.Hashes or FrameType.End;
            if (stream) held.Enqueue((type, frame.ToArray()));
            var sent = new List<byte[]>();
            if (!released && System.Diagnostics.Stopwatch.GetElapsedTime(first) >= after && held.Any(f => f.Type == FrameType.Chunk))
            {
                released = true;
                ReleaseOneChunk(held, sent);
            }
            if (!stream) sent.Add(frame);
            return sent;
        };
    };

    /// <summary>
    /// For the connections a node opens (<see cref="TamperingTransport.Opened"/>, one rewriter per
    /// connection): on its control link (the one that began with a join Hello), sends a report
    /// that its parent <paramref name="parent"/> of shard 0 is lost ahead of the next frame the
    /// node sends, once for each time <paramref name="take"/> says one is due. A liar that says
    /// its own parent is lost whenever it likes.
    /// </summary>
    public static Func<FrameRewriter> ReportParentLost(Func<int> parent, Func<bool> take) => () =>
    {
        bool? control = null;
        return (type, frame) =>
        {
            if (control is null)
            {
                var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(frame.AsMemory(Body)));
                control = type == FrameType.Hello && Hello.TryRead(ref reader, out var hello) && hello.Role == HelloRole.Join;
            }
            if (control != true || type == FrameType.Hello || !take()) return [frame];
            return [Frames(w => new ParentLost((ulong)parent(), [new ShardStart(0, 0)]).Write(w)), frame];
        };
    };

    /// <summary>
    /// Until <paramref name="stop"/>: each time <paramref name="count"/> grows (looked at every
    /// 50 ms), sets <paramref name="due"/> to 1, which the <c>take</c> of <see cref="ReportParentLost"/>
    /// reads: a liar that says its own parent is lost after each such event.
    /// </summary>
    public static async Task DueWhenItGrowsAsync(Func<int> count, System.Runtime.CompilerServices.StrongBox<int> due, CancellationToken stop)
    {
        int seen = 0;
        while (!stop.IsCancellationRequested)
        {
            int now = count();
            if (now > seen)
            {
                seen = now;
                Interlocked.Exchange(ref due.Value, 1);
            }
            try
            {
                await Task.Delay(50, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Per connection: one that began with a Hello other than a join (an attach) sends nothing
    /// more, that Hello included; the join's control link is left alone. A node that never
    /// completes an attach: each times out at the far end's welcome, as against a frozen parent.
    /// </summary>
    public static Func<FrameRewriter> SilentAttaches => () =>
    {
        bool? silent = null;
        return (type, frame) =>
        {
            if (silent is null)
            {
                var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(frame.AsMemory(Body)));
                silent = type == FrameType.Hello && Hello.TryRead(ref reader, out var hello) && hello.Role != HelloRole.Join;
            }
            return silent == true ? [] : [frame];
        };
    };

    /// <summary>Moves the frames <paramref name="held"/> back, in order, up to and including the first chunk, to <paramref name="sent"/>.</summary>
    private static void ReleaseOneChunk(Queue<(FrameType Type, byte[] Frame)> held, List<byte[]> sent)
    {
        while (held.TryDequeue(out var f))
        {
            sent.Add(f.Frame);
            if (f.Type == FrameType.Chunk) break;
        }
    }

    /// <summary>Flips the first payload byte of every chunk.</summary>
    public static IEnumerable<byte[]> FlipBytes(FrameType type, byte[] frame)
    {
        if (type == FrameType.Chunk) frame[Payload] ^= 0xFF;
        return [frame];
    }

    /// <summary>Moves every chunk's offset one byte on: the payload is right, its place in the stream is not.</summary>
    public static IEnumerable<byte[]> ForgeOffsets(FrameType type, byte[] frame)
    {
        if (type == FrameType.Chunk)
        {
            var offset = frame.AsSpan(Body + 9, 8);
            BinaryPrimitives.WriteUInt64BigEndian(offset, BinaryPrimitives.ReadUInt64BigEndian(offset) + 1);
        }
        return [frame];
    }

    /// <summary>Sends every chunk as a chunk far ahead (seq + 1000 K, shard kept): a gap of the relay's choosing.</summary>
    public static Func<FrameType, byte[], IEnumerable<byte[]>> ForgeSeqsAhead(int shardCount) => (type, frame) =>
    {
        if (type == FrameType.Chunk)
        {
            var seq = frame.AsSpan(Body + 1, 8);
            BinaryPrimitives.WriteUInt64BigEndian(seq, BinaryPrimitives.ReadUInt64BigEndian(seq) + 1000UL * (ulong)shardCount);
        }
        return [frame];
    };

    /// <summary>
    /// Replaces the next chunk by an End that says the stream stopped right there, and sends
    /// nothing more of that shard: the children would think the stream complete, short.
    /// </summary>
    public static FrameRewriter EarlyEnd(int shardCount)
    {
        var ended = new HashSet<byte>();
        return (type, frame) =>
        {
            if (type is not (FrameType.Chunk or FrameType.End)) return [frame];
            byte shard = frame[Body];
            lock (ended)
            {
                if (ended.Contains(shard)) return [];
                if (type == FrameType.End) return [frame];
                ended.Add(shard);
            }
            ulong seq = BinaryPrimitives.ReadUInt64BigEndian(frame.AsSpan(Body + 1, 8));
            ulong offset = BinaryPrimitives.ReadUInt64BigEndian(frame.AsSpan(Body + 9, 8));
            return [Frames(w => new End(shard, seq, offset).Write(w))];
        };
    }

    /// <summary>Sends a Move on the parent link, ahead of the next chunk: it would send the child to an address of the liar's choosing.</summary>
    public static FrameRewriter MoveToNowhere()
    {
        int sent = 0;
        return (type, frame) =>
        {
            if (type != FrameType.Chunk || Interlocked.Exchange(ref sent, 1) != 0) return [frame];
            return [Frames(w => new Move([new ShardAssignment(frame[Body], AssignmentKind.Redirect, 666, 0, "nowhere:1")]).Write(w)), frame];
        };
    }

    /// <summary>
    /// Withholds every chunk of <paramref name="shard"/>, and its End, and relays everything else
    /// (the other shards, the hash lists, heartbeats): the link looks alive, and a child that gets
    /// the other shards from it would keep them all, waiting for this one.
    /// </summary>
    public static IEnumerable<byte[]> WithholdShard(byte shard, FrameType type, byte[] frame) =>
        type is FrameType.Chunk or FrameType.End && frame[Body] == shard ? [] : [frame];

    /// <summary>
    /// Drops the Welcome that answers a probe, the one Welcome that lists no shard (an attach's
    /// lists the shards served, a redirect's the coordinator's address): the prober's connection is
    /// taken, and closed with no answer. A node that dodges being measured.
    /// </summary>
    public static IEnumerable<byte[]> DodgeProbes(FrameType type, byte[] frame)
    {
        if (type != FrameType.Welcome) return [frame];
        var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(frame.AsMemory(Body)));
        return Welcome.TryRead(ref reader, out var welcome) && welcome.Shards.Length == 0 ? [] : [frame];
    }

    /// <summary>
    /// Replaces the coordinate in every Hello, Heartbeat and Pong that carries one (a node that
    /// knows where it is) by what <paramref name="claimed"/> gives then: a peer that says it is somewhere else.
    /// </summary>
    public static FrameRewriter ClaimCoordinate(Func<WireCoordinate> claimed) => (type, frame) =>
    {
        var claim = claimed();
        var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(frame.AsMemory(Body)));
        return type switch
        {
            FrameType.Hello when Hello.TryRead(ref reader, out var hello) && hello.Coordinate is { IsUnknown: false } =>
                [Frames(w => (hello with { Coordinate = claim }).Write(w))],
            FrameType.Heartbeat when Heartbeat.TryRead(ref reader, out var beat) && beat.Coordinate is { IsUnknown: false } =>
                [Frames(w => (beat with { Coordinate = claim }).Write(w))],
            FrameType.Pong when Pong.TryRead(ref reader, out var pong) && !pong.Coordinate.IsUnknown =>
                [Frames(w => (pong with { Coordinate = claim }).Write(w))],
            _ => [frame],
        };
    };

    /// <summary>Encodes one frame.</summary>
    public static byte[] Frames(Action<System.Buffers.IBufferWriter<byte>> write)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        write(buffer);
        return buffer.WrittenSpan.ToArray();
    }
}

using Microsoft.Extensions.Logging;
using ShardStream.Media;
using ShardStream.Streaming;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// The coordinator's source: reads the stream, cuts it into chunks as reads return (at most
/// 64 KiB), deals them to K shards round-robin, signs them (<see cref="SigningQueue"/>), paces a
/// source faster than the tree, and remembers where joiners may start (the join backlog, and the
/// random-access points of a media stream with their headers; docs/media.md). Its state is
/// guarded by the coordinator's gate, which it shares with the rest of the coordinator, so that a
/// welcome's start and the plan it names are taken together.
/// </summary>
internal sealed class StreamSource
{
    /// <summary>The most random-access points remembered; older ones go first.</summary>
    private const int MaxRandomAccessPoints = 512;

    private readonly CoordinatorOptions _options;
    private readonly object _gate;
    private readonly Relay _relay;
    private readonly RunSigner _signer;
    private readonly SigningQueue _signing;
    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly Queue<(long Seq, long Offset, long At)> _recent = new();
    private readonly Queue<RandomAccessPoint> _randomAccess = new();

    /// <summary>The stream's rate at the source (see <see cref="SourceRate"/>).</summary>
    private readonly SourceRate _rate;
    private long _nextSeq;
    private long _nextOffset;
    private bool _ended;

    /// <summary>No read is merged into a chunk before this seq: a welcome named it as the head (under the gate).</summary>
    private long _mergeFloor;

    /// <summary>A chunk that starts with a unit a decoder can start at, and the header in effect there.</summary>
    private readonly record struct RandomAccessPoint(long Seq, long Offset, long At, MediaHeader? Header);

    public StreamSource(CoordinatorOptions options, object gate, Relay relay, RunSigner signer, ILogger log, TimeProvider time)
    {
        _options = options;
        _gate = gate;
        _relay = relay;
        _signer = signer;
        _log = log;
        _time = time;
        _rate = new SourceRate(time.TimestampFrequency);
        // A list's chunks reach each child at once: at most a sixteenth of the queue limit, so that
        // the burst never comes near it (pacing keeps queues under a quarter of it).
        _signing = new SigningQueue(signer, relay, options.ShardCount, options.MaxHashesPerList, Math.Min(2L << 20, options.MaxQueuedBytesPerChild / 16), time);
    }

    /// <summary>The format of the source, once its first bytes were read.</summary>
    public MediaFormat? Format { get; private set; }

    private bool _formatLogged;

    /// <summary>Stream bytes read from the source so far.</summary>
    public long BytesStreamed => Interlocked.Read(ref _nextOffset);

    /// <summary>The next chunk's seq (the stream's head). Read under the gate.</summary>
    public long NextSeq => _nextSeq;

    /// <summary>The next chunk's offset. Read under the gate.</summary>
    public long NextOffset => _nextOffset;

    /// <summary>
    /// The stream's rate at the source over the last 30 s or so, a start-up burst left out (<see cref="SourceRate"/>), in Mbit/s
    /// (the source's own pace, whatever the overlay does); null before about 1.5 s of samples, and after the end.
    /// Called under the gate.
    /// </summary>
    public double? RateMbps()
    {
        return Ended ? null : _rate.Mbps(_time.GetTimestamp());
    }

    /// <summary>The source has ended and every shard's End is published. Read under the gate, or as a hint without it.</summary>
    public bool Ended => Volatile.Read(ref _ended);

    /// <summary>Chunks cut from the source so far (for tests and the bench).</summary>
    public long ChunksCut
    {
        get
        {
            lock (_gate) return _nextSeq;
        }
    }

    /// <summary>Hash lists signed so far, and how long chunks were held for them (see <see cref="SigningQueue.HoldHistogram"/>); for the bench.</summary>
    public (long ListsSigned, long[] HoldHistogram) SigningStats()
    {
        lock (_gate) return (_signing.ListsSigned, (long[])_signing.HoldHistogram.Clone());
    }

    private void LogFormat(MediaFormat? format)
    {
        if (_formatLogged || format is not { } f) return;
        _formatLogged = true;
        if (f != MediaFormat.Raw) MediaLog.SourceFormat(_log, f == MediaFormat.Flv ? "FLV" : "MPEG-TS", ": chunks are cut at its units and joiners start at a keyframe");
    }

    /// <summary>
    /// Streams <paramref name="source"/> into the relay until it ends, then signs what is left and
    /// publishes every shard's End. Returns the chunks and bytes streamed.
    /// FLV and MPEG-TS sources are cut at tag or packet boundaries (see <see cref="MediaReader"/>).
    /// </summary>
    /// <param name="atEnd">Run under the gate as the End is published, before any leave after it can be taken.</param>
    public async Task<(long Chunks, long Bytes)> RunAsync(MediaReader source, CancellationToken cancellationToken, Action? atEnd = null)
    {
        int k = _options.ShardCount;
        long seq = 0, offset = 0;
        // The reader tells what it found wrong in an FLV or TS source from inside the read that
        // found the format: the format is logged first, so that the lines read in their order.
        if (source.LostSync is { } lostSync) source.LostSync = why => { LogFormat(source.Format); lostSync(why); };
        using var stopSigning = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var signingTimer = Task.Run(() => SignLateListsAsync(stopSigning.Token), CancellationToken.None);
        while (true)
        {
            await PaceAsync(cancellationToken).ConfigureAwait(false);
            var chunk = Chunk.Rent(Protocol.MaxChunkLength);
            int n;
            MediaRead read;
            try
            {
                var reading = source.ReadAsync(chunk.WritableBuffer[..Protocol.MaxChunkLength], cancellationToken);
                // The source has nothing more for now (the end of a burst of a live source): sign
                // what it gave without waiting for the timer, at most once per MinSigningInterval.
                if (!reading.IsCompleted)
                    lock (_gate)
                    {
                        _signing.SourceWaiting(_options.MinSigningInterval);
                        WakeSigningTimer();
                    }
                read = await reading.ConfigureAwait(false);
                n = read.Length;
                if (Format is null && source.Format is { } format)
                {
                    Format = format;
                    LogFormat(format);
                }
            }
            catch
            {
                chunk.Release();
                throw;
            }
            if (n == 0)
            {
                chunk.Release();
                break;
            }
            if (_options.MergeShortReads && n < Protocol.MaxChunkLength && Format == MediaFormat.Raw && TryMergeRead(seq - 1, chunk.WritableBuffer.Span[..n], ref offset))
            {
                chunk.Release();
                continue;
            }
            chunk.Set((int)(seq % k), seq, offset, n);
            chunk = chunk.Shrink();
            lock (_gate)
            {
                // A short read: the source has nothing more for now (a live source between writes).
                _signing.Add(chunk.Retain(), sourceCaughtUp: n < Protocol.MaxChunkLength);
                _signing.SignOverdue(_options.MaxSigningDelay);
                long now = _time.GetTimestamp();
                _recent.Enqueue((seq, offset, now));
                if (read.RandomAccess) NoteRandomAccess(seq, offset, now, read.Header);
                while (_recent.TryPeek(out var oldest) && _time.GetElapsedTime(oldest.At, now) > _options.JoinBacklog) _recent.Dequeue();
                seq++;
                offset += n;
                _nextSeq = seq;
                Interlocked.Exchange(ref _nextOffset, offset);
                _rate.Note(now, offset);
            }
            ShardStreamMetrics.Received.Add(n, ShardStreamMetrics.Shard(chunk.Shard));
            chunk.Release();
        }
        await stopSigning.CancelAsync().ConfigureAwait(false);
        await signingTimer.ConfigureAwait(false);
        byte[] endSignature = _signer.SignEnd((ulong)seq, (ulong)offset);
        lock (_gate)
        {
            _signing.SignAll();
            Volatile.Write(ref _ended, true);
            atEnd?.Invoke();
            for (int s = 0; s < k; s++) _relay.PublishEnd(new End((byte)s, (ulong)seq, (ulong)offset, endSignature));
        }
        return (seq, offset);
    }

    /// <summary>
    /// A source that can be read faster than the tree drains (a file, a pipe from a fast producer)
    /// is paced by the direct children that keep up: reading waits while one of them has more
    /// than <c>highWater</c> bytes queued. A child keeps up while the oldest chunk queued for it
    /// is younger than 1 s (or <see cref="NodeOptions.SlowChildAge"/> if shorter); a child behind that (a
    /// viewer whose download is below the stream rate) never holds the source back, and the
    /// slow-child policy demotes it. A live source produces at most its rate: to hold more than
    /// <c>highWater</c> (4 MiB) a child's queue must then be older than 4 MiB / rate, which is
    /// over that bound for any rate up to 4 MiB/s (32 Mbit/s), so a live source of up to that rate
    /// never waits (docs/resilience.md#slow-viewers). The wait is capped per chunk.
    /// </summary>
    private async ValueTask PaceAsync(CancellationToken cancellationToken)
    {
        // Well under the cut-off limit, so that pacing, not the limit, keeps healthy children's queues short.
        long highWater = Math.Min(4L * 1024 * 1024, _options.MaxQueuedBytesPerChild / 4);
        var keepsUp = _options.SlowChildAge < TimeSpan.FromSeconds(1) ? _options.SlowChildAge : TimeSpan.FromSeconds(1);
        var deadline = _time.GetTimestamp() + (long)(0.2 * _time.TimestampFrequency);
        while (_time.GetTimestamp() < deadline)
        {
            if (_relay.MostQueuedKeepingUp(keepsUp) <= highWater) return;
            lock (_gate) WakeSigningTimer();
            await Task.Delay(1, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Wakes the signing timer when chunks are held for their signature while the source's loop
    /// is about to wait (for the source, or for pacing). Called under the gate. While the loop
    /// runs, it signs what is overdue itself (<see cref="SigningQueue.SignOverdue"/>), and a live
    /// source whose every read waits has its chunks signed at that wait
    /// (<see cref="SigningQueue.SourceWaiting"/>): then the timer never wakes, where waking it at
    /// each first held chunk cost two thread-pool hops and a 1 ms timer per chunk (an RTMP
    /// publish's every tag; docs/performance.md#rtmp-ingest-issue-11).
    /// </summary>
    private void WakeSigningTimer()
    {
        if (_signing.HasPending && _signingWake.CurrentCount == 0) _signingWake.Release();
    }

    /// <summary>Released (under the gate, so never twice) to start the signing timer; see <see cref="WakeSigningTimer"/>.</summary>
    private readonly SemaphoreSlim _signingWake = new(0, 1);

    /// <summary>
    /// Signs the chunks that have waited <see cref="CoordinatorOptions.MaxSigningDelay"/>, and those
    /// of a source that has caught up once <see cref="CoordinatorOptions.MinSigningInterval"/> has
    /// passed since the last signature, while the source's loop waits.
    /// </summary>
    private async Task SignLateListsAsync(CancellationToken cancellationToken)
    {
        var period = TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerMillisecond, Math.Min(_options.MaxSigningDelay.Ticks, _options.MinSigningInterval.Ticks) / 2));
        // The timer ticks only while chunks wait for their signature: an idle source (a live
        // stream between records, a publisher not yet connected) costs no wake-ups.
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                bool pending;
                lock (_gate) pending = _signing.HasPending;
                if (!pending)
                {
                    await _signingWake.WaitAsync(cancellationToken).ConfigureAwait(false);
                    continue;
                }
                await Task.Delay(period, _time, cancellationToken).ConfigureAwait(false);
                lock (_gate) _signing.SignIfDue(_options.MaxSigningDelay, _options.MinSigningInterval);
            }
        }
        catch (OperationCanceledException)
        {
            // The source ended.
        }
    }

    /// <summary>
    /// Appends a raw source's short read to chunk <paramref name="lastSeq"/> while that chunk waits
    /// for its signature (<see cref="CoordinatorOptions.MergeShortReads"/>); false when it cannot
    /// (signed already, or no room): the read becomes a chunk of its own.
    /// </summary>
    private bool TryMergeRead(long lastSeq, ReadOnlySpan<byte> bytes, ref long offset)
    {
        lock (_gate)
        {
            // A peer was welcomed at the head (the next chunk's seq and offset): the chunk before
            // it may not grow, or the next chunk would start later than that peer was told.
            if (lastSeq < _mergeFloor || !_signing.TryAppend(lastSeq, bytes, Protocol.MaxChunkLength, sourceCaughtUp: true)) return false;
            offset += bytes.Length;
            Interlocked.Exchange(ref _nextOffset, offset);
        }
        ShardStreamMetrics.Received.Add(bytes.Length, ShardStreamMetrics.Shard((int)(lastSeq % _options.ShardCount)));
        return true;
    }

    /// <summary>
    /// A welcome names the head (the next chunk's seq and offset): the chunk before it may grow no
    /// more (see <see cref="TryMergeRead"/>). Called under the gate.
    /// </summary>
    public void WelcomedAtHead() => _mergeFloor = _nextSeq;

    /// <summary>
    /// Where a new joiner starts: a little in the past (see <see cref="CoordinatorOptions.JoinBacklog"/>),
    /// always at a chunk boundary. Called under the gate.
    /// </summary>
    public (long Seq, long Offset) JoinPoint() =>
        _options.JoinBacklog > TimeSpan.Zero && _recent.TryPeek(out var oldest) ? (oldest.Seq, oldest.Offset) : (_nextSeq, _nextOffset);

    /// <summary>Remembers a random-access chunk. Called under the gate.</summary>
    private void NoteRandomAccess(long seq, long offset, long now, MediaHeader? header)
    {
        _randomAccess.Enqueue(new RandomAccessPoint(seq, offset, now, header));
        // Only points the replay windows of the joiner's parents surely still hold: half their age bound.
        var keep = _options.ReplayWindowAge / 2;
        while (_randomAccess.Count > MaxRandomAccessPoints || (_randomAccess.TryPeek(out var oldest) && _time.GetElapsedTime(oldest.At, now) > keep))
            _randomAccess.Dequeue();
    }

    /// <summary>
    /// Moves a joiner's start back (or forward) to a random-access chunk: the latest one at or
    /// before the usual join point whose header is still the current one, else the first one with
    /// the current header. Returns the header the joiner writes first (null: it needs none, as at
    /// offset 0 or in a raw stream). Called under the gate.
    /// </summary>
    public MediaHeader? MediaJoinPoint(ref long startSeq, ref long startOffset)
    {
        if (_randomAccess.Count == 0) return null;
        uint current = _randomAccess.Last().Header?.Generation ?? 0;
        RandomAccessPoint? best = null;
        foreach (var p in _randomAccess)
        {
            if ((p.Header?.Generation ?? 0) != current) continue;
            if (best is null || p.Seq <= startSeq) best = p;
            if (p.Seq >= startSeq) break;
        }
        if (best is not { } chosen) return null;
        startSeq = chosen.Seq;
        startOffset = chosen.Offset;
        return chosen.Offset == 0 ? null : chosen.Header;
    }

    /// <summary>The signed header frame for a joiner that starts at <paramref name="startSeq"/>.</summary>
    public StreamHeader SignedHeader(long startSeq, MediaHeader? header)
    {
        byte[] bytes = header?.Bytes ?? [];
        if (bytes.Length > StreamHeader.MaxBytes)
        {
            MediaLog.HeaderTooLong(_log, bytes.Length, StreamHeader.MaxBytes);
            bytes = [];
        }
        return _signer.SignHeader((byte)(header?.Format ?? MediaFormat.Raw), header?.Generation ?? 0, (ulong)startSeq, bytes);
    }

    /// <summary>The last stream header frame signed for joiners: its start, the media header it carries, the encoded frame.</summary>
    private (long Seq, MediaHeader? Header, byte[] Frame)? _lastHeaderFrame;

    /// <summary>
    /// The signed stream header frame (<see cref="SignedHeader"/>, encoded) for a joiner that starts
    /// at <paramref name="startSeq"/>. The last one is kept and given to every joiner with the same
    /// start and header (the same message, so the same Ed25519 signature): a storm of joins costs a
    /// signature per join point, not per join (docs/performance.md, "Where a join's time goes").
    /// Called under the gate; the frame is shared, and only read.
    /// </summary>
    public byte[] SignedHeaderFrame(long startSeq, MediaHeader? header)
    {
        if (_lastHeaderFrame is { } last && last.Seq == startSeq && ReferenceEquals(last.Header, header)) return last.Frame;
        var frame = FrameWriting.ToArray(SignedHeader(startSeq, header).Write);
        _lastHeaderFrame = (startSeq, header, frame);
        return frame;
    }

    /// <summary>Lets go of the chunks still waiting for their signature.</summary>
    public void Clear()
    {
        lock (_gate) _signing.Clear();
    }
}

/// <summary>Log lines of the media-aware source and egress (event ids 1200..1299).</summary>
internal static partial class MediaLog
{
    [LoggerMessage(1200, LogLevel.Information, "source format: {Format}{How}", EventName = "SourceFormat")]
    public static partial void SourceFormat(ILogger logger, string format, string how);

    [LoggerMessage(1201, LogLevel.Warning, "{Reason}", EventName = "LostSync")]
    public static partial void LostSync(ILogger logger, string reason);

    [LoggerMessage(1202, LogLevel.Warning, "the stream header is {Length} bytes, over the {Max} one frame carries: joiners get none and start at a keyframe without it", EventName = "HeaderTooLong")]
    public static partial void HeaderTooLong(ILogger logger, int length, int max);

    [LoggerMessage(1203, LogLevel.Information, "writing the {Format} stream header ({Length} bytes) before the first chunk, at offset {Offset}", EventName = "WritingHeader")]
    public static partial void WritingHeader(ILogger logger, string format, int length, long offset);
}

using System.Buffers;
using System.Buffers.Binary;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Round-trip times on a link that speaks version 6 (docs/protocol.md, Ping and Pong): a ping at
/// most every <see cref="PingInterval"/>, one at a time; its send time is taken when the writer
/// hands it to the transport, and the answer says how long it waited at the other side before it
/// went out, so neither side's send queue counts as network delay. Samples feed an RFC 6298
/// estimator, and the least of the last few (<see cref="RttEstimator.RecentMin"/>) the node's
/// network coordinate.
/// </summary>
internal sealed partial class Link
{
    /// <summary>Pings at the heartbeat interval until this many samples, then every <see cref="SteadyPingFactor"/> intervals.</summary>
    private const int EarlySamples = 4;

    private const int SteadyPingFactor = 5;

    private readonly RttEstimator _rtt = new();
    private readonly Lock _rttGate = new();
    private Func<WireCoordinate>? _localCoordinate;
    private Action<Link, TimeSpan, WireCoordinate>? _onRttSample;
    private ulong _pingToken;
    private ulong _outstandingPing;
    private long _pingQueuedAt;
    private long _pingSentAt;
    private WireCoordinate? _remoteCoordinate;

    /// <summary>
    /// The link speaks version 6: ping the other side, answer its pings with <paramref name="local"/>'s
    /// coordinate, and put that coordinate in heartbeats. <paramref name="onSample"/> gets, at every
    /// RTT sample, the least of the link's last few (<see cref="RttEstimator.RecentMin"/>) with the
    /// coordinate the other side answered with.
    /// </summary>
    public void EnablePings(Func<WireCoordinate> local, Action<Link, TimeSpan, WireCoordinate>? onSample)
    {
        _localCoordinate = local;
        _onRttSample = onSample;
    }

    /// <summary>True when this link measures round-trip times (it speaks version 6).</summary>
    public bool MeasuresRtt => _localCoordinate is not null;

    /// <summary>Called with the coordinate a heartbeat of the other side carried.</summary>
    public Action<Link, WireCoordinate>? CoordinateHeard { get; set; }

    /// <summary>
    /// Version 11, a peer's control link: the RTTs to its parents that its heartbeats carry (after
    /// the coordinate); null sends none.
    /// </summary>
    public Func<ParentRtt[]>? ParentRttReport { get; set; }

    /// <summary>Called with the parent RTTs a heartbeat of the other side carried (version 11).</summary>
    public Action<Link, ParentRtt[]>? ParentRttsHeard { get; set; }

    /// <summary>
    /// Version 14, the coordinator's end of a control link: the stream's head (the next chunk
    /// sequence number at the source) that its heartbeats carry; null sends none.
    /// </summary>
    public Func<long>? StreamHead { get; set; }

    /// <summary>Called with the stream's head a heartbeat of the other side carried (version 14).</summary>
    public Action<Link, long>? StreamHeadHeard { get; set; }

    /// <summary>SRTT, RTTVAR, the least sample and the count, read together; null before the first sample.</summary>
    public (TimeSpan Smoothed, TimeSpan Variation, TimeSpan Min, int Samples)? RttSnapshot()
    {
        lock (_rttGate) return _rtt.Samples == 0 ? null : (_rtt.Smoothed, _rtt.Variation, _rtt.Min, _rtt.Samples);
    }

    /// <summary>The smoothed RTT (RFC 6298), null before the first sample.</summary>
    public TimeSpan? SmoothedRtt
    {
        get
        {
            lock (_rttGate) return _rtt.Samples == 0 ? null : _rtt.Smoothed;
        }
    }

    /// <summary>The RTT variation (RFC 6298), null before the first sample.</summary>
    public TimeSpan? RttVariation
    {
        get
        {
            lock (_rttGate) return _rtt.Samples == 0 ? null : _rtt.Variation;
        }
    }

    /// <summary>RTT samples taken on this link.</summary>
    public int RttSamples
    {
        get
        {
            lock (_rttGate) return _rtt.Samples;
        }
    }

    /// <summary>The last coordinate the other side sent (in a pong or a heartbeat), if any.</summary>
    public WireCoordinate? RemoteCoordinate
    {
        get
        {
            lock (_rttGate) return _remoteCoordinate;
        }
    }

    private TimeSpan PingInterval => RttSamples < EarlySamples ? _heartbeatInterval : _heartbeatInterval * SteadyPingFactor;

    /// <summary>
    /// From <see cref="Tick"/>: a ping when one is due (an unanswered one is given up after 4
    /// intervals). Returns the earliest time the next one can be due (a pong may come before the
    /// four intervals are over: then one interval after the last ping), or never without pings.
    /// </summary>
    private long TickPing(long now)
    {
        if (_localCoordinate is null) return long.MaxValue;
        long queued = Interlocked.Read(ref _pingQueuedAt);
        var interval = PingInterval;
        if (queued != 0 && _time.GetElapsedTime(queued, now) < (Interlocked.Read(ref _outstandingPing) == 0 ? interval : interval * 4))
            return queued + _time.TimestampTicks(interval);
        ulong token = ++_pingToken;
        Interlocked.Exchange(ref _outstandingPing, token);
        Interlocked.Exchange(ref _pingSentAt, 0);
        Interlocked.Exchange(ref _pingQueuedAt, now);
        _connection.Send(FrameWriting.ToArray(new Ping(token).Write), (_, _, sentAt) => Interlocked.Exchange(ref _pingSentAt, sentAt));
        return now + _time.TimestampTicks(interval);
    }

    /// <summary>The heartbeat to send now: with this node's coordinate on a version-6 link, and the stream's head from the coordinator (version 14).</summary>
    private byte[] HeartbeatToSend()
    {
        var head = StreamHead;
        if (_localCoordinate is null && head is null) return _heartbeatFrame;
        ulong value = BinaryPrimitives.ReadUInt64BigEndian(_heartbeatFrame.AsSpan(Protocol.FrameHeaderLength));
        // A control link taken over by a rejoin in place measures no RTT: its head goes with the "unknown" coordinate.
        var coordinate = _localCoordinate?.Invoke() ?? WireCoordinate.Unknown;
        return FrameWriting.ToArray(new Heartbeat(value, coordinate, ParentRttReport?.Invoke(), head is null ? null : (ulong)head()).Write);
    }

    /// <summary>The writer is about to send a pong: how long it waited at this side since its ping arrived goes into it.</summary>
    private void StampPong(byte[] frame, long queuedAt, long now)
    {
        long micros = (long)_time.GetElapsedTime(queuedAt, now).TotalMicroseconds;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(Pong.HoldOffsetInFrame), (uint)Math.Clamp(micros, 0, uint.MaxValue));
    }

    /// <summary>A frame of the RTT machinery arrived (ping or pong); false for any other frame.</summary>
    private bool OnRttFrame(FrameType type, ReadOnlySequence<byte> body)
    {
        var reader = new SequenceReader<byte>(body);
        switch (type)
        {
            case FrameType.Ping:
                if (!Ping.TryRead(ref reader, out var ping)) throw new ProtocolException("malformed ping frame");
                // Answered even before this side measures (a ping can only come on a version-6 link).
                var coordinate = _localCoordinate?.Invoke() ?? WireCoordinate.Unknown;
                var answer = FrameWriting.ToArray(new Pong(ping.Token, 0, coordinate).Write);
                // Ahead of the chunks queued on this link, if any: behind them an honest pong
                // waited up to 1.08 s (the coordinator's to a peer it fed, 16 viewers on 2
                // busy cores), past what the pinger takes out (Protocol.MaxPongHold). Only then:
                // the queue for frames sent ahead costs memory on every link that has one.
                if (_connection.QueuedBytes > 0) _connection.SendAhead(answer, StampPong);
                else _connection.Send(answer, StampPong);
                return true;
            case FrameType.Pong:
                if (!Pong.TryRead(ref reader, out var pong)) throw new ProtocolException("malformed pong frame");
                OnPong(pong);
                return true;
            default:
                return false;
        }
    }

    /// <summary>A heartbeat arrived: the coordinate it may carry (version 6), a peer's parent RTTs (version 11), the coordinator's stream head (version 14).</summary>
    private void OnHeartbeatCoordinate(ReadOnlySequence<byte> body)
    {
        var reader = new SequenceReader<byte>(body);
        if (!Heartbeat.TryRead(ref reader, out var heartbeat)) return;
        if (heartbeat.Coordinate is { IsUnknown: false } remote)
        {
            lock (_rttGate) _remoteCoordinate = remote;
            CoordinateHeard?.Invoke(this, remote);
        }
        if (heartbeat.ParentRtts is { } parents) ParentRttsHeard?.Invoke(this, parents);
        if (heartbeat.Head is { } streamHead && streamHead <= long.MaxValue) StreamHeadHeard?.Invoke(this, (long)streamHead);
    }

    /// <summary>
    /// The least round trip measured on this link as it came, the other side's claimed hold not
    /// taken out (zero before the first pong); under <c>_rttGate</c>.
    /// </summary>
    private TimeSpan _minMeasured;

    /// <summary>
    /// The RTT sample of a pong that came <paramref name="measured"/> after its ping went out and
    /// says it was held <paramref name="holdMicros"/> at the other side. The hold is the other
    /// side's word: taken out whole, a peer that claims a hold just under the round trip is
    /// measured next to this node. So it is bounded as QUIC bounds the ack delay (RFC 9002,
    /// section 5.3): it counts up to <see cref="Protocol.MaxPongHold"/> (QUIC's max_ack_delay),
    /// and never takes the sample below the least round trip measured on this link as it came
    /// (claims aside; QUIC's min_rtt). Where QUIC then keeps the whole measurement, this keeps
    /// that least round trip: an honest hold it was not allowed to take out would otherwise count
    /// as delay. No sample is below a round trip this link really took. The first pong's hold is
    /// never taken out: nothing measured yet bounds it. Under <c>_rttGate</c>.
    /// </summary>
    private TimeSpan TakeHold(TimeSpan measured, uint holdMicros)
    {
        if (_minMeasured == TimeSpan.Zero || measured < _minMeasured) _minMeasured = measured;
        var hold = TimeSpan.FromMicroseconds(Math.Min(holdMicros, (long)Protocol.MaxPongHold.TotalMicroseconds));
        return measured - hold > _minMeasured ? measured - hold : _minMeasured;
    }

    private void OnPong(Pong pong)
    {
        long now = _time.GetTimestamp();
        long sentAt = Interlocked.Read(ref _pingSentAt);
        // A pong for no ping of ours (or an old one) says nothing.
        if (pong.Token == 0 || Interlocked.CompareExchange(ref _outstandingPing, 0, pong.Token) != pong.Token || sentAt == 0) return;
        var measured = _time.GetElapsedTime(sentAt, now);
        TimeSpan sample, recent;
        lock (_rttGate)
        {
            sample = TakeHold(measured, pong.HoldMicros);
            _rtt.Add(sample);
            recent = _rtt.RecentMin;
            if (!pong.Coordinate.IsUnknown) _remoteCoordinate = pong.Coordinate;
        }
        ShardStreamMetrics.LinkRtt.Record(sample.TotalSeconds);
        _onRttSample?.Invoke(this, recent, pong.Coordinate);
    }
}

using Microsoft.Extensions.Logging;

namespace ShardStream.Nodes;

/// <summary>When a link's silence means the other side is gone (see <see cref="FailureDetector"/>).</summary>
internal sealed record FailureDetectorOptions
{
    /// <summary>
    /// φ at or above which the other side is taken for dead: 8 (as Akka's default and Cassandra's
    /// phi_convict_threshold) means a silence that long had a chance of about 1 in 10^8 to happen
    /// while the other side lived, judging by the gaps this link has seen.
    /// </summary>
    public double Threshold { get; init; } = 8;

    /// <summary>No link is taken for dead before this much silence, whatever φ says (the heartbeat timeout).</summary>
    public TimeSpan MinSilence { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>A link silent this long is taken for dead, whatever φ says.</summary>
    public TimeSpan MaxSilence { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Arrivals closer together than this make one sample: a link carrying data hears something
    /// every millisecond, and gaps that short say nothing about how long a living peer can be silent.
    /// </summary>
    public TimeSpan SampleInterval { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>The expected gap before anything was sampled (the heartbeat interval).</summary>
    public TimeSpan ExpectedInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The standard deviation of the gaps is taken as at least this (regular heartbeats would otherwise make φ jump).</summary>
    public TimeSpan MinStandardDeviation { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>How many recent gaps the estimate uses.</summary>
    public int MaxSamples { get; init; } = 100;
}

/// <summary>
/// The φ accrual failure detector of Hayashibara, Défago, Yared and Katayama ("The φ Accrual
/// Failure Detector", SRDS 2004), as Akka and Cassandra use it, for one link. Every arrival (any
/// frame: data counts as much as a heartbeat) ends a silence; the gaps between arrivals, sampled
/// no finer than <see cref="FailureDetectorOptions.SampleInterval"/>, give a normal distribution,
/// and φ = -log10(P(a gap at least as long as the current silence)). So a link whose other side
/// has been answering late (a loaded machine) is given longer before it is taken for dead than one
/// that was punctual, between <see cref="FailureDetectorOptions.MinSilence"/> and
/// <see cref="FailureDetectorOptions.MaxSilence"/>.
/// </summary>
/// <remarks>
/// Time in which this node itself did not run (its timer fired late: a stalled process, a starved
/// thread pool, a suspended machine) is <see cref="Excuse"/>d: what arrived meanwhile is waiting
/// unread in the socket, so it is no sign against the other side. Thread-safe: <see cref="Heard"/>
/// runs on the link's read loop, the rest on the node's timer.
/// </remarks>
internal sealed class FailureDetector
{
    private FailureDetectorOptions _options;
    private readonly FailureDetectorOptions _base;
    private readonly TimeProvider _time;
    // Seconds, as floats: half the memory of doubles for a link's 100 gaps (a coordinator holds
    // one detector per connected peer), and far finer than the gaps' own jitter.
    private readonly float[] _samples;
    private readonly Lock _lock = new();
    private int _count;
    private int _next;
    private double _sum;
    private double _sumOfSquares;
    private long _lastHeard;
    private long _lastSampled;

    public FailureDetector(FailureDetectorOptions options, TimeProvider time)
    {
        _options = _base = options;
        _time = time;
        _samples = new float[Math.Max(2, options.MaxSamples)];
        _lastHeard = _lastSampled = time.GetTimestamp();
        // Start from the expected heartbeat gap, give or take a deviation (as Akka does), so that
        // the first silences are judged against the heartbeat interval.
        var expected = options.ExpectedInterval.TotalSeconds;
        var deviation = options.MinStandardDeviation.TotalSeconds;
        Add(expected - deviation);
        Add(expected + deviation);
    }

    /// <summary>
    /// The other side said that it now sends a heartbeat only every <paramref name="interval"/>
    /// (a control link whose heartbeats were lengthened, docs/protocol.md section 10): judge its
    /// silences against that from now on. The gaps seen so far (at the old interval) are forgotten;
    /// the floor becomes the larger of the options' floor and two such intervals, the ceiling the
    /// larger of the options' ceiling and eight. The interval may be shorter than the one before (a
    /// coordinator that holds fewer peers than it did); the options' own interval or less restores
    /// the options as they were given.
    /// </summary>
    public void Rescale(TimeSpan interval)
    {
        lock (_lock)
        {
            var o = _base;
            _options = interval <= o.ExpectedInterval ? o : o with
            {
                ExpectedInterval = interval,
                SampleInterval = interval / 2,
                MinStandardDeviation = interval / 4,
                MinSilence = o.MinSilence > 2 * interval ? o.MinSilence : 2 * interval,
                MaxSilence = o.MaxSilence > 8 * interval ? o.MaxSilence : 8 * interval,
            };
            var expected = _options.ExpectedInterval;
            _count = 0;
            _next = 0;
            _sum = 0;
            _sumOfSquares = 0;
            Add((expected - (expected / 4)).TotalSeconds);
            Add((expected + (expected / 4)).TotalSeconds);
            Interlocked.Exchange(ref _lastSampled, _time.GetTimestamp());
        }
    }

    /// <summary>How long since anything arrived, less the time this node was excused for.</summary>
    public TimeSpan Silence => Since(Interlocked.Read(ref _lastHeard), _time.GetTimestamp());

    /// <summary>Something arrived on the link.</summary>
    public void Heard()
    {
        var now = _time.GetTimestamp();
        Interlocked.Exchange(ref _lastHeard, now);
        if (_time.GetElapsedTime(Interlocked.Read(ref _lastSampled), now) < _options.SampleInterval)
        {
            return;
        }

        lock (_lock)
        {
            var gap = _time.GetElapsedTime(_lastSampled, now);
            if (gap < _options.SampleInterval)
            {
                return;
            }

            Add(gap.TotalSeconds);
            Interlocked.Exchange(ref _lastSampled, now);
        }
    }

    /// <summary>
    /// The link starts (its hello/welcome exchange is over): its silence counts from now. Until
    /// then the other side was waiting for this node (a joiner for its welcome while the
    /// coordinator placed it), which is no silence of its own; nor is that wait sampled as a gap.
    /// </summary>
    public void Restart()
    {
        lock (_lock)
        {
            var now = _time.GetTimestamp();
            Interlocked.Exchange(ref _lastHeard, now);
            Interlocked.Exchange(ref _lastSampled, now);
        }
    }

    /// <summary>This node did not run for <paramref name="pause"/>: that time does not count as silence.</summary>
    public void Excuse(TimeSpan pause)
    {
        if (pause <= TimeSpan.Zero)
        {
            return;
        }

        var ticks = _time.TimestampTicks(pause);
        var now = _time.GetTimestamp();
        long seen, moved;
        do
        {
            seen = Interlocked.Read(ref _lastHeard);
            moved = Math.Min(now, seen + ticks);
        }
        while (Interlocked.CompareExchange(ref _lastHeard, moved, seen) != seen);
    }

    /// <summary>
    /// The earliest time (a timestamp of the node's clock) at which <see cref="IsDead(bool, out string)"/>
    /// could say dead, judging by what was heard so far: the last arrival plus the shorter of the
    /// floor and the ceiling. It only moves later (an arrival, an excuse, a <see cref="Rescale"/> to
    /// a longer interval), so a check first made then misses no death (the node's timer asks only
    /// links this near); after a rescale to a shorter interval the link's owner must ask again.
    /// </summary>
    public long EarliestDeath
    {
        get
        {
            var o = _options;
            var least = o.MinSilence < o.MaxSilence ? o.MinSilence : o.MaxSilence;
            return Interlocked.Read(ref _lastHeard) + _time.TimestampTicks(least);
        }
    }

    /// <summary>The least silence at which the other side may be taken for dead (<see cref="FailureDetectorOptions.MinSilence"/>, as rescaled).</summary>
    public TimeSpan Floor => _options.MinSilence;

    /// <summary>φ of the current silence: -log10 of the chance that a living other side is silent that long.</summary>
    public double Phi() => Phi(Silence);

    /// <summary>
    /// True when the other side is taken for dead: silent at least
    /// <see cref="FailureDetectorOptions.MinSilence"/>, and φ at or above the threshold or the
    /// silence at least <see cref="FailureDetectorOptions.MaxSilence"/>. <paramref name="reason"/>
    /// then says why, for logs and the goodbye.
    /// </summary>
    public bool IsDead(out string reason) => IsDead(atCeilingOnly: false, out reason);

    /// <summary>
    /// As <see cref="IsDead(out string)"/>; with <paramref name="atCeilingOnly"/> only a silence of
    /// <see cref="FailureDetectorOptions.MaxSilence"/> counts (while this node itself seems stalled).
    /// </summary>
    public bool IsDead(bool atCeilingOnly, out string reason)
    {
        var silence = Silence;
        reason = "";
        if (silence < (atCeilingOnly ? _options.MaxSilence : _options.MinSilence))
        {
            return false;
        }

        var phi = Phi(silence);
        if (silence >= _options.MaxSilence)
        {
            reason = $"nothing heard for {silence.TotalSeconds:0.#} s (the most any link may be silent)";
            return true;
        }

        if (phi < _options.Threshold)
        {
            return false;
        }

        var (mean, deviation) = Estimate();
        reason = $"nothing heard for {silence.TotalSeconds:0.#} s (phi {Math.Min(phi, 99):0.#}: gaps on this link were {mean:0.0#} s +- {deviation:0.0#} s)";
        return true;
    }

    /// <summary>φ of a silence of <paramref name="silence"/> against the gaps seen so far.</summary>
    public double Phi(TimeSpan silence)
    {
        var (mean, deviation) = Estimate();
        // The logistic approximation of the normal distribution's tail that Akka uses (error
        // below 0.0002), and the same two branches so that neither side loses precision.
        var y = (silence.TotalSeconds - mean) / deviation;
        var e = Math.Exp(-y * (1.5976 + (0.070566 * y * y)));
        return silence.TotalSeconds > mean
            ? -Math.Log10(e / (1.0 + e))
            : -Math.Log10(1.0 - (1.0 / (1.0 + e)));
    }

    /// <summary>Mean and standard deviation (at least the minimum) of the sampled gaps, in seconds.</summary>
    private (double Mean, double Deviation) Estimate()
    {
        lock (_lock)
        {
            var mean = _sum / _count;
            var variance = Math.Max(0, (_sumOfSquares / _count) - (mean * mean));
            return (mean, Math.Max(Math.Sqrt(variance), _options.MinStandardDeviation.TotalSeconds));
        }
    }

    private void Add(double seconds)
    {
        // The sums add and take away exactly what the ring holds.
        double gap = (float)seconds;
        if (_count == _samples.Length)
        {
            double old = _samples[_next];
            _sum -= old;
            _sumOfSquares -= old * old;
        }
        else
        {
            _count++;
        }

        _samples[_next] = (float)gap;
        _sum += gap;
        _sumOfSquares += gap * gap;
        _next = (_next + 1) % _samples.Length;
    }

    private TimeSpan Since(long timestamp, long now) => now > timestamp ? _time.GetElapsedTime(timestamp, now) : TimeSpan.Zero;
}

/// <summary>Log lines of failure detection.</summary>
internal static partial class FailureDetectorLog
{
    [LoggerMessage(EventId = 8001, EventName = "NodePaused", Level = LogLevel.Debug,
        Message = "this node did not run for {Seconds:0.0} s: not counted as silence of its links")]
    public static partial void NodePaused(ILogger log, double seconds);

    [LoggerMessage(EventId = 8003, EventName = "UnreadInput", Level = LogLevel.Debug,
        Message = "{Link}: silent for {Seconds:0.0} s but bytes wait unread: alive, this side is slow to read")]
    public static partial void UnreadInput(ILogger log, string link, double seconds);

    [LoggerMessage(EventId = 8004, EventName = "TickFailed", Level = LogLevel.Error,
        Message = "{Link}: its heartbeat tick failed ({Reason}); closing that link, the others go on")]
    public static partial void TickFailed(ILogger log, string link, string reason);

    [LoggerMessage(EventId = 8005, EventName = "SlowChildCheckFailed", Level = LogLevel.Error,
        Message = "the slow-child check failed ({Reason}); heartbeats and failure detection go on, the check runs again at the next tick")]
    public static partial void SlowChildCheckFailed(ILogger log, string reason);

    [LoggerMessage(EventId = 8002, EventName = "MostLinksSilent", Level = LogLevel.Warning,
        Message = "{Silent} of {Links} links silent at once: more likely this node is stalled than they all failed; closing them only after {Ceiling:0.#} s of silence")]
    public static partial void MostLinksSilent(ILogger log, int silent, int links, double ceiling);
}

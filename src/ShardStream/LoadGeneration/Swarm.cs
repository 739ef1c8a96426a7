using System.Diagnostics;
using System.Net;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.LoadGeneration;

/// <summary>
/// A load generator for the coordinator's control plane: thousands of <see cref="SwarmPeer"/>s in
/// one process, over real TCP, spread over many local addresses so that ports do not run out.
/// They join at a chosen rate (each answering the reachability probe), heartbeat, report
/// (Attached), leave and rejoin at a chosen churn rate, and leave at the end. Timing is measured
/// from the connect to the Welcome.
/// </summary>
public sealed class Swarm
{
    private readonly SwarmOptions _options;
    private readonly IPAddress[] _addresses;
    private readonly Lock _gate = new();
    private readonly List<SwarmPeer> _connected = [];
    private readonly Dictionary<string, int> _failures = [];
    private readonly Dictionary<string, int> _dropped = [];
    private List<double> _secondLatencies = [];
    private List<double> _phaseLatencies = [];
    private List<double> _phaseTotals = [];
    private long _busy;
    private long _interrupted;
    private long _keptClosed;
    private int _joinsStarted;
    private int _joined;
    private int _inFlight;
    private int _connectedCount;
    private int _peak;
    private int _left;
    private long _moves;
    private int _secondJoins;
    private int _secondLeaves;
    private int _secondFailures;
    private bool _throttled;

    /// <summary>Checks the options; <see cref="RunAsync"/> runs the swarm.</summary>
    public Swarm(SwarmOptions options)
    {
        options.Validate();
        _options = options;
        _addresses = options.LocalAddresses();
    }

    /// <summary>Peers whose control link is open now.</summary>
    public int Connected => Volatile.Read(ref _connectedCount);

    /// <summary>The peers connected now (a copy), for a test that looks at them or freezes one.</summary>
    internal List<SwarmPeer> ConnectedPeers()
    {
        lock (_gate) return [.. _connected.Where(p => !p.Gone && !p.Ended.IsCompleted)];
    }

    /// <summary>
    /// Runs the ramp (<see cref="SwarmOptions.Peers"/> joins at <see cref="SwarmOptions.JoinRate"/>),
    /// the hold (with churn), then leaves every peer at the join rate. <paramref name="progress"/>
    /// gets a line a second. <paramref name="afterHold"/>, when given, runs at the end of the hold
    /// while every peer is still connected (a test checks the coordinator then).
    /// </summary>
    public async Task<SwarmReport> RunAsync(IProgress<SwarmSecond>? progress, Func<Task>? afterHold, CancellationToken cancellationToken)
    {
        var coordinator = await Endpoint.ResolveAsync(_options.CoordinatorAddress, cancellationToken).ConfigureAwait(false);
        long started = Stopwatch.GetTimestamp();
        string phase = "ramp";
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var heartbeats = HeartbeatLoopAsync(stop.Token);
        var reporting = ReportLoopAsync(() => phase, started, progress, stop.Token);
        LatencySummary? rampLatency, holdLatency, rampTotal, holdTotal;
        TimeSpan rampTime;
        int atHoldEnd;
        var joins = new List<Task>();
        try
        {
            // The ramp: joins started at the offered rate, as long as the in-flight limit allows.
            await PacedAsync(_options.Peers, _options.JoinRate, () => joins.Add(JoinOneAsync(coordinator, stop.Token)), limited: true, stop.Token).ConfigureAwait(false);
            await Task.WhenAll(joins).ConfigureAwait(false);
            rampTime = Stopwatch.GetElapsedTime(started);
            (rampLatency, rampTotal) = (TakePhaseLatencies(), TakePhaseTotals());
            phase = "hold";
            joins.Clear();
            long holdStarted = Stopwatch.GetTimestamp();
            if (_options.ChurnRate > 0)
            {
                int churns = (int)(_options.ChurnRate * _options.Hold.TotalSeconds);
                await PacedAsync(churns, _options.ChurnRate, () =>
                {
                    if (TakeRandomPeer() is { } leaver) Leave(leaver);
                    joins.Add(JoinOneAsync(coordinator, stop.Token));
                }, limited: false, stop.Token).ConfigureAwait(false);
                await Task.WhenAll(joins).ConfigureAwait(false);
            }
            var rest = _options.Hold - Stopwatch.GetElapsedTime(holdStarted);
            if (rest > TimeSpan.Zero) await Task.Delay(rest, stop.Token).ConfigureAwait(false);
            (holdLatency, holdTotal) = (TakePhaseLatencies(), TakePhaseTotals());
            atHoldEnd = Connected;
            if (afterHold is not null) await afterHold().ConfigureAwait(false);
            phase = "leave";
            // Peers stay in the heartbeat list until they have left (the heartbeat loop drops those that are gone).
            List<SwarmPeer> all;
            lock (_gate) all = [.. _connected];
            int next = 0;
            await PacedAsync(all.Count, _options.JoinRate, () => Leave(all[next++]), limited: false, stop.Token).ConfigureAwait(false);
            // The coordinator closes each control link once it has taken the leave.
            await Task.WhenAny(Task.WhenAll(all.Select(p => p.Ended)), Task.Delay(_options.JoinTimeout, stop.Token)).ConfigureAwait(false);
            foreach (var peer in all) peer.Abort();
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(heartbeats, reporting).ConfigureAwait(false);
        }
        lock (_gate)
        {
            return new SwarmReport
            {
                JoinsStarted = _joinsStarted,
                Joined = _joined,
                Failures = [.. _failures.OrderByDescending(f => f.Value).Select(f => (f.Key, f.Value))],
                Dropped = [.. _dropped.OrderByDescending(f => f.Value).Select(f => (f.Key, f.Value))],
                Left = _left,
                Moves = Interlocked.Read(ref _moves),
                PeakConnected = _peak,
                ConnectedAtHoldEnd = atHoldEnd,
                RampLatency = rampLatency,
                HoldLatency = holdLatency,
                RampLatencyWithRetries = rampTotal,
                HoldLatencyWithRetries = holdTotal,
                BusyAnswers = Interlocked.Read(ref _busy),
                InterruptedJoins = Interlocked.Read(ref _interrupted),
                KeptConnectionsClosed = Interlocked.Read(ref _keptClosed),
                RampTime = rampTime,
                RampThrottled = _throttled,
            };
        }
    }

    /// <summary>Calls <paramref name="act"/> <paramref name="count"/> times at <paramref name="rate"/> per second, in 5 ms steps.</summary>
    private async Task PacedAsync(int count, double rate, Action act, bool limited, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        int done = 0;
        while (done < count)
        {
            int due = Math.Min(count, (int)(Stopwatch.GetElapsedTime(start).TotalSeconds * rate) + 1);
            while (done < due)
            {
                if (limited && Volatile.Read(ref _inFlight) >= _options.MaxJoinsInFlight)
                {
                    _throttled = true;
                    break;
                }
                act();
                done++;
            }
            if (done < count) await Task.Delay(5, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task JoinOneAsync(IPEndPoint coordinator, CancellationToken cancellationToken)
    {
        int n = Interlocked.Increment(ref _joinsStarted);
        Interlocked.Increment(ref _inFlight);
        var local = _addresses[n % _addresses.Length];
        long first = Stopwatch.GetTimestamp();
        var backoff = TimeSpan.FromMilliseconds(250);
        try
        {
            while (true)
            {
                try
                {
                    var (peer, took) = await SwarmPeer.JoinAsync(local, coordinator, _options.UploadPercent, _options.HeartbeatInterval, _options.JoinTimeout, OnFrame, () => Interlocked.Increment(ref _keptClosed), cancellationToken).ConfigureAwait(false);
                    double total = Stopwatch.GetElapsedTime(first).TotalMilliseconds;
                    lock (_gate)
                    {
                        _joined++;
                        _secondJoins++;
                        _secondLatencies.Add(took.TotalMilliseconds);
                        _phaseLatencies.Add(took.TotalMilliseconds);
                        _phaseTotals.Add(total);
                        _connected.Add(peer);
                        _connectedCount++;
                        _peak = Math.Max(_peak, _connectedCount);
                    }
                    _ = peer.Ended.ContinueWith(_ => OnEnded(peer), TaskScheduler.Default);
                    return;
                }
                catch (SwarmJoinException e) when ((e.Busy || e.Interrupted) && Stopwatch.GetElapsedTime(first) < _options.JoinTimeout)
                {
                    // As a real peer does: back off with jitter, then join again.
                    if (e.Busy) Interlocked.Increment(ref _busy);
                    else Interlocked.Increment(ref _interrupted);
                    await Task.Delay(backoff * (0.5 + Random.Shared.NextDouble()), cancellationToken).ConfigureAwait(false);
                    backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(4).Ticks));
                }
            }
        }
        catch (SwarmJoinException e)
        {
            lock (_gate)
            {
                _secondFailures++;
                string key = Shorten(e.Message);
                _failures[key] = _failures.GetValueOrDefault(key) + 1;
            }
        }
        catch (OperationCanceledException)
        {
            // The swarm stopped.
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }

    private void OnFrame(SwarmPeer peer, FrameType type)
    {
        if (type == FrameType.Move) Interlocked.Increment(ref _moves);
    }

    private void OnEnded(SwarmPeer peer)
    {
        lock (_gate)
        {
            _connectedCount--;
            if (peer.EndReason is { } reason)
            {
                string key = Shorten(reason);
                _dropped[key] = _dropped.GetValueOrDefault(key) + 1;
            }
        }
    }

    /// <summary>Reasons grouped by their words, not by the numbers in them (peer ids, addresses).</summary>
    private static string Shorten(string reason) => new(reason.Where(c => !char.IsAsciiDigit(c)).Take(120).ToArray());

    private SwarmPeer? TakeRandomPeer()
    {
        lock (_gate)
        {
            while (_connected.Count > 0)
            {
                int i = Random.Shared.Next(_connected.Count);
                var peer = _connected[i];
                _connected[i] = _connected[^1];
                _connected.RemoveAt(_connected.Count - 1);
                if (!peer.Gone) return peer;
            }
            return null;
        }
    }

    private void Leave(SwarmPeer peer)
    {
        peer.Leave();
        lock (_gate)
        {
            _left++;
            _secondLeaves++;
        }
    }

    private LatencySummary? TakePhaseTotals()
    {
        lock (_gate)
        {
            var summary = LatencySummary.Of(_phaseTotals);
            _phaseTotals = [];
            return summary;
        }
    }

    private LatencySummary? TakePhaseLatencies()
    {
        lock (_gate)
        {
            var summary = LatencySummary.Of(_phaseLatencies);
            _phaseLatencies = [];
            return summary;
        }
    }

    /// <summary>Every 100 ms, a heartbeat from each peer that has sent nothing for an interval: the load is spread evenly over the interval.</summary>
    private async Task HeartbeatLoopAsync(CancellationToken cancellationToken)
    {
        var due = new List<SwarmPeer>();
        try
        {
            using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(100));
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                long now = Stopwatch.GetTimestamp();
                due.Clear();
                lock (_gate)
                {
                    _connected.RemoveAll(p => p.Gone);
                    foreach (var peer in _connected)
                        if (now - peer.LastSent >= (long)(peer.HeartbeatInterval.TotalSeconds * Stopwatch.Frequency)) due.Add(peer);
                }
                foreach (var peer in due) peer.SendHeartbeat();
            }
        }
        catch (OperationCanceledException)
        {
            // The run is over.
        }
    }

    private async Task ReportLoopAsync(Func<string> phase, long started, IProgress<SwarmSecond>? progress, CancellationToken cancellationToken)
    {
        try
        {
            using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                SwarmSecond second;
                lock (_gate)
                {
                    // How often the peers heartbeat now (their coordinator may have asked for longer or shorter).
                    TimeSpan least = TimeSpan.MaxValue, most = TimeSpan.Zero;
                    int atMost = 0;
                    foreach (var peer in _connected)
                    {
                        if (peer.Gone) continue;
                        var interval = peer.HeartbeatInterval;
                        if (interval < least) least = interval;
                        if (interval > most) (most, atMost) = (interval, 0);
                        if (interval == most) atMost++;
                    }
                    if (most == TimeSpan.Zero) least = TimeSpan.Zero;
                    second = new SwarmSecond(Stopwatch.GetElapsedTime(started), phase(), _connectedCount, _secondJoins, _secondLeaves, _secondFailures, LatencySummary.Of(_secondLatencies), least, most, atMost);
                    _secondJoins = _secondLeaves = _secondFailures = 0;
                    _secondLatencies = [];
                }
                progress?.Report(second);
            }
        }
        catch (OperationCanceledException)
        {
            // The run is over.
        }
    }
}

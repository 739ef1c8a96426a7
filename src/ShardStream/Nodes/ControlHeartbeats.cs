using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// The coordinator's choice of how often it and its peers heartbeat on quiet control links
/// (docs/protocol.md section 10). Pinned by <see cref="CoordinatorOptions.ControlHeartbeatInterval"/>;
/// by default chosen from the number of peers held, so that the coordinator hears about
/// <see cref="CoordinatorOptions.ControlHeartbeatsPerSecond"/> heartbeats a second in all, however
/// many peers it holds (each heartbeat is a wake-up and a system call on both sides): the interval
/// is peers / that rate, in whole seconds, at least the heartbeat interval and at most
/// <see cref="Peer.MaxControlHeartbeat"/>. So with the defaults (1,000 a second, 1 s heartbeats) a
/// coordinator of up to 1,999 peers keeps 1 s and asks for nothing, exactly as before; 5,000 peers
/// heartbeat every 5 s, 50,000 every 50 s. With hysteresis: the interval grows once the peers
/// stand for a quarter more than it, and shrinks once they stand for a quarter less, so a peer
/// that comes and goes at a boundary does not make it flap. Under the coordinator's gate.
/// </summary>
internal sealed class ControlHeartbeats
{
    /// <summary>How much the peers must stand for beyond (or short of) the interval in force before it changes.</summary>
    public const double Hysteresis = 0.25;

    private readonly TimeSpan _floor;
    private readonly TimeSpan? _pinned;
    private readonly double _perSecond;

    public ControlHeartbeats(CoordinatorOptions options)
    {
        _floor = options.HeartbeatInterval;
        _pinned = options.ControlHeartbeatInterval;
        _perSecond = options.ControlHeartbeatsPerSecond;
        Interval = _pinned ?? _floor;
        Frame = FrameOf(Interval);
    }

    /// <summary>The interval in force: what every control link is asked for (when longer than the heartbeat interval, or once it was).</summary>
    public TimeSpan Interval { get; private set; }

    /// <summary>The heartbeat that asks for <see cref="Interval"/>: one array that every control link sends.</summary>
    public byte[] Frame { get; private set; }

    /// <summary>True when the interval follows the number of peers (no <see cref="CoordinatorOptions.ControlHeartbeatInterval"/>).</summary>
    public bool Automatic => _pinned is null;

    /// <summary>
    /// The coordinator now holds <paramref name="peers"/> peers: true when that changes the
    /// interval (the caller then offers the new one on every control link, <see cref="Offer"/>).
    /// </summary>
    public bool Update(int peers)
    {
        if (!Automatic) return false;
        var next = Choose(peers, Interval, _floor, _perSecond, Peer.MaxControlHeartbeat);
        if (next == Interval) return false;
        Interval = next;
        Frame = FrameOf(next);
        return true;
    }

    /// <summary>
    /// Asks <paramref name="control"/> for the interval in force: a new control link, or every one
    /// when it changed. A link that was never asked for anything is left alone while the interval
    /// is the heartbeat interval (a small overlay's heartbeats are as they always were).
    /// </summary>
    public void Offer(Link control)
    {
        if (Interval > _floor || control.OfferedHeartbeat > TimeSpan.Zero) control.OfferHeartbeats(Interval, Frame);
    }

    /// <summary>
    /// The interval for <paramref name="peers"/> peers when <paramref name="current"/> is in force:
    /// peers / <paramref name="perSecond"/> seconds, rounded down to whole seconds, between
    /// <paramref name="floor"/> and <paramref name="ceiling"/>; but <paramref name="current"/> while
    /// the peers stand for no more than a quarter more than it (then also no whole second more)
    /// and no less than a quarter less.
    /// </summary>
    public static TimeSpan Choose(int peers, TimeSpan current, TimeSpan floor, double perSecond, TimeSpan ceiling)
    {
        double raw = peers / perSecond;
        // The ceiling never below the floor (a heartbeat interval over a minute keeps its own), and
        // the raw figure capped before it becomes a TimeSpan (a tiny rate would overflow it).
        if (ceiling < floor) ceiling = floor;
        var target = TimeSpan.FromSeconds(Math.Min(Math.Floor(raw), ceiling.TotalSeconds));
        if (target < floor) target = floor;
        double now = current.TotalSeconds;
        if (target > current && raw >= now * (1 + Hysteresis)) return target;
        if (target < current && raw <= now * (1 - Hysteresis)) return target;
        return current;
    }

    /// <summary>The heartbeat whose value asks for (or says) <paramref name="interval"/>.</summary>
    internal static byte[] FrameOf(TimeSpan interval) => FrameWriting.ToArray(new Heartbeat((ulong)interval.TotalMilliseconds).Write);
}

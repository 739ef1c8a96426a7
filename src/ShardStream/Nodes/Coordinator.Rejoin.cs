using Microsoft.Extensions.Logging;
using ShardStream.Topology;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Rejoining: a peer that lost its control link joins again with the token of its first Join and
/// its own next chunk of every shard. A peer the coordinator still lists (the same token and
/// address) keeps its id and its place in the plan: only the control link is replaced, and its
/// parent and child links go on as they were. A peer it no longer lists joins as a new peer and
/// resumes where it was, from the replay windows. See docs/protocol.md, section 6, "Rejoining".
/// </summary>
public sealed partial class Coordinator
{
    /// <summary>
    /// How long a peer whose control link broke on its side (no goodbye, and not taken for dead by
    /// the coordinator's own failure detector) keeps its place, waiting for it to join again: the
    /// longest silence a link is allowed (4 heartbeat timeouts), unless
    /// <see cref="CoordinatorOptions.RejoinGrace"/> says otherwise. A child that reports it lost
    /// ends the wait at once; a peer without children costs nothing meanwhile.
    /// </summary>
    private TimeSpan RejoinGrace => _options.RejoinGrace ?? _options.HeartbeatTimeout * 4;

    /// <summary>How often a peer's kept place is checked during <see cref="RejoinGrace"/>.</summary>
    private static readonly TimeSpan RejoinPoll = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Where each shard goes on for a peer that joins again: its own next chunk, when every one of
    /// them is a chunk of this run (a restarted coordinator numbers its chunks from 0 again, so a
    /// resume from its future is from another run); else null.
    /// </summary>
    private long[]? ResumeSeqs(Hello hello)
    {
        int k = _options.ShardCount;
        if (hello.Shards.Length != k) return null;
        var seqs = new long[k];
        var seen = new bool[k];
        foreach (var s in hello.Shards)
        {
            if (s.Shard >= k || seen[s.Shard] || s.FromSeq > (ulong)(_source.NextSeq + k)) return null;
            seen[s.Shard] = true;
            seqs[s.Shard] = (long)s.FromSeq;
        }
        return seqs;
    }

    /// <summary>
    /// A peer the coordinator still lists joins again (its control link broke, or timed out on its
    /// side only): the new connection replaces the old one, and the peer keeps its id and place.
    /// False when this Join is not such a rejoin. <paramref name="turn"/> (admission control) is
    /// given back once the peer is welcomed.
    /// </summary>
    private async Task<bool> TryRejoinInPlaceAsync(Link link, Hello hello, string advertised, IDisposable turn)
    {
        if (hello.PeerId == 0 || hello.Shards.Length == 0) return false;
        PeerSession? session;
        Link old;
        Welcome welcome;
        lock (_gate)
        {
            if (ResumeSeqs(hello) is not { } resume) return false;
            session = null;
            foreach (var p in _peers.Values)
                if (p.Token == hello.PeerId) session = p;
            if (session is null || session.Address != advertised || !_planner.Contains(session.Id)) return false;
            old = session.Control;
            var entries = _tracker.Assignments(session.Id, _source.NextSeq, resume);
            byte[] proof = [.. StreamKey.Bytes, .. _signer.SignJoin(hello.Nonce ?? new byte[Protocol.NonceLength], (ulong)session.Id)];
            // The stream's head: a peer checks it against its own position (same run, not a restart).
            welcome = new Welcome(Protocol.Negotiate(hello), (ulong)session.Id, (byte)_options.ShardCount, (ulong)_source.NextSeq, (ulong)_source.NextOffset, _tracker.WithTickets(session.Id, entries), proof);
            _source.WelcomedAtHead();
            // Still counted as attached (it was, and its parents did not change): no second count.
            session.Control = link;
            session.Version = welcome.Version;
            link.Name = $"peer {session.Id} ({advertised})";
            link.Role = new ControlRole(session);
            if (_options.ControlHeartbeatInterval is { } control && control > _options.HeartbeatInterval) link.OfferLongerHeartbeats(control);
            link.Send(welcome.Write);
            link.Start(OnPeerFrame);
            foreach (var e in entries)
                if (e.Kind == AssignmentKind.Served) Relay!.Subscribe(link, e.Shard, (long)e.FromSeq);
        }
        turn.Dispose();
        RejoinLog.InPlace(Log, session.Id, advertised, old.IsClosing ? "broken" : "still open here");
        old.Abort($"peer {session.Id} joined again on a new connection");
        await WatchControlAsync(link, session).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// Serves a peer's control link until it closes, then takes the peer out of the overlay, unless
    /// the peer joined again on a new connection meanwhile. A link that broke on the peer's side
    /// (no goodbye, heard from lately: the peer lives, and will join again) keeps the peer's place
    /// for <see cref="RejoinGrace"/>.
    /// </summary>
    private async Task WatchControlAsync(Link link, PeerSession session)
    {
        var closed = await link.Closed.ConfigureAwait(false);
        string reason = closed.Text;
        Relay!.Unsubscribe(link);
        if (session.Control != link) return;
        if (link.ReceivedGoodbye is null && closed.Code != CloseCode.TimedOut && !Stopping.IsCancellationRequested)
        {
            bool listed;
            lock (_gate) listed = _peers.TryGetValue(session.Id, out var current) && current == session && !_source.Ended;
            if (listed)
            {
                RejoinLog.Waiting(Log, session.Id, reason, RejoinGrace.TotalSeconds);
                // Until it is back, the grace is over, or the stream has ended (nothing to come back for).
                long since = Time.GetTimestamp();
                try
                {
                    while (session.Control == link && !_source.Ended && Time.GetElapsedTime(since) < RejoinGrace)
                        await Task.Delay(RejoinPoll, Time, Stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                if (session.Control != link) return;
            }
        }
        _repair.OnPeerGone(session, reason);
        // A peer that is out of the overlay gets nothing more from us on any connection.
        foreach (var other in Relay.Subscribers().Where(l => l.Role is ChildRole child && child.PeerId == session.Id)) other.Abort($"peer {session.Id} is out of the overlay");
    }
}

/// <summary>Log lines about peers that join again.</summary>
internal static partial class RejoinLog
{
    [LoggerMessage(EventId = 1401, EventName = "RejoinedInPlace", Level = LogLevel.Information,
        Message = "peer {Id} ({Address}) joined again on a new connection (its old one {Old}): same id and place in the overlay")]
    public static partial void InPlace(ILogger logger, int id, string address, string old);

    [LoggerMessage(EventId = 1402, EventName = "WaitingForRejoin", Level = LogLevel.Information,
        Message = "peer {Id}: control link broken on its side ({Reason}); keeping its place for {Seconds:0} s for it to join again")]
    public static partial void Waiting(ILogger logger, int id, string reason, double seconds);

    [LoggerMessage(EventId = 1403, EventName = "ParentLostWhileAway", Level = LogLevel.Information,
        Message = "peer {Id} lost parent {Parent}, whose control link is closed: taking it out of the overlay")]
    public static partial void LostWhileAway(ILogger logger, int id, int parent);
}

using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Media;
using ShardStream.Nodes;
using ShardStream.Transport;

namespace ShardStream.Rtmp;

/// <summary>What an <see cref="RtmpServer"/> serves.</summary>
public sealed record RtmpServerOptions
{
    /// <summary>HOST:PORT to listen on (port 0 picks a free port).</summary>
    public required string ListenAddress { get; init; }

    /// <summary>Where a publisher's tags go; null = publishing refused.</summary>
    public IFlvTagSink? Ingest { get; init; }

    /// <summary>The stream key a publisher must give as the stream name; null = any name is accepted.</summary>
    public string? PublishKey { get; init; }

    /// <summary>What players get; null = playing refused.</summary>
    public IFlvTagFeed? Play { get; init; }

    /// <summary>The stream name players ask for (rtmp://HOST:PORT/APP/NAME).</summary>
    public string PlayName { get; init; } = "stream";

    public RtmpLimits Limits { get; init; } = new();

    /// <summary>
    /// The process's open-file limit (null: unknown): the server takes at most an eighth of it in
    /// connections (<see cref="ConnectionCap"/>), and at most <see cref="RtmpLimits.MaxConnections"/>.
    /// </summary>
    public ulong? OpenFileLimit { get; init; }

    public ITransport Transport { get; init; } = TcpTransport.Instance;
}

/// <summary>
/// An RTMP server on the project's own TCP transport (pipes over sockets, the same listener the
/// overlay uses): accepts connections within the per-address and total limits (the total at most
/// an eighth of the open-file limit) and runs an <see cref="RtmpSession"/> for each; refusals are
/// counted in one log line per 10 s. At most one publisher at a time.
/// </summary>
public sealed class RtmpServer : IAsyncDisposable
{
    private readonly IConnectionListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly HashSet<Task> _sessions = [];
    private readonly byte[]? _keyHash;
    private readonly Task _acceptLoop;
    private readonly ConnectionCap _cap;
    private readonly AddressShares _shares;  // under _sessions's lock
    private readonly ThrottledCount _refused;
    private readonly ThrottledCount _badInput;
    private RtmpSession? _publisher;
    private int _open;

    private RtmpServer(RtmpServerOptions options, IConnectionListener listener, ILoggerFactory loggers)
    {
        Options = options;
        _listener = listener;
        Loggers = loggers;
        Log = loggers.CreateLogger("rtmp");
        _keyHash = options.PublishKey is { } key ? SHA256.HashData(Encoding.UTF8.GetBytes(key)) : null;
        _cap = ConnectionCap.EighthOf(options.OpenFileLimit, options.Limits.MaxConnections);
        _shares = new AddressShares(Math.Min(options.Limits.MaxConnectionsPerAddress, _cap.Max));
        _refused = new ThrottledCount(RefusalLogInterval, TimeProvider.System, (count, last) => RtmpLog.ConnectionsRefused(Log, count, last),
            Log, "saying the rtmp connections refused", _stop.Token);
        _badInput = new ThrottledCount(RefusalLogInterval, TimeProvider.System, (count, last) => RtmpLog.BadInputClosed(Log, count, last),
            Log, "saying the rtmp connections closed for bad input", _stop.Token);
        _acceptLoop = AcceptLoopAsync();
    }

    private static readonly TimeSpan RefusalLogInterval = TimeSpan.FromSeconds(10);

    public RtmpServerOptions Options { get; }

    /// <summary>The most connections open at once: <see cref="RtmpLimits.MaxConnections"/>, or an eighth of the open-file limit when that is fewer.</summary>
    public int MaxConnections => _cap.Max;

    /// <summary>The bound address.</summary>
    public string LocalAddress => _listener.LocalAddress;

    internal ILogger Log { get; }

    internal ILoggerFactory Loggers { get; }

    /// <summary>Open connections (tests).</summary>
    public int OpenConnections => Volatile.Read(ref _open);

    public static async Task<RtmpServer> StartAsync(RtmpServerOptions options, ILoggerFactory? loggers, CancellationToken cancellationToken)
    {
        var listener = await options.Transport.ListenAsync(options.ListenAddress, cancellationToken).ConfigureAwait(false);
        var server = new RtmpServer(options, listener, loggers ?? NullLoggerFactory.Instance);
        string what = (options.Ingest, options.Play) switch
        {
            (not null, not null) => "publish and play",
            (not null, null) => "publish",
            (null, not null) => "play",
            _ => "nothing",
        };
        RtmpLog.Listening(server.Log, server.LocalAddress, what);
        return server;
    }

    /// <summary>
    /// Compares a publish name with the key in constant time: both are hashed first, so neither
    /// the length nor the first differing byte shows in the time taken.
    /// </summary>
    internal bool KeyMatches(string name)
    {
        if (_keyHash is null) return true;
        Span<byte> given = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(name), given);
        return CryptographicOperations.FixedTimeEquals(given, _keyHash);
    }

    /// <summary>
    /// A connection closed for bad input: any stranger can send garbage, again and again, so it is
    /// counted in one line per 10 s (event 1113, with the last one's address and reason) and said
    /// in a debug line each (1101), as the overlay port's bad first frames are (9106).
    /// </summary>
    internal void ClosedForBadInput(string remote, string reason)
    {
        _badInput.Note($"{remote}: {reason}");
        RtmpLog.ClosedBadInput(Log, remote, reason);
    }

    /// <summary>Connections closed for bad input so far (tests).</summary>
    internal long BadInputCount => _badInput.Count;

    internal bool TryClaimPublisher(RtmpSession session) => Interlocked.CompareExchange(ref _publisher, session, null) is null;

    internal void ReleasePublisher(RtmpSession session) => Interlocked.CompareExchange(ref _publisher, null, session);

    private async Task AcceptLoopAsync()
    {
        await Task.Yield();
        double backoffMs = 10;
        while (!_stop.IsCancellationRequested)
        {
            IConnection? connection;
            try
            {
                connection = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
                backoffMs = 10;
            }
            catch (ConnectionFailedException e)
            {
                RtmpLog.AcceptFailed(Log, e.Message, backoffMs);
                try { await Task.Delay(TimeSpan.FromMilliseconds(backoffMs), _stop.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) { return; }
                backoffMs = Math.Min(backoffMs * 2, 1000);
                continue;
            }
            if (connection is null) return;
            // An IPv6 host by its /64: it has 2^64 addresses to choose from.
            string? host = AddressShares.GroupOf(connection.RemoteAddress);
            string? refusal = null;
            lock (_sessions)
            {
                if (_open >= _cap.Max) refusal = $"{_open} RTMP connections open, the most this node takes ({_cap.Why})";
                else if (_shares.IsFull(host)) refusal = $"{_shares.HeldBy(host)} RTMP connections open from {host}, the limit per address";
                else
                {
                    _shares.Take(host);
                    _open++;
                }
            }
            if (refusal is not null)
            {
                _refused.Note($"from {connection.RemoteAddress}: {refusal}");
                connection.Abort();
                await connection.DisposeAsync().ConfigureAwait(false);
                continue;
            }
            var session = new RtmpSession(this, connection);
            var task = RunSessionAsync(session, host);
            lock (_sessions) _sessions.Add(task);
            _ = task.ContinueWith(t => { lock (_sessions) _sessions.Remove(t); }, TaskScheduler.Default);
        }
    }

    private async Task RunSessionAsync(RtmpSession session, string? host)
    {
        await Task.Yield();
        try
        {
            await session.RunAsync(_stop.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            RtmpLog.SessionFailed(Log, session.Remote, e);
        }
        finally
        {
            lock (_sessions)
            {
                _open--;
                _shares.Release(host);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested) return;
        await _stop.CancelAsync().ConfigureAwait(false);
        await _listener.DisposeAsync().ConfigureAwait(false);
        await _acceptLoop.ConfigureAwait(false);
        Task[] sessions;
        lock (_sessions) sessions = [.. _sessions];
        await Task.WhenAll(sessions).ConfigureAwait(false);
        _stop.Dispose();
    }
}

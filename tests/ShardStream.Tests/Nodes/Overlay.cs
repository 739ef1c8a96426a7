using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Topology;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A coordinator and peers on one <see cref="VirtualNetwork"/>, each node on its own host
/// ("coord", "p1", "p2", …). The source is a pipe the test writes into, so it can stream in
/// steps; each peer writes into its own memory stream.
/// </summary>
internal sealed class Overlay : IAsyncDisposable
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private readonly Pipe _source = new(new PipeOptions(pauseWriterThreshold: 0));
    private readonly List<byte> _written = [];
    private Task? _coordinatorRun;

    private readonly TimeSpan _heartbeatTimeout;

    public Overlay(CoordinatorOptions options, ILoggerFactory? loggers = null)
    {
        _heartbeatTimeout = options.HeartbeatTimeout;
        NodeLoggers = loggers ?? Loggers;
        Coordinator = new Coordinator(options with { ListenAddress = "coord:1" }, Network.Host("coord"), NodeLoggers);
    }

    /// <summary>Where the coordinator and the peers log (<see cref="Loggers"/> unless the test gave its own).</summary>
    public ILoggerFactory NodeLoggers { get; }

    /// <summary>Logs to stderr when SHARDSTREAM_TEST_LOG is set (for debugging a failing test), else nowhere.</summary>
    public static ILoggerFactory Loggers { get; } = Environment.GetEnvironmentVariable("SHARDSTREAM_TEST_LOG") is { Length: > 0 }
        ? LoggerFactory.Create(b => b.SetMinimumLevel(LogLevel.Debug).AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; }).AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace))
        : Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance;

    public VirtualNetwork Network { get; } = new();

    public Coordinator Coordinator { get; }

    public List<(Peer Peer, MemoryStream Output, Task Run, string Host)> Peers { get; } = [];

    public byte[] Written
    {
        get
        {
            lock (_written) return _written.ToArray();
        }
    }

    public (Peer Peer, MemoryStream Output, Task Run, string Host) PeerById(int id) => Peers.Single(p => p.Peer.Id == id);

    /// <summary>How a peer's <paramref name="run"/> ended: the reason it stopped with, or <paramref name="completed"/> when it completed.</summary>
    public static async Task<string> HowEndedAsync(Task run, Func<string> completed)
    {
        try
        {
            await run.WaitAsync(Deadline);
            return completed();
        }
        catch (StreamInterruptedException e)
        {
            return e.Message;
        }
    }

    /// <summary>Asserts that the peer wrote exactly the source from its join point.</summary>
    public async Task AssertIdenticalAsync((Peer Peer, MemoryStream Output, Task Run, string Host) p)
    {
        await p.Run.WaitAsync(Deadline);
        var expected = Written.AsSpan((int)p.Peer.StartOffset);
        var got = p.Output.ToArray();
        Assert.True(expected.SequenceEqual(got), $"peer {p.Peer.Id} (join offset {p.Peer.StartOffset}) wrote {got.Length} bytes, the source from there has {expected.Length}; first difference at {FirstDifference(expected, got)}; {Skipped(expected, got)}; it counted {p.Peer.LostBytes} bytes lost");
        Assert.Equal(0, p.Peer.LostBytes);
    }

    /// <summary>
    /// Whether <paramref name="got"/> is <paramref name="expected"/> with one range cut out (a gap
    /// taken: chunks skipped, every byte written the source's) or has bytes that are not the source's.
    /// </summary>
    private static string Skipped(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> got)
    {
        int at = FirstDifference(expected, got);
        int cut = expected.Length - got.Length;
        if (cut > 0 && expected[(at + cut)..].SequenceEqual(got[at..])) return $"the rest is the source's from {at + cut} on: {cut} bytes skipped";
        return "it is not the source with one range cut out: bytes that are not the source's";
    }

    private static int FirstDifference(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int n = Math.Min(a.Length, b.Length);
        for (int i = 0; i < n; i++) if (a[i] != b[i]) return i;
        return n;
    }

    public static async Task<Overlay> StartAsync(int shards, int minPeers = 0, Func<CoordinatorOptions, CoordinatorOptions>? configure = null, TimeSpan? heartbeatTimeout = null, ILoggerFactory? loggers = null)
    {
        var timeout = heartbeatTimeout ?? TimeSpan.FromSeconds(10);
        var options = new CoordinatorOptions { ShardCount = shards, MinPeers = minPeers, HeartbeatTimeout = timeout, HeartbeatInterval = timeout / 5 };
        var overlay = new Overlay(configure?.Invoke(options) ?? options, loggers);
        await overlay.Coordinator.StartAsync(CancellationToken.None);
        return overlay;
    }

    /// <summary>Starts the coordinator's streaming loop (after min-peers it begins reading the source).</summary>
    public void StartStreaming() => _coordinatorRun = Task.Run(() => Coordinator.RunAsync(_source.Reader.AsStream(), CancellationToken.None));

    /// <summary>Starts a peer on host pN; <paramref name="network"/> wraps its transport (a liar's, or one that says where the host is); <paramref name="loggers"/>: where it logs (<see cref="NodeLoggers"/> unless given); <paramref name="time"/>: its clock (the system's unless given).</summary>
    public async Task<Peer> AddPeerAsync(string? joinAddress = null, double? upload = null, Func<PeerOptions, PeerOptions>? configure = null, Func<ITransport, ITransport>? network = null, ILoggerFactory? loggers = null, TimeProvider? time = null)
    {
        string host = $"p{Peers.Count + 1}";
        var options = new PeerOptions
        {
            JoinAddress = joinAddress ?? Coordinator.ListenAddress,
            ListenAddress = $"{host}:1",
            Upload = upload,
            HeartbeatTimeout = _heartbeatTimeout,
            HeartbeatInterval = _heartbeatTimeout / 5,
        };
        var peer = new Peer(configure?.Invoke(options) ?? options, network?.Invoke(Network.Host(host)) ?? Network.Host(host), loggers ?? NodeLoggers, time);
        await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);
        var output = new MemoryStream();
        Peers.Add((peer, output, Task.Run(() => peer.RunAsync(output, CancellationToken.None)), host));
        return peer;
    }

    /// <summary>
    /// Starts a peer on host p<paramref name="i"/> (node i of a latency model whose node 0 is the
    /// coordinator), heartbeating every <paramref name="heartbeatInterval"/> with a 10 s timeout and
    /// logging to <paramref name="loggers"/> (<see cref="Loggers"/> unless given), and adds it to
    /// <see cref="Peers"/> under their lock, so that a wave of joins may run together.
    /// </summary>
    public async Task<Peer> JoinHostAsync(int i, TimeSpan heartbeatInterval, ILoggerFactory? loggers = null)
    {
        var options = new PeerOptions
        {
            JoinAddress = Coordinator.ListenAddress,
            ListenAddress = $"p{i}:1",
            HeartbeatTimeout = TimeSpan.FromSeconds(10),
            HeartbeatInterval = heartbeatInterval,
        };
        var peer = new Peer(options, Network.Host($"p{i}"), loggers ?? Loggers);
        await peer.StartAsync(CancellationToken.None).WaitAsync(Deadline);
        var output = new MemoryStream();
        lock (Peers) Peers.Add((peer, output, Task.Run(() => peer.RunAsync(output, CancellationToken.None)), $"p{i}"));
        return peer;
    }

    /// <summary>Every peer has a parent link (not counting the coordinator) and each has the samples a move is judged by.</summary>
    public bool EveryParentLinkMeasured()
    {
        lock (Peers) return Peers.All(p => Measured(p.Peer.ParentRttReport()));
    }

    /// <summary>The peers seen with every parent link measured (<see cref="EveryPeerMeasuredItsParents"/>).</summary>
    private readonly HashSet<int> _measuredOnce = [];

    /// <summary>
    /// Every peer has been seen, at some call of this (poll it), with a parent link (not counting
    /// the coordinator) and each with the samples a move is judged by; each peer at its own moment,
    /// not all at once as in <see cref="EveryParentLinkMeasured"/>: the leaf moves of a
    /// latency-aware coordinator go on meanwhile, and each gives the moved peer a new link that
    /// starts from no sample (see LatencyRebuildOverlayTests).
    /// </summary>
    public bool EveryPeerMeasuredItsParents()
    {
        lock (Peers)
        {
            foreach (var (peer, _, _, _) in Peers)
                if (Measured(peer.ParentRttReport())) _measuredOnce.Add(peer.Id);
            return Peers.All(p => _measuredOnce.Contains(p.Peer.Id));
        }
    }

    /// <summary>A parent link at least (not counting the coordinator), each with the samples a move is judged by.</summary>
    private static bool Measured(IReadOnlyList<LinkRtt> report) => report.Count > 0 && report.All(r => r.Samples >= Planner.ImproveMinSamples);

    /// <summary>
    /// The peers <see cref="EveryParentLinkMeasured"/> waits for (with <paramref name="neverMeasuredOnly"/>,
    /// those <see cref="EveryPeerMeasuredItsParents"/> waits for), each with its parents in the
    /// coordinator's plan and the samples of its parent links: what a failure says.
    /// </summary>
    public List<string> UnmeasuredParentLinks(bool neverMeasuredOnly = false)
    {
        var snapshot = Coordinator.Snapshot();
        var result = new List<string>();
        lock (Peers)
            foreach (var (peer, _, _, host) in Peers)
            {
                var report = peer.ParentRttReport();
                if (Measured(report) || (neverMeasuredOnly && _measuredOnce.Contains(peer.Id))) continue;
                var parents = snapshot.Nodes.FirstOrDefault(n => n.Id == peer.Id)?.Parents is { } p ? string.Join(",", p) : "not in the plan";
                var links = report.Count == 0 ? "no parent link measured" : string.Join("; ", report.Select(r => $"{r.Link}: {r.Samples} samples"));
                result.Add($"peer {peer.Id} ({host}), parents per shard {parents} (0: the coordinator): {links}");
            }
        return result;
    }

    /// <summary>
    /// Puts <paramref name="data"/> in the source pipe and returns: the coordinator's loop (another
    /// thread) reads it later, so a peer that joins right after this at the head may still start
    /// before it. <see cref="WriteReadAsync"/> waits until it is read.
    /// </summary>
    public async Task WriteAsync(byte[] data)
    {
        lock (_written) _written.AddRange(data);
        await _source.Writer.WriteAsync(data);
    }

    /// <summary>
    /// Writes <paramref name="data"/> and waits until the coordinator has read every byte written so
    /// far (<see cref="Coordinator.BytesStreamed"/>): a peer that joins at the head after this starts
    /// after them. Only once streaming has begun (<see cref="StartStreaming"/>, min-peers met).
    /// </summary>
    public async Task WriteReadAsync(byte[] data)
    {
        await WriteAsync(data);
        long written = Written.Length;
        await WaitUntilAsync(() => Coordinator.BytesStreamed >= written, $"the coordinator read the {written} bytes written");
    }

    /// <summary>Ends the source and waits for the coordinator to finish (every peer done), up to <paramref name="within"/> (default <see cref="Deadline"/>).</summary>
    public async Task EndAsync(TimeSpan? within = null)
    {
        await _source.Writer.CompleteAsync();
        await _coordinatorRun!.WaitAsync(within ?? Deadline);
    }

    /// <summary>Waits until <paramref name="condition"/> holds, polling, with a generous deadline (<see cref="Deadline"/> unless <paramref name="within"/> says more).</summary>
    public static async Task WaitUntilAsync(Func<bool> condition, string what, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? Deadline);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting until {what}");
            await Task.Delay(10);
        }
    }

    public static byte[] RandomBytes(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    public async ValueTask DisposeAsync()
    {
        _source.Writer.Complete();
        foreach (var p in Peers) await p.Peer.DisposeAsync();
        await Coordinator.DisposeAsync();
    }
}

using System.CommandLine;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;

namespace ShardStream.Cli;

/// <summary>
/// <c>shardstream demo</c>: a coordinator and several peers on loopback TCP in one process, a
/// generated source, and a report: every peer's bytes against the source's, and the tree's shape.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var peers = new Option<int>("--peers", "-n") { Description = "Number of peers.", DefaultValueFactory = _ => 10 };
        var shards = new Option<int>("--shards", "-s") { Description = "Number of shards K (1..16).", DefaultValueFactory = _ => 2 };
        var topology = new Option<string?>("--topology") { Description = "Placement policy: binary (K=1), tessellated (K=2) or striped (any K). Default: binary for K=1, tessellated for K=2, striped for K>=3." };
        topology.AcceptOnlyFromAmong("binary", "tessellated", "striped");
        var mib = new Option<int>("--mib") { Description = "Size of the generated source in MiB.", DefaultValueFactory = _ => 32 };
        var seed = new Option<int>("--seed") { Description = "Seed of the generated source.", DefaultValueFactory = _ => 1 };
        var verbose = CommonOptions.Verbose();

        var command = new Command("demo", "Run a coordinator and peers on loopback with a generated source, and check that every peer received identical bytes.");
        foreach (var o in new Option[] { peers, shards, topology, mib, seed, verbose }) command.Options.Add(o);
        command.SetAction((parse, cancellationToken) => CommonOptions.RunAsync(async ct =>
        {
            int n = parse.GetValue(peers);
            if (n is < 1 or > 200) throw new ArgumentException("--peers must be between 1 and 200");
            int size = parse.GetValue(mib);
            if (size is < 1 or > 4096) throw new ArgumentException("--mib must be between 1 and 4096");
            using var loggers = CommonOptions.CreateLoggerFactory(parse.GetValue(verbose), quiet: !parse.GetValue(verbose));
            var source = new byte[size * 1024L * 1024];
            new Random(parse.GetValue(seed)).NextBytes(source);
            byte[] expected = SHA256.HashData(source);

            // The source is a buffer read as fast as the overlay takes it, not a live stream: a
            // replay window's age bound (30 s of a live stream) would here be 30 s of a loaded
            // machine's time, and a peer repaired late would find its chunks aged out of every
            // window although the byte bound (64 MiB) holds the whole source. So the windows are
            // bounded by bytes only, for as long as a demo can take.
            var windowAge = TimeSpan.FromHours(1);
            var coordinatorOptions = new CoordinatorOptions
            {
                ShardCount = parse.GetValue(shards),
                Topology = CoordinatorCommand.ParseTopology(parse.GetValue(topology)),
                MinPeers = n,
                ReplayWindowAge = windowAge,
            };
            await using var coordinator = new Coordinator(coordinatorOptions, loggerFactory: loggers);
            await coordinator.StartAsync(ct);
            Console.WriteLine($"ShardStream demo: coordinator on {coordinator.ListenAddress}, {n} peers, K={coordinatorOptions.ShardCount} ({coordinatorOptions.EffectiveTopology.ToString().ToLowerInvariant()}), {size} MiB source");

            var nodes = new List<(Peer Peer, IncrementalHash Hash, HashingStream Sink)>();
            for (int i = 0; i < n; i++)
            {
                var peer = new Peer(new PeerOptions { JoinAddress = coordinator.ListenAddress, ReplayWindowAge = windowAge }, loggerFactory: loggers);
                await peer.StartAsync(ct);
                var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                nodes.Add((peer, hash, new HashingStream(hash)));
            }
            // The tree as placed (after the end, peers that finished leave the coordinator's view).
            var snapshot = coordinator.Snapshot();
            var started = System.Diagnostics.Stopwatch.StartNew();
            var runs = nodes.Select(x => x.Peer.RunAsync(x.Sink, ct)).ToList();
            // Progress on stderr while it runs: a live line on a terminal, a line every 5 s otherwise.
            await using (var progress = new DemoProgress(coordinator, nodes.Select(x => x.Peer).ToList(), source.Length))
            {
                await coordinator.RunAsync(new MemoryStream(source, writable: false), ct);
                await Task.WhenAll(runs);
            }
            double seconds = started.Elapsed.TotalSeconds;

            Console.WriteLine();
            Console.WriteLine(snapshot.Render());
            int good = 0;
            foreach (var (peer, hash, _) in nodes)
            {
                byte[] got = hash.GetHashAndReset();
                bool same = got.AsSpan().SequenceEqual(expected);
                if (same) good++;
                // A peer that joined again as a new peer has an id the snapshot (taken before the stream) does not know.
                string depth = snapshot.Nodes.FirstOrDefault(x => x.Id == peer.Id) is { } node ? $"{node.Depths.Max(),2}" : " ?";
                string rejoins = peer.Rejoins > 0 ? $"  joined again {peer.Rejoins}x" : "";
                Console.WriteLine($"peer {peer.Id,3}  depth {depth}  {peer.BytesWritten,10} bytes  sha256 {Convert.ToHexStringLower(got)[..16]}…  {(same ? "identical" : "DIFFERENT")}{rejoins}");
            }
            Console.WriteLine();
            int rejoined = nodes.Count(x => x.Peer.Rejoins > 0);
            Console.WriteLine($"source sha256 {Convert.ToHexStringLower(expected)[..16]}…; {good}/{n} peers identical; max depth {snapshot.MaxDepth}; {size / seconds:0.0} MiB/s through the overlay; {rejoined} peer(s) joined again ({nodes.Sum(x => x.Peer.Rejoins)} rejoin(s))");
            foreach (var x in nodes) await x.Peer.DisposeAsync();
            if (good != n) throw new IOException($"{n - good} peer(s) received different bytes");
        }, cancellationToken));
        return command;
    }

    /// <summary>A write-only stream that hashes what it is given.</summary>
    private sealed class HashingStream(IncrementalHash hash) : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => hash.AppendData(buffer, offset, count);

        public override void Write(ReadOnlySpan<byte> buffer) => hash.AppendData(buffer);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            hash.AppendData(buffer.Span);
            return ValueTask.CompletedTask;
        }
    }
}

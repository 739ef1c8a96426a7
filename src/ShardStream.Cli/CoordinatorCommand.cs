using System.CommandLine;
using Microsoft.Extensions.Logging;
using ShardStream.Media;
using ShardStream.Cli.Http;
using ShardStream.Nodes;
using ShardStream.Rtmp;
using ShardStream.Transport;
using ShardStream.Topology;
using ShardStream.Trust;

namespace ShardStream.Cli;

/// <summary><c>shardstream coordinator</c>: streams stdin to the overlay.</summary>
internal static class CoordinatorCommand
{
    /// <summary>A key file with any of these bits set is readable by others than its owner: warned of at start.</summary>
    private const UnixFileMode OthersMayRead = UnixFileMode.GroupRead | UnixFileMode.OtherRead;

    public static Command Create()
    {
        var listen = new Option<string>("--listen", "-l") { Description = "HOST:PORT to accept peers on (port 0 picks a free port; the bound address is logged).", Required = true };
        var shards = new Option<int>("--shards", "-s") { Description = "Number of shards K, 1..16: 1 = binary tree (2x upload), 2 = the 1/2/1.5 tessellation (1.5x), 3 or more = striped trees (each peer forwards one shard).", DefaultValueFactory = _ => 1 };
        var topology = new Option<string?>("--topology") { Description = "Placement policy: binary (K=1), tessellated (K=2) or striped (any K). Default: binary for K=1, tessellated for K=2, striped for K>=3." };
        topology.AcceptOnlyFromAmong("binary", "tessellated", "striped");
        var upload = new Option<double?>("--upload") { Description = "The coordinator's upload as a multiple of the stream rate; floor(X*K) shard-streams, at least K (default (K+1)/K)." };
        var key = new Option<string?>("--key") { Description = "The stream's private key file (PEM). Created with mode 0600 when missing; the stream address printed at start is its public key. Without --key an ephemeral key is made and the address changes at every start." };
        key.Validators.Add(result =>
        {
            if (result.Tokens.Count > 0 && string.IsNullOrWhiteSpace(result.Tokens[^1].Value)) result.AddError("--key: the file name cannot be empty");
        });
        var maxUpload = new Option<double>("--max-upload") { Description = "The most upload a joining peer is believed, as a multiple of the stream rate (default 4): a peer that declares more is placed as if it had declared this.", DefaultValueFactory = _ => 4 };
        var minPeers = new Option<int>("--min-peers") { Description = "Hold the source until this many peers have joined (for demos and tests).", DefaultValueFactory = _ => 0 };
        var rtmp = new Option<string?>("--rtmp") { Description = "HOST:PORT to accept one RTMP publisher on (OBS or ffmpeg: rtmp://HOST:PORT/APP/KEY); what it publishes, as FLV, is the stream instead of stdin." };
        var rtmpKey = new Option<string?>("--rtmp-key") { Description = "With --rtmp (refused without it): the stream key an RTMP publisher must give (the last part of its URL); default: the SHARDSTREAM_RTMP_KEY environment variable, else any key is accepted. Never logged." };
        var controlHeartbeat = new Option<double?>("--control-heartbeat") { Description = "Seconds between heartbeats on a quiet control link (coordinator <-> peer), pinned: at least the heartbeat interval and at most 60. Default: chosen from the number of peers held, peers / 1000 in whole seconds (the heartbeat interval up to 1,999 peers, 5 s at 5,000, 50 s at 50,000, at most 60), changing as peers come and go. Longer cuts the coordinator's heartbeat traffic with many peers, and finds a frozen peer later; 1 keeps every link at 1 s." };
        var maxJoins = new Option<int?>("--max-joins") { Description = "Admission control (default: none): joins worked on at once; up to 4 times as many wait up to 1 s for a turn, and any more are told the coordinator is busy and join again after a backoff. Measured on a loaded 2-core machine it did not lower join latency (docs/performance.md)." };
        var latencyAware = new Option<string>("--latency-aware") { Description = "Place by latency (default true): joiners measure RTTs to a few nodes (at most 16, within about 2 s) and the planner prefers the parents that give the lowest estimated delay from the source (docs/topology.md). --latency-aware false places by depth and capacity only.", DefaultValueFactory = _ => "true" };
        // A string, not a bool: the parser leaves a value that is no bool ("maybe") over as an
        // unknown argument, and the error would not name the flag.
        latencyAware.AcceptOnlyFromAmong("true", "false");
        var latencyMoves = new Option<int>("--latency-moves") { Description = "With --latency-aware: at most this many peers a second, overlay-wide, are moved to a parent that gives them a much lower estimated delay from the source (at least 20 ms and 20% lower; a moved peer rests 30 s; no byte lost). A move must also be borne out by the RTT the peer measured to its parent (its least sample at least 20 ms and 20% above the estimate to the new parent), so estimates alone move nobody. With --latency-rebuild, a rebuild's exchange of two relays' places that needs more moves than this spends what the seconds before it saved: one second may then carry this many and that exchange, never more than this many a second over the rebuild's seconds. Default: 4, or with the rebuild on (the default) and at least --latency-rebuild-min-peers peers, 1% of the peers (1,000 a second at 100k), so that a rebuild takes about 20 minutes at any size; a number given here is a fixed cap; 0 turns moving off; above 0 it is refused with --latency-aware false (docs/topology.md).", DefaultValueFactory = _ => 4 };
        var latencyRebuild = new Option<bool>("--latency-rebuild") { Description = "On by default, for every shard count. --latency-rebuild false turns it off, and the cap of --latency-moves is then a fixed 4. When on: the latency moves first carry out a rebuild of every tree by regions, from the peers' coordinates, the RTT to each peer and the parent-link RTTs heartbeats report, at 1,000 peers and more (--latency-rebuild-min-peers); off with --latency-moves 0 or --latency-aware false (given with them, refused). A rebuild moves most edges, at 100k peers about 1.2 million moves, about 12 a viewer, each a resume from a new parent with no byte lost; at 1% of the peers a second one takes about 20 minutes and a series of up to 4 brought the mean RDP under 2.0 within 47-95 minutes in the simulator at 100k. A step that needs more moves than the second's cap, an exchange of two relays' places, waits while the seconds save them (docs/topology.md, \"The rebuild by regions\").", DefaultValueFactory = _ => true };
        var latencyRebuildMinPeers = new Option<int>("--latency-rebuild-min-peers") { Description = $"With the rebuild on (refused where the rebuild is off: with --latency-rebuild false, --latency-moves 0 or --latency-aware false): the fewest peers for a rebuild to be planned (default {Planner.RebuildMinPeers}, at least {Planner.RebuildLeastPeers}). Smaller overlays gain from it too in the simulator, where at 20-500 peers their trees stayed within one level of the latency-blind planner's depth while it was under way (docs/topology.md, \"The rebuild by regions\").", DefaultValueFactory = _ => Planner.RebuildMinPeers };
        var mergeReads = new Option<bool>("--merge-reads") { Description = "Append a raw source's short read (a live source's small record) to the chunk before it while that chunk waits for its signature, instead of making each read a chunk: fewer hashes on the wire and at every peer for sources that write small records (docs/performance.md). Off by default; FLV and MPEG-TS are cut by their own rules." };
        var rtmpPlay = new RtmpPlayOptions();
        var format = new Option<string>("--format") { Description = "What stdin carries: auto (FLV or MPEG-TS when its first bytes say so, else raw), flv, ts or raw. FLV and MPEG-TS are cut at tag or packet boundaries and late joiners start at a keyframe with the stream header (docs/media.md).", DefaultValueFactory = _ => "auto" };
        format.AcceptOnlyFromAmong("auto", "flv", "ts", "raw");
        var http = CommonOptions.Http();
        var verbose = CommonOptions.Verbose();
        var quiet = CommonOptions.Quiet();
        var replaySeconds = CommonOptions.ReplayWindowSeconds();
        var replayMiB = CommonOptions.ReplayWindowMiB();
        var heartbeat = CommonOptions.HeartbeatTimeout();

        var command = new Command("coordinator", "Read the live stream from stdin and serve it to peers.");
        foreach (var o in new Option[] { listen, shards, topology, upload, maxUpload, key, minPeers, rtmp, rtmpKey, format, http, replaySeconds, replayMiB, heartbeat, controlHeartbeat, maxJoins, mergeReads, latencyAware, latencyMoves, latencyRebuild, latencyRebuildMinPeers, verbose, quiet }.Concat(rtmpPlay.All)) command.Options.Add(o);
        // Ctrl-C and SIGTERM end the stream (CoordinatorStop); Program.cs leaves them to it.
        command.SetAction(async (parse, _) =>
        {
            using var stop = new CoordinatorStop();
            return await stop.RunAsync(quit => CommonOptions.RunAsync(ct => RunAsync(parse, stop, ct), quit));
        });
        return command;

        async Task RunAsync(ParseResult parse, CoordinatorStop stop, CancellationToken ct)
        {
            using var loggers = CommonOptions.CreateLoggerFactory(parse.GetValue(verbose), parse.GetValue(quiet));
            // Every check of the flags and their values comes before --key, which creates a missing
            // key file: a refused command line leaves no file behind.
            if (CommonOptions.Given(parse, rtmpKey) && parse.GetValue(rtmp) is null)
                throw new ArgumentException(CommonOptions.NoEffect("--rtmp-key", "without --rtmp"));
            if (rtmpPlay.NameWithoutAddress(parse) is { } unnamed) throw new ArgumentException(unnamed);
            // Latency moves, and the rebuild they carry out, run only with latency-aware placement
            // (Coordinator's move loop returns at once without it); --latency-moves 0 stays allowed,
            // a way to say "nothing by latency" twice.
            if (parse.GetValue(latencyAware) == "false")
            {
                if (CommonOptions.Given(parse, latencyMoves) && parse.GetValue(latencyMoves) > 0)
                    throw new ArgumentException(CommonOptions.NoEffect("--latency-moves", "with --latency-aware false"));
                if (CommonOptions.Given(parse, latencyRebuild) && parse.GetValue(latencyRebuild))
                    throw new ArgumentException(CommonOptions.NoEffect("--latency-rebuild", "with --latency-aware false"));
            }
            if (CommonOptions.RebuildWithoutMoves(parse, latencyRebuild, latencyMoves) is { } unmoved) throw new ArgumentException(unmoved);
            // On by default: off with --latency-rebuild false, --latency-moves 0 or --latency-aware false.
            string? rebuildOff = CommonOptions.RebuildOff(parse, latencyRebuild, latencyMoves, parse.GetValue(latencyAware) == "false" ? "with --latency-aware false" : null);
            if (CommonOptions.RebuildMinPeersWithoutRebuild(parse, latencyRebuildMinPeers, rebuildOff) is { } alone) throw new ArgumentException(alone);
            if (parse.GetValue(latencyRebuildMinPeers) is var fewest && fewest < Planner.RebuildLeastPeers)
                throw new ArgumentException($"the fewest peers for a rebuild by regions (--latency-rebuild-min-peers) must be at least {Planner.RebuildLeastPeers}, got {fewest}");
            var options = CommonOptions.Apply(new CoordinatorOptions
            {
                ListenAddress = parse.GetValue(listen)!,
                ShardCount = parse.GetValue(shards),
                Topology = ParseTopology(parse.GetValue(topology)),
                Upload = parse.GetValue(upload),
                MinPeers = parse.GetValue(minPeers),
                MaxPeerUpload = parse.GetValue(maxUpload),
                LatencyAware = parse.GetValue(latencyAware) == "true",
                LatencyMovesPerSecond = parse.GetValue(latencyMoves),
                LatencyRebuild = rebuildOff is null,
                LatencyMovesShare = CommonOptions.MovesShare(parse, latencyMoves, rebuildOff is null),
                LatencyRebuildMinPeers = parse.GetValue(latencyRebuildMinPeers),
                MergeShortReads = parse.GetValue(mergeReads),
            }, parse, replaySeconds, replayMiB, heartbeat);
            // An RTMP publish hands over whole tags, a read's worth at a time (FlvByteSink): each
            // read is signed as the source waits for the next, instead of being held up to the
            // signing interval for a timer that wakes three threads (docs/performance.md#rtmp-ingest-issue-11).
            if (parse.GetValue(rtmp) is not null) options = options with { MinSigningInterval = TimeSpan.Zero };
            if (parse.GetValue(controlHeartbeat) is { } seconds) options = options with { ControlHeartbeatInterval = TimeSpan.FromSeconds(seconds) };
            if (parse.GetValue(maxJoins) is { } joins) options = options with { MaxJoinsInProgress = joins, MaxJoinsWaiting = 4 * Math.Max(0, joins) };
            options.Validate(); // the Coordinator checks them again; here before the key file is made
            bool created = false;
            using var signer = parse.GetValue(key) is { } keyFile ? StreamSigner.LoadOrCreate(keyFile, out created) : null;
            if (created) CliLog.KeyCreated(loggers.CreateLogger("coordinator"), parse.GetValue(key));
            else if (signer is not null && !OperatingSystem.IsWindows() && File.GetUnixFileMode(parse.GetValue(key)!) is var mode && (mode & OthersMayRead) != 0)
                CliLog.KeyFileReadable(loggers.CreateLogger("coordinator"), parse.GetValue(key), Convert.ToString((int)mode & 0x1FF, 8).PadLeft(4, '0'), parse.GetValue(key));
            options = DescriptorLimit.Apply(options with { Signer = signer }, loggers.CreateLogger("coordinator"));
            await using var coordinator = new Coordinator(options, loggerFactory: loggers);
            var egress = new MediaEgress(parse.GetValue(http) is not null);
            await using var httpHost = await NodeHttpHost.StartAsync(parse.GetValue(http), [new MetricsEndpoints(), OverlayEndpoints.ForCoordinator(coordinator), egress.Endpoints(loggers)], loggers, ct);
            // After the HTTP host: its metrics exporter then sees every event from the first join on.
            await coordinator.StartAsync(ct);
            using var endOfEgress = egress;
            egress.Started(httpHost, loggers);
            await using var ingest = await RtmpIngest.StartAsync(parse.GetValue(rtmp), parse.GetValue(rtmpKey), loggers, ct);
            await using var play = await rtmpPlay.StartAsync(parse, loggers, ct);
            var log = loggers.CreateLogger("coordinator");
            var input = egress.Tap(ingest is not null ? stop.Source(ingest.Source, "the RTMP publish", log) : stop.Source(Console.OpenStandardInput(), "stdin", log));
            await using var source = play is null ? input : play.Hub.TeeReads(input);
            // An RTMP publish arrives as FLV; stdin is whatever --format says (or its first bytes).
            await coordinator.RunAsync(new MediaReader(source, ingest is not null ? MediaFormat.Flv : MediaFormats.Parse(parse.GetValue(format))), ct);
            CliLog.StreamTotals(log, coordinator.BytesStreamed, coordinator.ChunksCut);
            CliLog.FinalOverlay(log);
            foreach (string line in (coordinator.OverlayAtSourceEnd ?? coordinator.Snapshot()).Render().Split('\n', StringSplitOptions.RemoveEmptyEntries)) CliLog.FinalOverlayLine(log, line);
        }
    }

    /// <summary>The RTMP listener of <c>--rtmp</c> and the FLV byte stream it feeds the coordinator.</summary>
    private sealed class RtmpIngest(RtmpServer server, FlvByteSink sink) : IAsyncDisposable
    {
        public Stream Source => sink.Reader;

        public static async Task<RtmpIngest?> StartAsync(string? address, string? key, ILoggerFactory loggers, CancellationToken ct)
        {
            if (address is null) return null;
            key ??= Environment.GetEnvironmentVariable("SHARDSTREAM_RTMP_KEY");
            if (string.IsNullOrEmpty(key))
            {
                key = null;
                CliLog.NoRtmpKey(loggers.CreateLogger("rtmp"));
            }
            var sink = new FlvByteSink();
            var server = await RtmpServer.StartAsync(new RtmpServerOptions { ListenAddress = address, Ingest = sink, PublishKey = key, Transport = TcpTransport.ReadingThreads, OpenFileLimit = DescriptorLimit.OpenFiles() }, loggers, ct);
            return new RtmpIngest(server, sink);
        }

        public async ValueTask DisposeAsync()
        {
            await server.DisposeAsync();
            sink.Complete();
        }
    }

    internal static TopologyKind? ParseTopology(string? name) => name switch
    {
        null => null,
        "binary" => TopologyKind.Binary,
        "tessellated" => TopologyKind.Tessellated,
        "striped" => TopologyKind.Striped,
        _ => throw new ArgumentException($"unknown topology '{name}': use binary, tessellated or striped"),
    };
}

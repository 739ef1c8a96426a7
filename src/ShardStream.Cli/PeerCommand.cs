using System.CommandLine;
using ShardStream.Cli.Http;
using ShardStream.Nodes;
using ShardStream.Trust;

namespace ShardStream.Cli;

/// <summary><c>shardstream peer</c>: joins an overlay and writes the stream to stdout.</summary>
internal static class PeerCommand
{
    public static Command Create()
    {
        var connect = new Option<string>("--connect", "-c") { Description = "HOST:PORT of any node of the overlay (the coordinator, or a peer, which redirects).", Required = true };
        var listen = new Option<string>("--listen", "-l") { Description = "HOST:PORT to accept children on (port 0 picks a free port).", DefaultValueFactory = _ => "127.0.0.1:0" };
        var advertise = new Option<string?>("--advertise")
        {
            Description = "HOST:PORT other peers connect to for this peer's relay, when not the listen address (port forwarding, containers, a public name). " +
                          "Without it, a peer listening on 0.0.0.0 or [::] is reached at the address the coordinator sees it connect from.",
        };
        var upload = new Option<double?>("--upload") { Description = "This peer's upload as a multiple of the stream rate: floor(X*K) shard-streams (default (K+1)/K; 0 = watch only, a leaf in every tree)." };
        var stream = new Option<string?>("--stream") { Description = "The stream address (the 64 hex digits the coordinator prints at start): join only if the coordinator proves it holds that stream's key. Without it the peer pins whatever key the coordinator proves it holds, and logs it." };
        var rejoin = new Option<double>("--rejoin-seconds")
        {
            Description = "After losing the coordinator (link timed out or broken, evicted, or the coordinator restarted), keep trying to join again for this long, with backoff (0.5 s doubling to 8 s, each wait times a random 0.5 to 1.5), resuming at this peer's next byte (or with a logged gap); 0 = stop at once.",
            DefaultValueFactory = _ => 60,
        };
        var rtmpPlay = new RtmpPlayOptions();
        var http = CommonOptions.Http();
        var verbose = CommonOptions.Verbose();
        var quiet = CommonOptions.Quiet();
        var replaySeconds = CommonOptions.ReplayWindowSeconds();
        var replayMiB = CommonOptions.ReplayWindowMiB();
        var heartbeat = CommonOptions.HeartbeatTimeout();

        var command = new Command("peer", "Join an overlay, write the stream to stdout and relay it to other peers.");
        foreach (var o in new Option[] { connect, listen, advertise, upload, stream, rejoin, http, replaySeconds, replayMiB, heartbeat, verbose, quiet }.Concat(rtmpPlay.All)) command.Options.Add(o);
        command.SetAction((parse, cancellationToken) => CommonOptions.RunAsync(async ct =>
        {
            if (rtmpPlay.NameWithoutAddress(parse) is { } unused) throw new ArgumentException(unused);
            // A terminal gets one live status line instead of scrolling logs (not with -v or -q).
            await using var status = StatusLine.Wanted(parse.GetValue(verbose) || parse.GetValue(quiet)) ? new StatusLine() : null;
            using var loggers = CommonOptions.CreateLoggerFactory(parse.GetValue(verbose), parse.GetValue(quiet), status);
            double rejoinSeconds = parse.GetValue(rejoin);
            if (!double.IsFinite(rejoinSeconds) || rejoinSeconds < 0) throw new ArgumentException("--rejoin-seconds must be 0 or more");
            var options = CommonOptions.Apply(new PeerOptions
            {
                JoinAddress = parse.GetValue(connect)!,
                ListenAddress = parse.GetValue(listen)!,
                AdvertiseAddress = parse.GetValue(advertise),
                Upload = parse.GetValue(upload),
                Stream = parse.GetValue(stream) is { } address ? StreamKey.Parse(address) : null,
                RejoinFor = TimeSpan.FromSeconds(rejoinSeconds),
            }, parse, replaySeconds, replayMiB, heartbeat);
            options = DescriptorLimit.Apply(options, loggers.CreateLogger("peer"));
            await using var peer = new Peer(options, loggerFactory: loggers);
            status?.Start(PeerStatusText.For(peer));
            var egress = new MediaEgress(parse.GetValue(http) is not null);
            await using var httpHost = await NodeHttpHost.StartAsync(parse.GetValue(http), [new MetricsEndpoints(), OverlayEndpoints.ForPeer(peer), egress.Endpoints(loggers)], loggers, ct);
            using var endOfEgress = egress;
            egress.Started(httpHost, loggers);
            // Players' listeners before the join, as the HTTP host: a player started with the peer
            // waits for the stream instead of being refused for as long as the join takes.
            await using var play = await rtmpPlay.StartAsync(parse, loggers, ct);
            // After the HTTP host: its metrics exporter then sees every event from the first join on.
            await peer.StartAsync(ct);
            var output = egress.Tee(Console.OpenStandardOutput());
            await using var stdout = play is null ? output : play.Hub.Tee(output);
            try
            {
                await peer.RunAsync(stdout, ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Ctrl-C or SIGTERM: leave without a stall for the children.
                egress.Hub.Complete("Ctrl-C or SIGTERM");
                await peer.LeaveAsync(options.HeartbeatTimeout * 2);
                throw;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // An early stop (too slow, the coordinator lost): its HTTP viewers get the end of what
                // it wrote, and its log says it was not the stream's end.
                egress.Hub.Complete(e.Message);
                throw;
            }
            // The stream's end, with bytes lost: its HTTP viewers were told the stream ended.
            if (peer.LostBytes > 0)
                throw new StreamInterruptedException($"the stream ended, but {peer.LostBytes} bytes were lost (older than every replay window; the log names the ranges)");
        }, cancellationToken));
        return command;
    }
}

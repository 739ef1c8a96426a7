using System.CommandLine;
using System.Globalization;
using ShardStream.LoadGeneration;
using ShardStream.Wire;

namespace ShardStream.Cli;

/// <summary>
/// <c>shardstream swarm</c>: a load generator for a coordinator. Thousands of lightweight peers in
/// this process join it over real TCP (each answering the reachability probe), heartbeat, report,
/// churn and leave; a line a second on stderr, the summary on stdout. With --coordinator-pid it
/// also reports the coordinator's own CPU and memory from /proc.
/// </summary>
internal static class SwarmCommand
{
    public static Command Create()
    {
        var connect = new Option<string>("--connect", "-c") { Description = "HOST:PORT of the coordinator (not a peer: the swarm follows no redirect).", Required = true };
        var peers = new Option<int>("--peers") { Description = "Peers that join in the ramp.", DefaultValueFactory = _ => 1000 };
        var joinRate = new Option<double>("--join-rate") { Description = "Joins started per second in the ramp (also the rate of the leaves at the end).", DefaultValueFactory = _ => 1000 };
        var hold = new Option<double>("--hold") { Description = "Seconds the peers stay connected after the ramp, heartbeating.", DefaultValueFactory = _ => 10 };
        var churn = new Option<double>("--churn") { Description = "During the hold: peers per second that leave, each replaced at once by a new joiner.", DefaultValueFactory = _ => 0 };
        var firstAddress = new Option<string>("--first-address") { Description = "First local IPv4 address the peers connect from; the next ones count up from it (127.0.0.0/8 is all local on Linux).", DefaultValueFactory = _ => "127.1.0.1" };
        var addresses = new Option<int>("--addresses") { Description = "How many local addresses to spread the peers over (each has ~28k ephemeral ports).", DefaultValueFactory = _ => 100 };
        var upload = new Option<double?>("--upload") { Description = "The upload each peer declares, as a multiple of the stream rate (default: K+1 shard-streams); 0 = viewers the coordinator does not probe." };
        var heartbeat = CommonOptions.HeartbeatTimeout();
        var pid = new Option<int?>("--coordinator-pid") { Description = "Report this process's CPU, resident memory and open files each second (Linux /proc): the coordinator's own figures." };

        var command = new Command("swarm", "Load a coordinator with thousands of lightweight protocol-speaking peers (join, heartbeat, report, leave) and report join latency.");
        foreach (var o in new Option[] { connect, peers, joinRate, hold, churn, firstAddress, addresses, upload, heartbeat, pid }) command.Options.Add(o);
        command.SetAction((parse, cancellationToken) => CommonOptions.RunAsync(async ct =>
        {
            double? x = parse.GetValue(upload);
            if (x is < 0 or > 600) throw new ArgumentException("--upload must be between 0 and 600");
            var options = new SwarmOptions
            {
                CoordinatorAddress = parse.GetValue(connect)!,
                Peers = parse.GetValue(peers),
                JoinRate = parse.GetValue(joinRate),
                Hold = TimeSpan.FromSeconds(parse.GetValue(hold)),
                ChurnRate = parse.GetValue(churn),
                FirstAddress = parse.GetValue(firstAddress)!,
                Addresses = parse.GetValue(addresses),
                UploadPercent = x is { } multiple ? (ushort)Math.Round(multiple * 100) : Hello.DefaultUpload,
                HeartbeatInterval = TimeSpan.FromSeconds(parse.GetValue(heartbeat) / 5),
            };
            var swarm = new Swarm(options);
            if (parse.GetValue(pid) is { } watched && (watched <= 0 || !Directory.Exists($"/proc/{watched}")))
                throw new ArgumentException($"--coordinator-pid: no process {watched} on this machine");
            var watch = parse.GetValue(pid) is { } p ? new ProcessWatch(p) : null;
            long baseline = watch?.ResidentBytes() ?? -1;
            watch?.CpuPercentSinceLast();
            if (watch is not null) Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"coordinator pid {parse.GetValue(pid)}: resident {baseline / 1048576.0:0.0} MiB before the first join; load {ProcessWatch.LoadAverage()}"));
            var self = new ProcessWatch(Environment.ProcessId);
            self.CpuPercentSinceLast();
            var progress = new Progress<SwarmSecond>(s => Console.Error.WriteLine(Line(s, self, watch, baseline)));
            var report = await swarm.RunAsync(progress, null, ct);
            Console.Out.Write(report.Render());
            if (watch is not null) Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"coordinator resident after the leaves: {watch.ResidentBytes() / 1048576.0:0.0} MiB (baseline {baseline / 1048576.0:0.0} MiB); load {ProcessWatch.LoadAverage()}"));
            // Joined nothing, measured nothing: a wrong address or a coordinator that is not up.
            // Some joins failing under load is a result, in the report; none joining is an error.
            if (report.Joined == 0 && report.JoinsStarted > 0)
            {
                string reasons = string.Join(", ", report.Failures.Select(f => $"{f.Count} x {f.Reason}"));
                throw new IOException($"not one of {report.JoinsStarted} joins to {options.CoordinatorAddress} succeeded{(reasons.Length > 0 ? $" ({reasons})" : "")}");
            }
        }, cancellationToken));
        return command;
    }

    /// <summary>
    /// The peers' heartbeat intervals: "5 s", or "1-5 s (1998 at 5 s)" while some have not followed
    /// their coordinator yet, or never hear it ask (those it serves shards to, on their control link).
    /// </summary>
    private static string Seconds(SwarmSecond s) => s.LeastHeartbeat == s.MostHeartbeat
        ? string.Create(CultureInfo.InvariantCulture, $"{s.MostHeartbeat.TotalSeconds:0.#} s")
        : string.Create(CultureInfo.InvariantCulture, $"{s.LeastHeartbeat.TotalSeconds:0.#}-{s.MostHeartbeat.TotalSeconds:0.#} s ({s.AtMostHeartbeat} at {s.MostHeartbeat.TotalSeconds:0.#} s)");

    private static string Line(SwarmSecond s, ProcessWatch self, ProcessWatch? watch, long baseline)
    {
        string line = string.Create(CultureInfo.InvariantCulture,
            $"{s.Elapsed.TotalSeconds,6:0.0} s {s.Phase,-5} connected {s.Connected,6}  joins {s.Joins,5}/s  leaves {s.Leaves,5}/s  failed {s.Failures,4}  join {s.JoinLatency?.ToString() ?? "-"}  heartbeat {Seconds(s)}  swarm cpu {self.CpuPercentSinceLast():0}%");
        if (watch is null) return line;
        long rss = watch.ResidentBytes();
        double cpu = watch.CpuPercentSinceLast();
        string perPeer = s.Connected > 0 && rss > 0 ? string.Create(CultureInfo.InvariantCulture, $"{(rss - baseline) / 1024.0 / s.Connected:0.0} KiB/peer") : "-";
        return line + string.Create(CultureInfo.InvariantCulture, $"  | coordinator cpu {cpu,5:0}%  rss {rss / 1048576.0,7:0.0} MiB ({perPeer})  fds {watch.OpenFiles()}  load {ProcessWatch.LoadAverage()}");
    }
}

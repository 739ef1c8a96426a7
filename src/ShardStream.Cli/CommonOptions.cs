using System.CommandLine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using ShardStream.Nodes;
using ShardStream.Topology;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Cli;

/// <summary>Flags shared by the node commands, and the way every command reports errors.</summary>
internal static class CommonOptions
{
    public static Option<bool> Verbose() => new("--verbose", "-v") { Description = "Log debug detail to stderr." };

    public static Option<bool> Quiet() => new("--quiet", "-q") { Description = "Log only warnings and errors to stderr." };

    public static Option<string?> Http() => new("--http")
    {
        Description = "HOST:PORT to serve HTTP on: /metrics (Prometheus), /api/overlay or /api/peer (JSON), / (a live page). Port 0 picks a free port; the bound address is logged.",
    };

    public static Option<double> ReplayWindowSeconds() => new("--replay-seconds")
    {
        Description = "Replay window: seconds of recent stream each node keeps for peers that resume after losing a parent.",
        DefaultValueFactory = _ => 30,
    };

    public static Option<int> ReplayWindowMiB() => new("--replay-mib")
    {
        Description = "Replay window: MiB of recent stream each node keeps at most.",
        DefaultValueFactory = _ => 64,
    };

    public static Option<double> HeartbeatTimeout() => new("--heartbeat-timeout")
    {
        Description = "Least seconds of silence before a connection may be taken for dead; beyond it a phi accrual detector judges by the gaps seen, up to 4 times this (heartbeats go out at a fifth of it).",
        DefaultValueFactory = _ => 5,
    };

    /// <summary>
    /// Logs to stderr only: stdout carries the stream. With a <paramref name="status"/> line, only
    /// warnings and errors, written above it. <c>-v</c> with <c>-q</c> is refused: one of them would
    /// have no effect.
    /// </summary>
    public static ILoggerFactory CreateLoggerFactory(bool verbose, bool quiet, StatusLine? status = null)
    {
        if (verbose && quiet) throw new ArgumentException(NoEffect("--quiet", "with --verbose"));
        return CreateLoggerFactory(verbose ? LogLevel.Debug : quiet ? LogLevel.Warning : LogLevel.Information, status);
    }

    private static ILoggerFactory CreateLoggerFactory(LogLevel level, StatusLine? status) => LoggerFactory.Create(builder =>
    {
        if (status is not null)
        {
            builder.SetMinimumLevel(LogLevel.Warning);
            builder.AddProvider(status.LoggerProvider);
            return;
        }
        builder.SetMinimumLevel(level);
        builder.AddConsole(o =>
        {
            o.LogToStandardErrorThreshold = LogLevel.Trace;
            // When stderr cannot keep up (a busy machine, a slow pipe), drop log lines (the logger
            // says how many) rather than make the logging thread wait: with the default (Wait),
            // threads that log while they hold a node's lock stopped the whole overlay in a
            // 200-peer demo at load 27 (28 of 62 threads waiting to enqueue a line).
            o.QueueFullMode = ConsoleLoggerQueueFullMode.DropWrite;
        });
        builder.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
            o.ColorBehavior = LoggerColorBehavior.Disabled;
        });
    });

    public static T Apply<T>(T options, ParseResult parse, Option<double> replaySeconds, Option<int> replayMiB, Option<double> heartbeatTimeout)
        where T : NodeOptions
    {
        double seconds = parse.GetValue(replaySeconds);
        int mib = parse.GetValue(replayMiB);
        double timeout = parse.GetValue(heartbeatTimeout);
        if (seconds <= 0) throw new ArgumentException("--replay-seconds must be positive");
        if (mib <= 0) throw new ArgumentException("--replay-mib must be positive");
        if (timeout <= 0) throw new ArgumentException("--heartbeat-timeout must be positive");
        return options with
        {
            ReplayWindowAge = TimeSpan.FromSeconds(seconds),
            ReplayWindowBytes = mib * 1024L * 1024,
            HeartbeatTimeout = TimeSpan.FromSeconds(timeout),
            HeartbeatInterval = TimeSpan.FromSeconds(timeout / 5),
        };
    }

    /// <summary>True when <paramref name="option"/> was given on the command line, not left to its default.</summary>
    public static bool Given(ParseResult parse, Option option) => parse.GetResult(option) is { Implicit: false };

    /// <summary>
    /// The refusal of a flag that would do nothing in this command line: "--X has no effect without
    /// --Y" (or "with --Y 0"), one line naming both flags, as every such check words it.
    /// </summary>
    public static string NoEffect(string flag, string condition) => $"{flag} has no effect {condition}";

    /// <summary>
    /// Why the rebuild by regions is off in this command line (coordinator and simulate), worded as
    /// the end of a <see cref="NoEffect"/> line, or null when it is on. It is on by default for every
    /// K (docs/topology.md, "The rebuild at 1, 2 and 3 shards"). <c>--latency-rebuild false</c> turns
    /// it off, and so do <c>--latency-moves 0</c> (no move carries it out) and
    /// <paramref name="otherwise"/>, what the command itself lacks for it.
    /// </summary>
    public static string? RebuildOff(ParseResult parse, Option<bool> latencyRebuild, Option<int> latencyMoves, string? otherwise) =>
        !parse.GetValue(latencyRebuild) ? "without --latency-rebuild"
        : otherwise ?? (parse.GetValue(latencyMoves) == 0 ? "with --latency-moves 0" : null);

    /// <summary>
    /// The share of the live peers that may move a second (coordinator and simulate): with the
    /// rebuild on, <see cref="Planner.RebuildMovesShare"/> unless <c>--latency-moves</c> fixes the
    /// cap; 0 (a fixed cap) otherwise.
    /// </summary>
    public static double MovesShare(ParseResult parse, Option<int> latencyMoves, bool rebuild) =>
        rebuild && !Given(parse, latencyMoves) ? Planner.RebuildMovesShare : 0;

    /// <summary>
    /// The error for <c>--latency-rebuild-min-peers</c> given while the rebuild is off
    /// (<paramref name="rebuildOff"/>, from <see cref="RebuildOff"/>): it gates a rebuild there is none
    /// of, so it would do nothing. Null when it is not given or the rebuild is on.
    /// </summary>
    public static string? RebuildMinPeersWithoutRebuild(ParseResult parse, Option<int> latencyRebuildMinPeers, string? rebuildOff) =>
        rebuildOff is not null && Given(parse, latencyRebuildMinPeers)
            ? NoEffect("--latency-rebuild-min-peers", rebuildOff)
            : null;

    /// <summary>
    /// The error for <c>--latency-rebuild</c> given with <c>--latency-moves 0</c> (coordinator and
    /// simulate): the rebuild is carried out by those moves, so with none it never starts. The
    /// default rebuild is simply off there.
    /// </summary>
    public static string? RebuildWithoutMoves(ParseResult parse, Option<bool> latencyRebuild, Option<int> latencyMoves) =>
        Given(parse, latencyRebuild) && parse.GetValue(latencyRebuild) && parse.GetValue(latencyMoves) == 0
            ? NoEffect("--latency-rebuild", "with --latency-moves 0")
            : null;

    /// <summary>Runs a command body; any failure a user can cause becomes one line on stderr and exit code 1.</summary>
    public static async Task<int> RunAsync(Func<CancellationToken, Task> body, CancellationToken cancellationToken)
    {
        try
        {
            await body(cancellationToken).ConfigureAwait(false);
            return 0;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return 130;
        }
        catch (Exception e) when (e is ArgumentException or FormatException or ConnectionFailedException or ProtocolException
                                       or StreamInterruptedException or IOException or ShardStream.Topology.PlacementException)
        {
            Console.Error.WriteLine($"shardstream: error: {CliErrors.Line(e)}");
            return 1;
        }
    }
}

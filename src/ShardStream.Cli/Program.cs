using System.CommandLine;
using System.Runtime.InteropServices;
using ShardStream.Cli;

EmbeddedLibsodium.Install();

var root = new RootCommand("ShardStream: BitTorrent for livestreams. One coordinator owns a live byte stream; peers relay it to each other through shard trees.");
root.Subcommands.Add(CoordinatorCommand.Create());
root.Subcommands.Add(PeerCommand.Create());
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(SimulateCommand.Create());
root.Subcommands.Add(SwarmCommand.Create());
CliErrors.CheckDecimals(root);
CliErrors.CheckAddresses(root);
// A first word that is no command is said so, also with --help: the parser printed the main help
// for "relay --help" and exited 0, as if relay were a command (every peer relays; docs/cli.md).
if (args.Length > 0 && !args[0].StartsWith('-') && !root.Subcommands.Any(c => c.Name == args[0] || c.Aliases.Contains(args[0])))
{
    Console.Error.WriteLine($"shardstream: error: unknown command '{args[0]}': the commands are {string.Join(", ", root.Subcommands.Select(c => c.Name))} (--help lists them)");
    return 1;
}
var parse = root.Parse(args);
if (args.Length > 0 && parse.Errors.Count > 0)
{
    // A wrong flag or value: one line on stderr, as every other error, instead of the reason and
    // then the whole help on stdout, which carries a peer's stream (into a player).
    // The parser ends its own messages with a full stop; joined, that read "'--x'.; Unrecognized".
    var reasons = parse.Errors.Select(e => CliErrors.Describe(e).TrimEnd('.'));
    Console.Error.WriteLine($"shardstream: error: {string.Join("; ", reasons)} (--help lists the flags)");
    return 1;
}
// Ctrl-C and SIGTERM cancel a peer, demo or swarm command; a peer then hands its children over
// before it exits, which can take a few seconds, so the process is given 20 s, and then exits with
// the signal's code whatever the command does; a second signal, half a second or more after the
// first (one sooner is the same one delivered twice, as `timeout` does), exits at once. The command returns 130 when cancelled
// (CommonOptions.RunAsync); the process exits 130 after Ctrl-C and 143 after SIGTERM (128 + 2, 128 + 15,
// as a shell reports a process a signal ended). These handlers are the only ones: System.CommandLine's
// own (ProcessTerminationTimeout) are off, since which of two handlers of one signal runs, and
// whether the second runs at all, is up to the runtime (a SIGTERM test saw 130 now and then).
// The coordinator handles both signals itself: the first ends the stream (CoordinatorStop). Any
// other command (simulate) keeps the default: a signal ends it at once.
var invocation = new InvocationConfiguration { ProcessTerminationTimeout = null };
bool cancellable = parse.CommandResult.Command.Name is "peer" or "demo" or "swarm";
using var stop = new CancellationTokenSource();
var forced = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
int firstSignal = 0;
long firstSignalAt = 0;
var signals = new Lock();
void OnSignal(PosixSignalContext context)
{
    // Handled here: the runtime must not end the process while the command stops.
    context.Cancel = true;
    int code = context.Signal == PosixSignal.SIGINT ? 130 : 143;
    lock (signals)
    {
        if (firstSignal != 0)
        {
            if (System.Diagnostics.Stopwatch.GetElapsedTime(firstSignalAt) >= CoordinatorStop.RepeatWindow) forced.TrySetResult(firstSignal);
            return;
        }
        (firstSignal, firstSignalAt) = (code, System.Diagnostics.Stopwatch.GetTimestamp());
    }
    // Off this thread (the runtime's signal thread): the token's callbacks run where it is cancelled.
    _ = stop.CancelAsync();
    _ = Task.Delay(CoordinatorStop.ProcessBound).ContinueWith(_ => forced.TrySetResult(code), TaskScheduler.Default);
}
using var sigint = cancellable ? PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal) : null;
using var sigterm = cancellable ? PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal) : null;
int exitCode = await await Task.WhenAny(parse.InvokeAsync(invocation, stop.Token), forced.Task);
int signal;
lock (signals) signal = firstSignal;
return exitCode == 130 && signal != 0 ? signal : exitCode;

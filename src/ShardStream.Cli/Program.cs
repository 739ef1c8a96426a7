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
var parse = root.Parse(args);
// Ctrl-C and SIGTERM cancel the command; a peer then hands its children over before it exits,
// which can take a few seconds, so the process is given that long. The coordinator handles them
// itself: the first one ends the stream (CoordinatorStop).
var invocation = new InvocationConfiguration { ProcessTerminationTimeout = parse.CommandResult.Command.Name == "coordinator" ? null : TimeSpan.FromSeconds(20) };
if (args.Length > 0 && parse.Errors.Count > 0)
{
    // A wrong flag or value: one line on stderr, as every other error, instead of the reason and
    // then the whole help on stdout, which carries a peer's stream (into a player).
    var reasons = parse.Errors.Select(CliErrors.Describe);
    Console.Error.WriteLine($"shardstream: error: {string.Join("; ", reasons)} (--help lists the flags)");
    return 1;
}
// A command cancelled by a signal returns 130 (CommonOptions.RunAsync); when the first signal was
// SIGTERM the process exits 143 instead, the shell's code for it (128 + 15), as the coordinator does
// (CoordinatorStop). These registrations only note which signal came first: System.CommandLine's
// own handlers cancel the command.
int firstSignal = 0;
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, _ => Interlocked.CompareExchange(ref firstSignal, 130, 0));
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, _ => Interlocked.CompareExchange(ref firstSignal, 143, 0));
int exitCode = await parse.InvokeAsync(invocation);
return exitCode == 130 && Volatile.Read(ref firstSignal) == 143 ? 143 : exitCode;

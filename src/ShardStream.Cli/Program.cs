using System.CommandLine;
using ShardStream.Cli;

var root = new RootCommand("ShardStream: BitTorrent for livestreams. One coordinator owns a live byte stream; peers relay it to each other through shard trees.");
root.Subcommands.Add(CoordinatorCommand.Create());
root.Subcommands.Add(PeerCommand.Create());
root.Subcommands.Add(DemoCommand.Create());
return await root.Parse(args).InvokeAsync();

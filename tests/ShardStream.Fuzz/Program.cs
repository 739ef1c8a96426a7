using ShardStream.Fuzz;
using ShardStream.Wire;
using SharpFuzz;

// shardstream-fuzz                  the afl++ target (run by afl-fuzz, input on stdin or a file)
// shardstream-fuzz replay FILE|DIR  checks each input once (at most 10 s: more is a hang) and prints what it held; exit 1 on a bug
// shardstream-fuzz seeds DIR        writes the hand-made seed corpus (one valid frame stream a file)
switch (args.FirstOrDefault())
{
    case null:
        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            byte[] input = copy.ToArray();
            FrameRoundTrip.Check(input);
            // The same bytes as a pipe hands them out: in pieces, so that reads cross segment ends.
            FrameRoundTrip.Check(input, segment: 7);
        });
        return 0;
    case "replay":
        return Replay.Run(args.Skip(1), Console.Out, TimeSpan.FromSeconds(10)) == 0 ? 0 : 1;
    case "seeds" when args.Length == 2:
        Directory.CreateDirectory(args[1]);
        foreach (var (name, bytes) in SeedCorpus.Frames())
            File.WriteAllBytes(Path.Combine(args[1], name), bytes);
        return 0;
    default:
        Console.Error.WriteLine("usage: shardstream-fuzz [replay FILE|DIR... | seeds DIR]");
        return 2;
}

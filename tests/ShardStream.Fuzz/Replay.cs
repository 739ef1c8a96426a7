namespace ShardStream.Fuzz;

/// <summary>
/// <c>shardstream-fuzz replay</c>: checks each input once (whole and in 7-byte segments, as the
/// fuzz target does) and says what it held, or the bug it found: an exception, or a hang (not done
/// within the limit; scripts/fuzz.sh gives afl-fuzz and the replay the same 10 s).
/// </summary>
public static class Replay
{
    /// <summary>Checks every file in <paramref name="paths"/> (a folder: its files, afl's README.txt left out); returns how many found a bug.</summary>
    public static int Run(IEnumerable<string> paths, TextWriter output, TimeSpan limit, Func<byte[], FrameRoundTrip.Counts>? check = null)
    {
        check ??= CheckBothWays;
        int bugs = 0;
        foreach (string path in paths.SelectMany(p => Directory.Exists(p) ? Directory.GetFiles(p).Order() : (IEnumerable<string>)[p]))
        {
            if (Path.GetFileName(path) == "README.txt") continue;
            byte[] input = File.ReadAllBytes(path);
            // On a thread of its own (a background one), so that an input that hangs the decoder,
            // as afl's hangs/ may hold, is reported after the limit and left behind: the replay
            // goes on, and the process can still exit.
            var run = Task.Factory.StartNew(() => check(input), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            try
            {
                if (!run.Wait(limit))
                {
                    bugs++;
                    output.WriteLine($"{path}: HANG: not done after {limit.TotalSeconds:0.###} s on {input.Length} bytes {Hex(input)}");
                    continue;
                }
                var counts = run.Result;
                output.WriteLine($"{path}: {input.Length} bytes, {counts.Frames} frames, {counts.Decoded} decoded, {counts.Rejected} rejected{(counts.ProtocolError ? ", then a protocol error" : "")}");
            }
            catch (AggregateException ex)
            {
                bugs++;
                output.WriteLine($"{path}: BUG on {input.Length} bytes {Hex(input)}");
                output.WriteLine(ex.InnerException!.ToString());
            }
        }
        return bugs;
    }

    private static FrameRoundTrip.Counts CheckBothWays(byte[] input)
    {
        var counts = FrameRoundTrip.Check(input);
        FrameRoundTrip.Check(input, segment: 7);
        return counts;
    }

    private static string Hex(byte[] input) => $"{Convert.ToHexString(input.AsSpan(0, Math.Min(input.Length, 256)))}{(input.Length > 256 ? "…" : "")}";
}

using ShardStream.Trust.Hashing;

namespace ShardStream.Bench.Integrity;

/// <summary>
/// <c>integrity --sizes</c>: BLAKE3 by input size, the Blake3 package (3.0.2, managed) against our
/// own (<see cref="Blake3Hash"/>) with each set of kernels this CPU runs, for the sizes a stream's
/// chunks have: n bytes, and n + 17 (a chunk frame's body: the 17-byte header, then the payload).
/// The same buffer hashed again and again, thread CPU time, median of 7.
/// </summary>
internal static class HashBySizeBenchmark
{
    public static void Run(Func<Action, int, double> median, bool sweep)
    {
        if (sweep)
        {
            Sweep(median);
            return;
        }
        int[] sizes = [1024, 1250, 2048, 4096, 8192, 12288, 16384, 65536];
        var kernels = Enum.GetValues<Blake3Kernels>().Where(Blake3Hash.IsSupported).Reverse().ToArray();
        Console.WriteLine($"BLAKE3 by input size, ns per byte (µs per call), thread CPU; ours by default with the {Blake3Hash.Best} kernels:");
        Console.WriteLine();
        Console.WriteLine($"| input bytes | package | {string.Join(" | ", kernels.Select(k => $"ours, {k}"))} | package / ours |");
        Console.WriteLine($"|---:|---:|{string.Concat(kernels.Select(_ => "---:|"))}---:|");
        var digest = new byte[32];
        foreach (int length in sizes.SelectMany(size => new[] { size, size + 17 }))
        {
            var input = new byte[length];
            new Random(length).NextBytes(input);
            int iterations = Math.Max(200, 20_000_000 / length);
            double package = median(() => Blake3.Hasher.Hash(input, digest), iterations);
            var ours = kernels.Select(k => median(() => Blake3Hash.Hash(input, digest, k), k == Blake3Kernels.Portable ? Math.Max(50, iterations / 10) : iterations)).ToArray();
            string Cell(double seconds) => $"{seconds / length * 1e9:0.000} ({seconds * 1e6:0.00})";
            Console.WriteLine($"| {length} | {Cell(package)} | {string.Join(" | ", ours.Select(Cell))} | {package / ours[0]:0.00}× |");
        }
    }

    /// <summary>Chunk bodies of every whole KiB of payload up to 64 KiB (+17): which of the two is faster where.</summary>
    private static void Sweep(Func<Action, int, double> median)
    {
        Console.WriteLine("BLAKE3 of chunk bodies (payload + 17 bytes), µs per call, thread CPU: the package, ours, package / ours");
        var digest = new byte[32];
        for (int kib = 1; kib <= 64; kib++)
        {
            int length = kib * 1024 + 17;
            var input = new byte[length];
            new Random(length).NextBytes(input);
            int iterations = Math.Max(200, 10_000_000 / length);
            double package = median(() => Blake3.Hasher.Hash(input, digest), iterations);
            double ours = median(() => Blake3Hash.Hash(input, digest), iterations);
            Console.WriteLine($"{length,6} {package * 1e6,7:0.00} {ours * 1e6,7:0.00} {package / ours,5:0.00}×");
        }
    }
}

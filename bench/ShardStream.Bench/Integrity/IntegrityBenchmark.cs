using System.Diagnostics;
using System.Security.Cryptography;
using NSec.Cryptography;

namespace ShardStream.Bench.Integrity;

/// <summary>
/// <c>integrity</c>: what authenticating the stream costs a receiver per byte, for the candidates
/// of docs/security.md: an Ed25519 signature per chunk (RFC 7574 §6.1.3 "sign all", over a hash of
/// the chunk, since Ed25519 would otherwise run SHA-512 over the whole payload), and a signed hash
/// list per batch of chunks (RFC 7574 §6.1.2, hash lists rather than Merkle trees: every child
/// receives every chunk of its shard, so no uncle hashes are ever needed), with SHA-256 or BLAKE3.
/// A plain loop on one thread, median of 7 rounds, timed in the thread's own CPU time
/// (CLOCK_THREAD_CPUTIME_ID), so that a busy machine stretches the wall clock but not the figure;
/// figures go to docs/performance.md.
/// </summary>
internal static partial class IntegrityBenchmark
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out TimeSpec time);

    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    /// <summary>CPU seconds this thread has used (Linux); falls back to the wall clock elsewhere.</summary>
    private static double ThreadCpuSeconds()
    {
        if (OperatingSystem.IsLinux() && ClockGetTime(3, out var t) == 0) return t.Seconds + t.Nanoseconds / 1e9;
        return Stopwatch.GetTimestamp() / (double)Stopwatch.Frequency;
    }

    public static int Run(string[] args)
    {
        int[] sizes = [65536, 16384, 1400];
        if (args.Contains("--placement"))
        {
            Console.WriteLine($"integrity --placement, one thread, thread CPU time; load average at the start: {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
            HashPlacementBenchmark.Run(Median, ThreadCpuSeconds);
            Console.WriteLine($"load average at the end: {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
            return 0;
        }
        if (args.Contains("--sizes"))
        {
            Console.WriteLine($"integrity --sizes, one thread, thread CPU time; load average at the start: {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
            HashBySizeBenchmark.Run(Median, args.Contains("--sweep"));
            Console.WriteLine($"load average at the end: {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
            return 0;
        }
        var key = Key.Create(SignatureAlgorithm.Ed25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None });
        var pub = key.PublicKey;
        Console.WriteLine($"integrity micro-benchmark, one thread, thread CPU time; load average at the start: {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
        Console.WriteLine($"CPU flags: sha_ni {File.ReadAllText("/proc/cpuinfo").Contains(" sha_ni")}, avx512f {System.Runtime.Intrinsics.X86.Avx512F.IsSupported}");
        var msg = new byte[32];
        var sig = SignatureAlgorithm.Ed25519.Sign(key, msg);
        double signUs = Median(() => SignatureAlgorithm.Ed25519.Sign(key, msg), 2000) * 1e6;
        double verifyUs = Median(() => SignatureAlgorithm.Ed25519.Verify(pub, msg, sig), 2000) * 1e6;
        Console.WriteLine($"Ed25519 (NSec/libsodium) over 32 bytes: sign {signUs:0.0} µs, verify {verifyUs:0.0} µs");
        Console.WriteLine();
        Console.WriteLine("| chunk bytes | SHA-256 ns/B | BLAKE3 ns/B | sign-all verify ns/B (BLAKE3 + Ed25519) | batch of 32: verify ns/B (BLAKE3 + 1/32 Ed25519) | wire: sign-all | wire: batch of 32 |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|");
        foreach (int size in sizes)
        {
            var payload = new byte[size];
            new Random(1).NextBytes(payload);
            var digest = new byte[32];
            double sha = Median(() => SHA256.HashData(payload, digest), Math.Max(200, 20_000_000 / size)) / size * 1e9;
            double blake = Median(() => Blake3.Hasher.Hash(payload, digest), Math.Max(200, 20_000_000 / size)) / size * 1e9;
            double signAll = blake + verifyUs * 1000 / size;
            double batch = blake + verifyUs * 1000 / size / 32;
            int frame = 5 + 17 + size;
            Console.WriteLine($"| {size} | {sha:0.00} | {blake:0.00} | {signAll:0.00} | {batch:0.00} | {64.0 / frame:P2} | {(32 + (64 + 30) / 32.0) / frame:P2} |");
        }
        Console.WriteLine();
        VerifierPathBenchmark.Run(Median);
        Console.WriteLine();
        HashPlacementBenchmark.Run(Median, ThreadCpuSeconds);
        Console.WriteLine();
        Console.WriteLine($"load average at the end: {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
        return 0;
    }

    private static double Median(Action action, int iterations)
    {
        var rounds = new double[7];
        for (int r = 0; r < rounds.Length; r++)
        {
            double start = ThreadCpuSeconds();
            for (int i = 0; i < iterations; i++) action();
            rounds[r] = (ThreadCpuSeconds() - start) / iterations;
        }
        Array.Sort(rounds);
        return rounds[rounds.Length / 2];
    }
}

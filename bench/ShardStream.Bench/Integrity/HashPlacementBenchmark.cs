using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using ShardStream.Trust;

namespace ShardStream.Bench.Integrity;

/// <summary>
/// <c>integrity</c>, third table: what the chunk hash costs depending on where its bytes are. The
/// first table hashes one buffer over and over (in the cache); a peer hashes a chunk body that the
/// kernel has just copied out of a loopback socket into a receive buffer, as <c>Peer.OnParentFrame</c>
/// does. Three cases per size: the same buffer again and again ("hot"), a fresh place of a 64 MiB
/// buffer each time ("cold": the bytes come from memory), and the body just received from a
/// loopback TCP connection fed by another thread, into the next place of a 4 MiB region (as a
/// receive slab is filled; "after a receive"). Thread CPU time of the hash call alone.
/// </summary>
internal static class HashPlacementBenchmark
{
    public static void Run(Func<Action, int, double> median, Func<double> threadCpuSeconds)
    {
        int[] sizes = [65536, 16384, 4096];
        Console.WriteLine("The chunk hash by where the bytes are (ChunkHash.ComputeBody = BLAKE3 of the 17-byte header and the payload; SHA-256 of the same bytes for comparison), ns per byte, thread CPU:");
        Console.WriteLine();
        Console.WriteLine("| chunk payload bytes | BLAKE3 hot | BLAKE3 cold (64 MiB sweep) | BLAKE3 after a loopback receive | SHA-256 hot | SHA-256 after a loopback receive |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|");
        foreach (int size in sizes)
        {
            int body = size + 17;
            var hot = new byte[body];
            new Random(1).NextBytes(hot);
            var digest = new byte[32];
            int iterations = Math.Max(200, 20_000_000 / body);
            double blakeHot = median(() => ChunkHash.ComputeBody(hot, digest), iterations) / body * 1e9;
            double shaHot = median(() => SHA256.HashData(hot, digest), iterations) / body * 1e9;
            var sweep = new byte[64 << 20];
            new Random(2).NextBytes(sweep);
            int place = 0;
            double blakeCold = median(() =>
            {
                if (place + body > sweep.Length) place = 0;
                ChunkHash.ComputeBody(sweep.AsSpan(place, body), digest);
                place += body + 64;
            }, iterations) / body * 1e9;
            double blakeReceived = AfterReceive(body, 4000, (span, d) => ChunkHash.ComputeBody(span, d), threadCpuSeconds);
            double shaReceived = AfterReceive(body, 4000, (span, d) => SHA256.HashData(span, d), threadCpuSeconds);
            Console.WriteLine($"| {size} | {blakeHot:0.000} | {blakeCold:0.000} | {blakeReceived:0.000} | {shaHot:0.000} | {shaReceived:0.000} |");
        }
    }

    private delegate void Hash(ReadOnlySpan<byte> data, Span<byte> digest);

    /// <summary>Mean thread CPU per byte of <paramref name="hash"/> over bodies just received from loopback TCP (the first quarter skipped).</summary>
    private static double AfterReceive(int body, int count, Hash hash, Func<double> threadCpuSeconds)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var sender = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        sender.Connect(listener.LocalEndPoint!);
        using var receiver = listener.Accept();
        var source = new byte[body];
        new Random(3).NextBytes(source);
        var feeding = new Thread(() =>
        {
            for (int i = 0; i < count; i++)
                for (int sent = 0; sent < body;) sent += sender.Send(source, sent, body - sent, SocketFlags.None);
        }) { IsBackground = true };
        feeding.Start();
        var region = GC.AllocateUninitializedArray<byte>(4 << 20, pinned: true);
        var digest = new byte[32];
        double cpu = 0;
        long measured = 0;
        int at = 0;
        for (int i = 0; i < count; i++)
        {
            if (at + body > region.Length) at = 0;
            for (int got = 0; got < body;) got += receiver.Receive(region, at + got, body - got, SocketFlags.None);
            double start = threadCpuSeconds();
            hash(region.AsSpan(at, body), digest);
            if (i >= count / 4)
            {
                cpu += threadCpuSeconds() - start;
                measured++;
            }
            at += body;
        }
        feeding.Join();
        return cpu / (measured * (double)body) * 1e9;
    }
}

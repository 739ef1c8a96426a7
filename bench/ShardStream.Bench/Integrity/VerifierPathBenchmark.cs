using System.Buffers;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Bench.Integrity;

/// <summary>
/// <c>integrity</c>, second table: what a peer's checks cost per byte as the node runs them, not
/// as the candidates were estimated: a Hashes frame parsed from its bytes, its signature verified
/// and its hashes kept (<see cref="StreamVerifier.AddHashList"/>), the frame encoded again for the
/// children (as <c>Peer.OnParentFrame</c> does), then each chunk frame's body checked
/// (<see cref="StreamVerifier.VerifyChunk"/>). And the exact bytes the signed stream adds on the
/// wire: the Hashes frame, from the encoder, over the chunks' payload. Thread CPU time, so a busy
/// machine stretches the wall clock but not the figure.
/// </summary>
internal static class VerifierPathBenchmark
{
    public static void Run(Func<Action, int, double> median)
    {
        int[] sizes = [1250, 4096, 16384, 65536];
        int[] listLengths = [1, 2, 8, 16, 32];
        using var key = StreamSigner.CreateEphemeral();
        var signer = key.ForRun(StreamRun.NewId());
        Console.WriteLine("The peer's checks as the node runs them (parse + verify + keep the hash list, copy its frame for the children, check each chunk), and the signed stream's bytes on the wire:");
        Console.WriteLine();
        Console.WriteLine("| chunk payload bytes | chunks per hash list | CPU ns per byte verified | CPU µs per chunk | wire: Hashes frame bytes per list | wire overhead (Hashes frames / payload) |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|");
        foreach (int size in sizes)
        {
            foreach (int n in listLengths)
            {
                if ((long)size * n > 4L << 20) continue;
                var (listFrame, bodies) = Build(signer, size, n);
                var verifier = new StreamVerifier(signer.Run, 1);
                int iterations = Math.Max(20, 4_000_000 / (size * n));
                double seconds = median(() =>
                {
                    // The frame's body as it arrives (after the length and type).
                    var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(listFrame, Protocol.FrameHeaderLength, listFrame.Length - Protocol.FrameHeaderLength));
                    if (!HashList.TryRead(ref reader, out var list)) throw new InvalidOperationException("malformed list");
                    // Each round checks the same chunks again: the verifier takes the list's hashes afresh.
                    verifier.AddHashList(list, 0);
                    _ = FrameWriting.FromBody(FrameType.Hashes, new ReadOnlySequence<byte>(listFrame, Protocol.FrameHeaderLength, listFrame.Length - Protocol.FrameHeaderLength));
                    for (int i = 0; i < n; i++)
                    {
                        var body = new ReadOnlySequence<byte>(bodies[i]);
                        ChunkHeader.TryRead(body, out var header, out _);
                        verifier.VerifyChunk(header, body); // throws unless the chunk matches its signed hash
                    }
                }, iterations);
                double perByte = seconds / ((double)size * n) * 1e9;
                Console.WriteLine($"| {size} | {n} | {perByte:0.00} | {seconds / n * 1e6:0.00} | {listFrame.Length} | {listFrame.Length / ((double)size * n):P2} |");
            }
        }
    }

    /// <summary>A signed Hashes frame for <paramref name="n"/> chunks of <paramref name="size"/> random bytes, and the chunks' frame bodies.</summary>
    private static (byte[] ListFrame, byte[][] Bodies) Build(RunSigner signer, int size, int n)
    {
        var random = new Random(size * 31 + n);
        var bodies = new byte[n][];
        var hashes = new byte[n * Protocol.HashLength];
        for (int i = 0; i < n; i++)
        {
            var payload = new byte[size];
            random.NextBytes(payload);
            var frame = FrameWriting.ToArray(w => new ChunkHeader(0, (ulong)i, (ulong)i * (ulong)size).Write(w, payload));
            bodies[i] = frame[Protocol.FrameHeaderLength..];
            ChunkHash.ComputeBody(bodies[i], hashes.AsSpan(i * Protocol.HashLength, Protocol.HashLength));
        }
        var list = signer.SignHashList(0, 0, hashes);
        return (FrameWriting.ToArray(list.Write), bodies);
    }
}

namespace ShardStream.IntegrationTests;

/// <summary>
/// A live H.264/AAC stream from the real ffmpeg into the coordinator's stdin, relayed down a chain
/// of peers; a viewer that joins about 5 s in (once the chain has written 800 kB), four hops down, must decode from its first byte: no
/// missing parameter sets, no undecodable frame (issue 11). The source ends once that viewer has written about 5 s of it.
/// </summary>
[Collection(CliCollection.Name)]
public sealed class MediaLateJoinTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(2);

    [Theory]
    [InlineData("mpegts")]
    [InlineData("flv")]
    public async Task A_late_joiner_four_hops_down_decodes_from_its_first_byte(string muxer)
    {
        if (RequiresTool.Missing(output, MediaTools.Missing())) return;
        string dir = Directory.CreateTempSubdirectory("ss-media-").FullName;
        try
        {
            // Upload 1 everywhere: a chain, coordinator -> P1 -> P2 -> P3 -> late joiner, in join
            // order (latency-aware placement may exchange places on loopback, see docs/topology.md).
            await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "--upload", "1", "--min-peers", "3", "--latency-aware", "false");
            string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(30));
            var chain = new List<CliProcess>();
            try
            {
                for (int i = 0; i < 3; i++)
                {
                    var peer = CliProcess.Start("peer", "-c", address, "-l", "127.0.0.1:0", "--upload", "1");
                    chain.Add(peer);
                    // One at a time, so that each goes under the one before.
                    await WaitForLineAsync(peer, "joined as peer", TimeSpan.FromSeconds(60));
                }
                // The live source goes on until the late joiner has written about 5 s of it, however
                // late a loaded machine starts the joiner (a 10 s source ended under a joiner started
                // 6 s late), and then ends cleanly.
                var (ffmpeg, pump) = MediaTools.Pipe(MediaTools.LiveSourceArgs(muxer, MediaTools.UntilEnded), coordinator.StandardInput);
                using var _ = ffmpeg;
                await WaitForLineAsync(coordinator, "streaming", TimeSpan.FromSeconds(60));
                await MediaTools.WaitForStreamBytesAsync(chain[^1], MediaTools.FiveSecondsOfStream, TimeSpan.FromSeconds(60));
                string late = Path.Combine(dir, "late." + muxer);
                await using var joiner = CliProcess.StartCapturing(late, "peer", "-c", address, "-l", "127.0.0.1:0", "--upload", "0");
                await MediaTools.WaitForStreamBytesAsync(joiner, MediaTools.FiveSecondsOfStream, Deadline);
                await MediaTools.EndSourceAsync(ffmpeg);
                await pump;

                var (exit, _) = await joiner.WaitForExitAsync(Deadline);
                Assert.True(exit == 0, $"the late joiner exited with {exit}:\n{joiner.Stderr}");
                Assert.Contains("joined as peer 4", joiner.Stderr);
                Assert.Contains(coordinator.StderrLines, l => l.Contains("peer 4 (", StringComparison.Ordinal) && l.Contains("shard 0 from peer 3", StringComparison.Ordinal));
                var (decodeExit, errors) = MediaTools.Decode(late);
                Assert.True(decodeExit == 0 && errors.Length == 0, $"ffmpeg could not decode the late joiner's output from its first byte (exit {decodeExit}):\n{errors}\n{joiner.Stderr}");
                Assert.Contains("stream header", joiner.Stderr);
                // Joined about 5 s in, and had about 5 s when the source ended: seconds of pictures, all decoded.
                int frames = MediaTools.CountVideoFrames(late);
                output.WriteLine($"{muxer}: the late joiner wrote {new FileInfo(late).Length} bytes, {frames} video frames");
                Assert.True(frames >= 90, $"ffprobe decoded {frames} video frames from the late joiner's output");
                var first = File.ReadAllBytes(late).AsSpan(0, 4).ToArray();
                if (muxer == "flv") Assert.Equal("FLV\u0001"u8.ToArray(), first);
                else Assert.Equal([0x47, 0x40, 0x00], first[..3]); // a PAT packet

                foreach (var peer in chain)
                {
                    var (peerExit, _) = await peer.WaitForExitAsync(Deadline);
                    Assert.True(peerExit == 0, $"a chain peer exited with {peerExit}:\n{peer.Stderr}");
                }
                Assert.Equal(0, (await coordinator.WaitForExitAsync(Deadline)).ExitCode);
            }
            finally
            {
                foreach (var p in chain) await p.DisposeAsync();
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static async Task WaitForLineAsync(CliProcess process, string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!process.StderrLines.Any(l => l.Contains(text, StringComparison.Ordinal)))
        {
            if (DateTime.UtcNow > deadline || process.HasExited) throw new TimeoutException($"no '{text}' line within {timeout}:\n{process.Stderr}");
            await Task.Delay(50);
        }
    }
}

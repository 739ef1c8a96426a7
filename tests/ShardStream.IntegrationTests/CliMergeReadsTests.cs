using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// <c>coordinator --merge-reads</c> through the real CLI: a live source that writes small records
/// (1,250 bytes, one write each, about one a millisecond) reaches two peers (one below the other)
/// byte for byte, and the coordinator reports how many chunks it cut them into.
/// </summary>
[Collection(BesideCliCollection.Name)]
public sealed partial class CliMergeReadsTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(2);

    [Fact]
    public async Task Small_records_merged_into_chunks_reach_every_peer_intact()
    {
        const int records = 3000, size = 1250;
        var source = new byte[records * size];
        new Random(21).NextBytes(source);
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "--upload", "1", "--min-peers", "2", "--merge-reads");
        string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(60));
        await using var a = CliProcess.Start("peer", "-c", address, "-l", "127.0.0.1:0", "--upload", "1");
        await using var b = CliProcess.Start("peer", "-c", address, "-l", "127.0.0.1:0", "--upload", "0");

        // The source is held until both peers are attached (--min-peers 2); then a record about every millisecond.
        long t0 = Stopwatch.GetTimestamp();
        for (int i = 0; i < records; i++)
        {
            var wait = TimeSpan.FromMilliseconds(i) - Stopwatch.GetElapsedTime(t0);
            if (wait > TimeSpan.FromMilliseconds(1)) await Task.Delay(wait);
            await coordinator.StandardInput.WriteAsync(source.AsMemory(i * size, size));
            await coordinator.StandardInput.FlushAsync();
        }
        coordinator.StandardInput.Close();

        var (coordinatorExit, _) = await coordinator.WaitForExitAsync(Deadline);
        var (aExit, aSha) = await a.WaitForExitAsync(Deadline);
        var (bExit, bSha) = await b.WaitForExitAsync(Deadline);
        string expected = Convert.ToHexStringLower(SHA256.HashData(source));
        Assert.True(coordinatorExit == 0, $"coordinator exited with {coordinatorExit}:\n{coordinator.Stderr}");
        Assert.True(aExit == 0 && aSha == expected, $"A exited with {aExit}, wrote {a.StdoutBytes} bytes:\n{a.Stderr}");
        Assert.True(bExit == 0 && bSha == expected, $"B exited with {bExit}, wrote {b.StdoutBytes} bytes:\n{b.Stderr}");
        Assert.DoesNotContain(a.StderrLines.Concat(b.StderrLines), l => l.Contains("bad data", StringComparison.Ordinal));

        var m = coordinator.StderrLines.Select(l => StreamRegex().Match(l)).FirstOrDefault(x => x.Success);
        Assert.True(m is not null, $"no 'the stream: N bytes in C chunks' line:\n{coordinator.Stderr}");
        Assert.Equal(source.Length, long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        long chunks = long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
        Assert.InRange(chunks, 1, records);
    }

    [GeneratedRegex(@"the stream: (\d+) bytes in (\d+) chunks")]
    private static partial Regex StreamRegex();
}

using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The README's "Checking that you watch the right stream", through the real CLI on 127.0.0.1:
/// <c>--key FILE</c> is created with mode 0600 and keeps the stream address across restarts (with a
/// new run each time), and a key file others may read is warned of at start; a viewer given another
/// address with <c>--stream</c> exits 1 with "the coordinator at A is not stream Y, the stream asked
/// for: it proved it holds the key of stream X", and the coordinator refuses it without placing it;
/// a viewer given the right one, and one given none (which logs "pinned stream …"), write the exact stream.
/// </summary>
[Collection(BesideCliCollection.Name)]
public sealed partial class CliStreamKeyTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(2);
    private readonly string _dir = Directory.CreateTempSubdirectory("shardstream-key-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_key_file_keeps_the_stream_address_and_a_viewer_joins_only_the_stream_it_names()
    {
        string keyFile = Path.Combine(_dir, "stream.key");

        // First run: the key is created; nothing is streamed.
        string firstAddress, firstRun;
        await using (var first = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "--key", keyFile))
        {
            first.StandardInput.Close();
            var (exit, _) = await first.WaitForExitAsync(Deadline);
            Assert.True(exit == 0, $"the first coordinator exited with {exit}:\n{first.Stderr}");
            Assert.Contains(first.StderrLines, l => l.Contains($"created a new stream key in {keyFile} (mode 0600)", StringComparison.Ordinal));
            (firstAddress, firstRun) = StreamAddress(first);
            Assert.DoesNotContain(first.StderrLines, l => l.Contains("is readable by others", StringComparison.Ordinal));
        }
        if (!OperatingSystem.IsWindows()) Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keyFile));
        // Others of its group may now read it: the next start says so, once.
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(keyFile, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);

        // Second run with the same key: the same address, a new run, and the key is not made again.
        var source = new byte[4 << 20];
        new Random(5).NextBytes(source);
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "--key", keyFile, "--min-peers", "2");
        string listen = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(30));
        await WaitUntilAsync(() => coordinator.StderrLines.Any(l => StreamAddressRegex().IsMatch(l)), () => $"no stream address logged:\n{coordinator.Stderr}");
        var (address, run) = StreamAddress(coordinator);
        Assert.Equal(firstAddress, address);
        Assert.NotEqual(firstRun, run);
        Assert.DoesNotContain(coordinator.StderrLines, l => l.Contains("created a new stream key", StringComparison.Ordinal));
        Assert.Contains(coordinator.StderrLines, l => l.Contains($"shardstream peer -c {listen} --stream {address}", StringComparison.Ordinal));
        if (!OperatingSystem.IsWindows())
            Assert.Single(coordinator.StderrLines, l => l.Contains($"the stream key file {keyFile} is readable by others (mode 0640): whoever reads it can sign as this stream: chmod 600 {keyFile}", StringComparison.Ordinal));

        // A viewer that asks for another stream.
        string other = OtherAddress(address);
        await using (var wrong = CliProcess.Start("peer", "-c", listen, "--stream", other))
        {
            var (exit, _) = await wrong.WaitForExitAsync(Deadline);
            Assert.True(exit == 1, $"the viewer of another stream exited with {exit}:\n{wrong.Stderr}");
            Assert.Equal(0, wrong.StdoutBytes);
            var errors = wrong.StderrLines.Where(l => l.StartsWith("shardstream: error:", StringComparison.Ordinal)).ToList();
            Assert.True(errors.Count == 1, $"expected one error line:\n{wrong.Stderr}");
            Assert.EndsWith($"the coordinator at {listen} is not stream {other}, the stream asked for: it proved it holds the key of stream {address}", errors[0]);
        }
        // Refused before it was placed (it would have been peer 1): one line says so, and nobody joined.
        await WaitUntilAsync(() => coordinator.StderrLines.Any(l => l.Contains($"asked for stream {other}, not ours ({address}): refused, no placement", StringComparison.Ordinal)),
            () => $"the coordinator did not say it refused the viewer of another stream:\n{coordinator.Stderr}");
        Assert.DoesNotContain(coordinator.StderrLines, l => l.Contains(") joined at offset", StringComparison.Ordinal));

        // The right address, and none: both write the exact stream; the second logs what it pinned.
        await using var named = CliProcess.Start("peer", "-c", listen, "--stream", address);
        await using var pinning = CliProcess.Start("peer", "-c", listen);
        await coordinator.StandardInput.WriteAsync(source);
        coordinator.StandardInput.Close();
        var (coordinatorExit, _) = await coordinator.WaitForExitAsync(Deadline);
        Assert.True(coordinatorExit == 0, $"coordinator exited with {coordinatorExit}:\n{coordinator.Stderr}");
        string expected = Convert.ToHexStringLower(SHA256.HashData(source));
        foreach (var (viewer, name) in new[] { (named, "--stream"), (pinning, "no --stream") })
        {
            var (exit, sha) = await viewer.WaitForExitAsync(Deadline);
            Assert.True(exit == 0, $"the viewer with {name} exited with {exit}:\n{viewer.Stderr}");
            Assert.True(expected == sha, $"the viewer with {name} wrote {viewer.StdoutBytes} of {source.Length} bytes, not the source:\n{viewer.Stderr}");
        }
        Assert.Contains(pinning.StderrLines, l => l.Contains($"pinned stream {address}", StringComparison.Ordinal));
        Assert.DoesNotContain(named.StderrLines, l => l.Contains("pinned stream", StringComparison.Ordinal));
    }

    /// <summary>The address of another key: RFC 8032's first Ed25519 test vector's public key.</summary>
    private static string OtherAddress(string address)
    {
        const string other = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        Assert.NotEqual(other, address);
        return other;
    }

    private static (string Address, string Run) StreamAddress(CliProcess coordinator)
    {
        var m = coordinator.StderrLines.Select(l => StreamAddressRegex().Match(l)).FirstOrDefault(m => m.Success);
        Assert.True(m is not null, $"no stream address logged:\n{coordinator.Stderr}");
        return (m.Groups[1].Value, m.Groups[2].Value);
    }

    private static Task WaitUntilAsync(Func<bool> condition, Func<string> describe) => Poll.UntilAsync(condition, Deadline, describe);

    [GeneratedRegex(@"stream address ([0-9a-f]{64}), run ([0-9a-f]+);")]
    private static partial Regex StreamAddressRegex();
}

using System.Diagnostics;
using System.Text.Json;

namespace ShardStream.IntegrationTests;

/// <summary><c>shardstream simulate --latency ... --json</c> through the real CLI.</summary>
[Collection(CliCollection.Name)]
public sealed class CliSimulateLatencyTests
{
    private static (int Exit, string Stdout, string Stderr) Run(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(CliProcess.CliDll);
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(3)), "simulate did not finish in 3 minutes");
        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public void Json_output_is_one_object_with_every_figure_and_both_planners()
    {
        var (exit, stdout, stderr) = Run("simulate", "--peers", "2000", "--topology", "striped", "--shards", "8", "--upload", "1.25", "--latency", "world", "--seed", "2", "--fail-branch", "0.1", "--json");

        Assert.True(exit == 0, stderr);
        using var json = JsonDocument.Parse(stdout); // the whole of stdout: nothing else is printed there
        var root = json.RootElement;
        Assert.Equal(2000, root.GetProperty("peers").GetInt32());
        Assert.Equal(8, root.GetProperty("shardDepths").GetArrayLength());
        Assert.Equal(0, root.GetProperty("peersOverBudget").GetInt32());
        Assert.True(root.GetProperty("joinsPerSecond").GetDouble() > 0);
        Assert.True(root.GetProperty("branchFailure").GetProperty("peersFailed").GetInt32() > 0);
        Assert.StartsWith("world", root.GetProperty("latencyModel").GetString(), StringComparison.Ordinal);
        foreach (var name in new[] { "latencyAware", "latencyBlind" })
        {
            var l = root.GetProperty(name);
            foreach (var field in new[] { "maxDepth", "meanEdgeRttMs", "p95EdgeRttMs", "meanSourceDelayMs", "p95SourceDelayMs", "meanRdp", "pingsPerJoin" })
            {
                Assert.True(l.TryGetProperty(field, out _), $"{name}.{field} missing");
            }
        }

        var aware = root.GetProperty("latencyAware");
        var blind = root.GetProperty("latencyBlind");
        Assert.InRange(aware.GetProperty("pingsPerJoin").GetDouble(), 1, 16);
        Assert.Equal(0, blind.GetProperty("pingsPerJoin").GetDouble());
        Assert.True(aware.GetProperty("meanSourceDelayMs").GetDouble() < blind.GetProperty("meanSourceDelayMs").GetDouble());
    }

    [Fact]
    public void A_matrix_file_is_read_and_a_bad_one_refused_with_the_reason()
    {
        var good = Path.Combine(Path.GetTempPath(), $"shardstream-matrix-{Guid.NewGuid():N}.csv");
        var bad = Path.Combine(Path.GetTempPath(), $"shardstream-matrix-{Guid.NewGuid():N}.csv");
        File.WriteAllText(good, "3\n0,20,-1\n20,0,90\n-1,90,0\n");
        File.WriteAllText(bad, "3\n0,20\n20,0,90\n-1,90,0\n");
        try
        {
            var (exit, stdout, stderr) = Run("simulate", "--peers", "300", "--shards", "4", "--latency", $"matrix:{good}", "--json");
            Assert.True(exit == 0, stderr);
            using var json = JsonDocument.Parse(stdout);
            Assert.Contains("3 hosts, 1 pair filled by a path", json.RootElement.GetProperty("latencyModel").GetString(), StringComparison.Ordinal);

            (exit, stdout, stderr) = Run("simulate", "--peers", "300", "--latency", $"matrix:{bad}");
            Assert.Equal(1, exit);
            Assert.Equal("", stdout);
            Assert.Contains($"shardstream: error: --latency: {bad}: line 2: 3 comma-separated RTTs expected, got 2", stderr, StringComparison.Ordinal);

            (exit, _, stderr) = Run("simulate", "--peers", "300", "--latency", "moon");
            Assert.Equal(1, exit);
            Assert.Contains("shardstream: error: --latency: unknown latency model 'moon': use none, world or matrix:FILE", stderr, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(good);
            File.Delete(bad);
        }
    }
}

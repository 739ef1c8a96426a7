namespace ShardStream.IntegrationTests;

/// <summary>
/// The install path a user takes with .NET present (docs/install.md): <c>dotnet pack</c> makes the
/// .NET tool, <c>dotnet tool install</c> installs it from that directory, and the installed
/// <c>shardstream</c> runs a demo whose peers all write the source's bytes. (The one-file builds of
/// <c>scripts/package.sh</c> take minutes and are measured there, not here.)
/// </summary>
/// <remarks>The pack is a Release build, most of this test's minute: it runs beside the
/// one-at-a-time CLI tests (<see cref="BesideCliCollection"/>) instead of adding to them.</remarks>
[Collection(BesideCliCollection.Name)]
public sealed class PackageTests
{
    /// <summary>
    /// A bound against a hang, not a timing: the pack (a Release build of the tool and its library)
    /// takes about a minute on a quiet 2-core machine and took more than 5 at load average 20-50
    /// (ci125, with other builds beside it), where the old 5-minute bound failed the test.
    /// </summary>
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(15);

    [Fact]
    public void Packed_tool_installs_and_streams()
    {
        var repo = RepositoryRoot();
        var scratch = Directory.CreateTempSubdirectory("shardstream-pack-");
        try
        {
            var packages = Path.Combine(scratch.FullName, "packages");
            var tools = Path.Combine(scratch.FullName, "tools");
            var pack = RequiresTool.Run("dotnet", ["pack", Path.Combine(repo, "src", "ShardStream.Cli"), "-c", "Release", "-o", packages], Deadline);
            Assert.True(pack.ExitCode == 0, $"dotnet pack {(pack.TimedOut ? $"did not finish within {Deadline.TotalMinutes} min" : "failed")}:\n{pack.Stdout}\n{pack.Stderr}");
            var nupkg = Assert.Single(Directory.GetFiles(packages, "shardstream.*.nupkg"));

            var install = RequiresTool.Run("dotnet", ["tool", "install", "--tool-path", tools, "shardstream", "--add-source", packages], Deadline);
            Assert.True(install.ExitCode == 0, $"dotnet tool install of {Path.GetFileName(nupkg)} {(install.TimedOut ? $"did not finish within {Deadline.TotalMinutes} min" : "failed")}:\n{install.Stdout}\n{install.Stderr}");

            var demo = RequiresTool.Run(Path.Combine(tools, "shardstream"), ["demo", "--peers", "3", "--mib", "1"], Deadline);
            Assert.True(demo.ExitCode == 0 && !demo.TimedOut, $"the installed tool's demo failed:\n{demo.Stdout}\n{demo.Stderr}");
            Assert.Contains("3/3 peers identical", demo.Stdout + demo.Stderr);
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "ShardStream.slnx"))) return dir.FullName;
        }
        throw new InvalidOperationException($"no ShardStream.slnx above {AppContext.BaseDirectory}");
    }
}

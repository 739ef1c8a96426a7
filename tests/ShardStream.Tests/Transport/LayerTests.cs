using System.Text.RegularExpressions;

namespace ShardStream.Tests.Transport;

/// <summary>
/// The layer rule of docs/architecture.md, checked on the sources: the byte level of Transport uses
/// no other folder of the library; the framed connection may use Wire's frames and Streaming's
/// chunks but nothing of Nodes or above; Wire, Streaming and Trust never use the framed connection
/// or anything of Nodes.
/// </summary>
public class LayerTests
{
    /// <summary>The framed connection: framing, batching and close (may use Wire and Streaming).</summary>
    private static readonly string[] Framed = ["FramedConnection.cs", "FirstFrame.cs", "CloseReason.cs", "ConnectionLog.cs"];

    [Fact]
    public void The_byte_level_of_Transport_uses_no_other_folder_of_the_library()
    {
        foreach (var file in SourcesOf("Transport").Where(f => !Framed.Contains(Path.GetFileName(f))))
            Assert.True(Uses(file, "Wire", "Streaming", "Trust", "Nodes", "Topology", "Media", "Rtmp", "Simulation") is not { } used,
                $"{Path.GetFileName(file)} is byte-level Transport but uses {Uses(file, "Wire", "Streaming", "Trust", "Nodes", "Topology", "Media", "Rtmp", "Simulation")}");
    }

    [Fact]
    public void The_framed_connection_knows_frames_but_nothing_of_nodes()
    {
        foreach (var name in Framed)
        {
            string file = Path.Combine(LibraryRoot(), "Transport", name);
            Assert.True(File.Exists(file), $"{name} is named in docs/architecture.md as the framed connection but does not exist");
            Assert.True(Uses(file, "Nodes", "Topology", "Media", "Rtmp", "Simulation", "Trust") is null,
                $"{name} is the framed connection but uses {Uses(file, "Nodes", "Topology", "Media", "Rtmp", "Simulation", "Trust")}");
        }
    }

    [Theory]
    [InlineData("Wire")]
    [InlineData("Streaming")]
    [InlineData("Trust")]
    public void Lower_layers_use_nothing_of_nodes_nor_the_framed_connection(string folder)
    {
        foreach (var file in SourcesOf(folder))
        {
            Assert.True(Uses(file, "Nodes", "Topology", "Media", "Rtmp", "Simulation") is null, $"{folder}/{Path.GetFileName(file)} uses {Uses(file, "Nodes", "Topology", "Media", "Rtmp", "Simulation")}");
            Assert.DoesNotMatch(new Regex(@"\b(FramedConnection|CloseReason|ConnectionLog)\b"), StripComments(File.ReadAllText(file)));
        }
    }

    /// <summary>The first of <paramref name="folders"/> whose namespace the file imports or names, or null.</summary>
    private static string? Uses(string file, params string[] folders)
    {
        string code = StripComments(File.ReadAllText(file));
        foreach (var folder in folders)
            if (Regex.IsMatch(code, $@"(using\s+ShardStream\.{folder}\s*;)|(\bShardStream\.{folder}\.)|((?<![\w.]){folder}\.[A-Z])"))
                return folder;
        return null;
    }

    private static string StripComments(string code) => Regex.Replace(code, @"//[^\n]*", "");

    private static IEnumerable<string> SourcesOf(string folder)
    {
        var files = Directory.GetFiles(Path.Combine(LibraryRoot(), folder), "*.cs");
        Assert.NotEmpty(files);
        return files;
    }

    private static string LibraryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ShardStream.slnx"))) return Path.Combine(dir.FullName, "src", "ShardStream");
        throw new InvalidOperationException($"no ShardStream.slnx above {AppContext.BaseDirectory}");
    }
}

using ShardStream.Media;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Trust;

namespace ShardStream.Tests.Media;

/// <summary>The coordinator's log of its source's format comes before what it found wrong in it.</summary>
public sealed class SourceFormatLogTests
{
    [Fact]
    public async Task An_flv_source_broken_in_its_first_read_is_logged_as_FLV_before_the_reason_it_passes_through_raw()
    {
        byte[] bad = MediaStreams.Inter(66, 10);
        bad[0] = 0x07;
        byte[] stream = [.. MediaStreams.Preamble(), .. MediaStreams.AvcHeader, .. MediaStreams.Keyframe(0, 100), .. bad, .. MediaStreams.Keyframe(99, 100)];
        using var key = StreamSigner.CreateEphemeral();
        var log = new LogCapture();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "coord:1", ShardCount = 1, Signer = key },
            new VirtualNetwork().Host("coord"), log.Factory);
        await coordinator.StartAsync(CancellationToken.None);
        await coordinator.RunAsync(new MediaReader(new MemoryStream(stream)), CancellationToken.None).WaitAsync(Overlay.Deadline);

        var lines = log.Lines.Select(l => l.Message).ToList();
        int format = lines.FindIndex(l => l.StartsWith("source format: FLV", StringComparison.Ordinal));
        int lost = lines.FindIndex(l => l.Contains("FLV tag of type 7", StringComparison.Ordinal));
        Assert.True(format >= 0 && lost >= 0, string.Join("\n", lines));
        Assert.True(format < lost, $"the format came after the reason it is not cut as FLV any more:\n{string.Join("\n", lines)}");
    }
}

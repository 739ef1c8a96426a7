using System.Diagnostics;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>A viewer that asks for another stream than the one the coordinator serves (<see cref="PeerOptions.Stream"/>).</summary>
public sealed class WrongStreamTests
{
    /// <summary>
    /// Seen in an audit: a viewer given a mistyped <c>--stream</c> was placed (and a stronger joiner
    /// takes a weaker peer's place, moving it) before it read the coordinator's proof in its Welcome
    /// and left. Its Join now names the stream (version 13), and the coordinator refuses it first.
    /// </summary>
    [Fact]
    public async Task A_viewer_that_names_another_stream_is_refused_before_placement_and_nobody_moves()
    {
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: log.Factory);
        // Two watch-only peers fill the coordinator's two slots: a joiner that can relay takes one's place.
        await overlay.AddPeerAsync(upload: 0);
        await overlay.AddPeerAsync(upload: 0);
        string plan = overlay.Coordinator.Snapshot().Render();
        int Moves() => log.Lines.Count(l => l.Message.StartsWith("moving shard(s)", StringComparison.Ordinal));
        int Joined() => log.Lines.Count(l => l.Message.Contains(") joined at offset", StringComparison.Ordinal));
        Assert.Equal(2, Joined());

        using var other = StreamSigner.CreateEphemeral();
        await using var wrong = new Peer(new PeerOptions { JoinAddress = "coord:1", ListenAddress = "wrong:1", Stream = other.PublicKey, HeartbeatTimeout = TimeSpan.FromSeconds(10), HeartbeatInterval = TimeSpan.FromSeconds(2) },
            overlay.Network.Host("wrong"), log.Factory);
        var error = await Assert.ThrowsAsync<ConnectionFailedException>(() => wrong.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline));
        // Given the time a move takes to arrive, had there been one.
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.True(Joined() == 2, $"the coordinator placed the viewer of another stream:\n{Dump(log)}");
        Assert.True(Moves() == 0, $"a peer was moved for the viewer of another stream:\n{Dump(log)}");
        Assert.Equal(plan, overlay.Coordinator.Snapshot().Render());
        string ours = overlay.Coordinator.StreamKey.Address;
        Assert.Equal($"the coordinator at coord:1 is not stream {other.PublicKey.Address}, the stream asked for: it proved it holds the key of stream {ours}", error.Message);
        Assert.Single(log.Lines, l => l.Level == LogLevel.Warning && l.Message.StartsWith("a joiner from ", StringComparison.Ordinal)
            && l.Message.EndsWith($" asked for stream {other.PublicKey.Address}, not ours ({ours}): refused, no placement", StringComparison.Ordinal));

        // The same joiner, asking for this stream: placed, and a watch-only peer moves under it.
        await overlay.AddPeerAsync(configure: o => o with { Stream = overlay.Coordinator.StreamKey });
        await Overlay.WaitUntilAsync(() => Moves() >= 1, "a watch-only peer moved under the viewer of this stream");
        Assert.Equal(3, Joined());
    }

    /// <summary>
    /// A viewer older than version 13 names no stream in its Join: the coordinator places it, and it
    /// refuses the Welcome's key with a goodbye, so its place is given up at once.
    /// </summary>
    [Fact]
    public async Task A_viewer_placed_in_a_stream_it_did_not_ask_for_says_goodbye_and_the_coordinator_keeps_no_place_for_it()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1);
        using var other = StreamSigner.CreateEphemeral();
        var error = await Assert.ThrowsAsync<ConnectionFailedException>(() => overlay.AddPeerAsync(configure: o => o with { Stream = other.PublicKey, MaxVersion = 12 }));
        Assert.Contains($"is not stream {other.PublicKey.Address}, the stream asked for", error.Message);

        // The coordinator placed it before it checked the key. A link that broke without a goodbye
        // keeps a peer's place for the rejoin grace (4 heartbeat timeouts: 40 s here), and the
        // coordinator's drain after the end waited for it that long.
        var clock = Stopwatch.StartNew();
        await Overlay.WaitUntilAsync(() => overlay.Coordinator.Snapshot().Nodes.Count == 1, "the coordinator no longer lists the viewer");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"the viewer was listed {clock.Elapsed.TotalSeconds:0.0} s after it refused the stream");
    }

    /// <summary>
    /// A node older than version 13 takes a Join that names its stream for a malformed hello (its
    /// reader wants the body to end after the measured RTTs). The viewer then joins without it,
    /// through that node's redirect, and checks the coordinator's key at its Welcome as before.
    /// </summary>
    [Fact]
    public async Task A_viewer_joins_through_a_node_older_than_version_13_without_naming_its_stream()
    {
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: log.Factory);
        await using var listener = await overlay.Network.Host("old").ListenAsync("old:1", CancellationToken.None);
        var hellos = new List<Hello>();
        var answering = Task.Run(async () =>
        {
            for (int i = 0; i < 2; i++)
            {
                var connection = (await listener.AcceptAsync(CancellationToken.None))!;
                var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
                Assert.Equal(FrameType.Hello, type);
                var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(body));
                Assert.True(Hello.TryRead(ref reader, out var hello));
                hellos.Add(hello);
                // What a version-12 node answers a Join with 32 bytes after its measured RTTs; then a redirect, as a peer's.
                if (i == 0) new Goodbye(GoodbyeCode.ProtocolError, "malformed hello frame: bad nonce, ticket, network coordinate or measured RTTs").Write(connection.Pipe.Output);
                else new Welcome(12, 0, 1, 0, 0, [new ShardAssignment(0, AssignmentKind.Redirect, 0, 0, overlay.Coordinator.ListenAddress)]).Write(connection.Pipe.Output);
                await connection.Pipe.Output.FlushAsync();
                await connection.Pipe.Output.CompleteAsync();
            }
        });

        var key = overlay.Coordinator.StreamKey;
        await overlay.AddPeerAsync(joinAddress: "old:1", configure: o => o with { Stream = key });
        await answering.WaitAsync(Overlay.Deadline);
        Assert.Equal(key.Bytes, hellos[0].Stream);
        Assert.Null(hellos[1].Stream);
        Assert.True(log.Has(LogLevel.Information, "old:1 did not read this peer's Join with the stream it asks for"), Dump(log));
        Assert.True(log.Has(LogLevel.Information, $"the coordinator proved it holds the key of stream {key.Address}"), Dump(log));
        Assert.Equal(2, overlay.Coordinator.Snapshot().Nodes.Count);
    }

    /// <summary>
    /// The refusal's proof is checked like a Welcome's: an answer whose signature is not over this
    /// join's nonce (an impostor replaying a refusal it got) is a protocol error, not a refusal of
    /// the stream it names. (The viewer stops either way; it only does not repeat a false claim.)
    /// </summary>
    [Fact]
    public async Task A_refusal_whose_proof_is_not_over_this_joins_nonce_is_a_protocol_error()
    {
        var net = new VirtualNetwork();
        using var impostor = StreamSigner.CreateEphemeral();
        using var asked = StreamSigner.CreateEphemeral();
        byte[] runId = StreamRun.NewId();
        await using var listener = await net.Host("imp").ListenAsync("imp:1", CancellationToken.None);
        var answering = Task.Run(async () =>
        {
            var connection = (await listener.AcceptAsync(CancellationToken.None))!;
            await RawFrames.ReadAsync(connection.Pipe.Input);
            byte[] signature = impostor.ForRun(runId).SignOtherStream(new byte[Protocol.NonceLength], asked.PublicKey.Bytes);
            new Goodbye(GoodbyeCode.OtherStream, "not placed", [.. impostor.PublicKey.Bytes, .. signature], runId).Write(connection.Pipe.Output);
            await connection.Pipe.Output.FlushAsync();
            await connection.Pipe.Output.CompleteAsync();
        });
        await using var viewer = new Peer(new PeerOptions { JoinAddress = "imp:1", ListenAddress = "v:1", Stream = asked.PublicKey, RejoinFor = TimeSpan.Zero }, net.Host("v"), Overlay.Loggers);
        var error = await Assert.ThrowsAsync<ProtocolException>(() => viewer.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline));
        Assert.Contains($"imp:1 refused this peer as a viewer of another stream, but did not prove it holds the key of stream {impostor.PublicKey.Address}", error.Message);
        await answering;
    }

    private static string Dump(LogCapture log) => string.Join("\n", log.Lines.Select(l => $"{l.Level} {l.Category}: {l.Message}"));
}

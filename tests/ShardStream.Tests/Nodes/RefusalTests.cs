using System.IO.Pipelines;
using System.Buffers;
using ShardStream.Nodes;
using ShardStream.Tests.Transport;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A refusal or a redirect is the whole answer to a hello: it must reach the other side before the
/// connection closes, or the joiner learns only "connection reset" instead of the reason.
/// </summary>
public class RefusalTests
{
    [Fact]
    public async Task A_hello_with_no_common_version_is_answered_with_goodbye_version_mismatch()
    {
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "c:0" }, net.Host("c"));
        await coordinator.StartAsync(default);

        var (type, body) = await AskAsync(net, coordinator.ListenAddress, new Hello(1, 2, HelloRole.Join, 0, Hello.DefaultUpload, [], "x:1"));

        Assert.Equal(FrameType.Goodbye, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
        Assert.Equal(GoodbyeCode.VersionMismatch, goodbye.Code);
        Assert.Contains("this node speaks 9..16", goodbye.Reason);
        Assert.Contains("the other side 1..2", goodbye.Reason);
    }

    [Theory]
    [InlineData(3, 8)]
    [InlineData(8, 8)]
    [InlineData(3, 3)]
    public async Task A_peer_that_signs_without_the_run_id_is_refused_with_the_reason(ushort min, ushort max)
    {
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "c:0" }, net.Host("c"));
        await coordinator.StartAsync(default);

        // Versions 3 to 8 check signatures that do not cover the run id (version 9): such a peer
        // would take every hash list of this coordinator for a forgery and cut off honest parents.
        var (type, body) = await AskAsync(net, coordinator.ListenAddress, new Hello(min, max, HelloRole.Join, 0x1234, Hello.DefaultUpload, [], "x:1", new byte[Protocol.NonceLength]));

        Assert.Equal(FrameType.Goodbye, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
        Assert.Equal(GoodbyeCode.VersionMismatch, goodbye.Code);
        Assert.Contains($"no protocol version in common: this node speaks 9..16, the other side {min}..{max}", goodbye.Reason);
    }

    [Theory]
    [InlineData(9, 9, 9)]
    [InlineData(3, 9, 9)]
    [InlineData(9, 10, 10)]
    [InlineData(9, 11, 11)]
    [InlineData(9, 12, 12)]
    [InlineData(9, 13, 13)]
    [InlineData(9, 14, 14)]
    [InlineData(9, 15, 15)]
    [InlineData(9, 16, 16)]
    [InlineData(9, 17, 16)]
    public async Task The_welcome_speaks_the_highest_version_both_sides_speak(ushort min, ushort max, ushort chosen)
    {
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "c:0" }, net.Host("c"));
        await coordinator.StartAsync(default);

        var (type, body) = await AskAsync(net, coordinator.ListenAddress, new Hello(min, max, HelloRole.Join, 0, Hello.DefaultUpload, [], "x:1"));

        Assert.Equal(FrameType.Welcome, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(Welcome.TryRead(ref reader, out var welcome));
        Assert.Equal(chosen, welcome.Version);
        // A placement names the run it places the joiner in: the one the coordinator drew at start.
        Assert.Equal(coordinator.Run.Id, welcome.RunId);
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public async Task A_latency_aware_coordinator_first_sends_landmarks_to_a_joiner_that_has_not_measured(bool latencyAware, bool landmarks)
    {
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "c:0", LatencyAware = latencyAware }, net.Host("c"));
        await coordinator.StartAsync(default);

        // The blind planner places a joiner at once.
        var (type, body) = await AskAsync(net, coordinator.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0x1234, 0, [], "x:1", new byte[Protocol.NonceLength]));

        Assert.Equal(landmarks ? FrameType.Landmarks : FrameType.Welcome, type);
        if (!landmarks) return;
        var reader = new SequenceReader<byte>(body);
        Assert.True(Landmarks.TryRead(ref reader, out var read));
        // An empty overlay: the coordinator alone, at the anchor of the coordinates.
        var only = Assert.Single(read.Nodes);
        Assert.Equal((0UL, ""), (only.Id, only.Address));
        Assert.False(only.Coordinate.IsUnknown);
    }

    [Fact]
    public async Task A_joiner_of_an_ended_stream_is_refused_at_its_first_join_with_no_landmarks_and_no_dial_back()
    {
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "c:0", LatencyAware = true }, net.Host("c"));
        await coordinator.StartAsync(default);
        await coordinator.RunAsync(new MemoryStream(new byte[1000]), default).WaitAsync(Overlay.Deadline);
        // The joiner listens where it says, and counts the coordinator's dial-backs.
        int dialBacks = 0;
        await using var listener = await net.Host("x").ListenAsync("x:1", default);
        _ = Task.Run(async () =>
        {
            while (await listener.AcceptAsync(default) is { } connection)
            {
                Interlocked.Increment(ref dialBacks);
                await connection.DisposeAsync();
            }
        });

        // An uploader (it would be probed) that has not measured (a latency-aware coordinator would send it landmarks).
        var (type, body) = await AskAsync(net, coordinator.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0x1234, 200, [], "x:1", new byte[Protocol.NonceLength], null, WireCoordinate.Unknown));

        Assert.Equal(FrameType.Goodbye, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
        Assert.Equal((GoodbyeCode.Refused, "the stream has ended"), (goodbye.Code, goodbye.Reason));
        Assert.Equal(0, Volatile.Read(ref dialBacks));
    }

    [Fact]
    public async Task A_peer_joining_again_once_the_run_is_over_is_refused_not_placed_as_the_coordinator_stops()
    {
        // The source ended and the drain is over (no peer was left to wait for): the coordinator is
        // about to stop. A peer that joins again then (it says where its shard goes on) was placed
        // before, and lost the coordinator at once; in a CI run that was an evicted peer, which
        // then ended with "lost the coordinator" instead of its eviction's reason. It is told the run
        // is over (ShuttingDown, as a peer still listed then), so that it does not try again.
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "c:0" }, net.Host("c"));
        await coordinator.StartAsync(default);
        await coordinator.RunAsync(new MemoryStream(new byte[1000]), default).WaitAsync(Overlay.Deadline);

        // A viewer (upload 0: not probed) that resumes shard 0 at chunk 1.
        var (type, body) = await AskAsync(net, coordinator.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0x1234, 0, [new ShardStart(0, 1)], "x:1", new byte[Protocol.NonceLength], null, WireCoordinate.Unknown));

        Assert.Equal(FrameType.Goodbye, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
        Assert.Equal((GoodbyeCode.ShuttingDown, "the stream ended at 1000 bytes and the coordinator waits no longer"), (goodbye.Code, goodbye.Reason));
    }

    [Fact]
    public async Task A_first_frame_that_is_not_a_hello_is_answered_with_goodbye_protocol_error()
    {
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "c:0" }, net.Host("c"));
        await coordinator.StartAsync(default);

        var (type, body) = await AskAsync(net, coordinator.ListenAddress, null);

        Assert.Equal(FrameType.Goodbye, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
        Assert.Equal(GoodbyeCode.ProtocolError, goodbye.Code);
    }

    [Fact]
    public async Task A_peer_redirects_a_joiner_to_the_coordinator()
    {
        var net = new VirtualNetwork();
        await using var coordinator = new Coordinator(new CoordinatorOptions { ListenAddress = "c:0" }, net.Host("c"));
        await coordinator.StartAsync(default);
        await using var peer = new Peer(new PeerOptions { ListenAddress = "p:0", JoinAddress = coordinator.ListenAddress }, net.Host("p"));
        await peer.StartAsync(default);

        var (type, body) = await AskAsync(net, peer.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0, Hello.DefaultUpload, [], "x:1"));

        Assert.Equal(coordinator.ListenAddress, RedirectAddress(type, body));
    }

    [Fact]
    public async Task A_peer_still_joining_redirects_a_joiner_to_the_address_it_joins_through()
    {
        // A peer listens before its own join is answered: a viewer that comes through it then
        // (its -c names that peer) is sent on to where that peer joins, not given an empty address.
        var net = new VirtualNetwork();
        net.BlackHole("c:1");
        await using var peer = new Peer(new PeerOptions { ListenAddress = "p:0", JoinAddress = "c:1" }, net.Host("p"));
        using var stop = new CancellationTokenSource();
        var joining = peer.StartAsync(stop.Token);
        await Overlay.WaitUntilAsync(() => net.PendingBlackHoleConnects > 0, "the peer listens and is joining");

        var (type, body) = await AskAsync(net, peer.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 0, Hello.DefaultUpload, [], "x:1"));

        Assert.Equal("c:1", RedirectAddress(type, body));
        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<Exception>(() => joining);
    }

    /// <summary>The address of the redirect Welcome (peer id 0, one Redirect entry) that <paramref name="body"/> holds.</summary>
    private static string RedirectAddress(FrameType type, ReadOnlySequence<byte> body)
    {
        Assert.Equal(FrameType.Welcome, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(Welcome.TryRead(ref reader, out var welcome));
        Assert.Equal(0UL, welcome.PeerId);
        var redirect = Assert.Single(welcome.Shards);
        Assert.Equal(AssignmentKind.Redirect, redirect.Kind);
        return redirect.Address;
    }

    /// <summary>Sends a hello (or an end frame, which is not a hello, when null) from a fresh host and returns the first frame of the answer.</summary>
    private static async Task<(FrameType Type, ReadOnlySequence<byte> Body)> AskAsync(VirtualNetwork net, string address, Hello? hello)
    {
        var connection = await net.Host("x").ConnectAsync(address, default);
        if (hello is { } h) h.Write(connection.Pipe.Output);
        else new End(0, 0, 0).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();

        using var cts = new CancellationTokenSource(PipeIo.Deadline);
        var input = connection.Pipe.Input;
        while (true)
        {
            ReadResult result;
            try
            {
                result = await input.ReadAsync(cts.Token);
            }
            catch (IOException e)
            {
                Assert.Fail($"the connection was reset before an answer arrived: {e.Message}");
                throw;
            }
            var buffer = result.Buffer;
            if (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
            {
                var copy = new ReadOnlySequence<byte>(body.ToArray());
                input.AdvanceTo(buffer.Start);
                await connection.DisposeAsync();
                return (type, copy);
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) Assert.Fail("the connection closed before an answer arrived");
        }
    }
}

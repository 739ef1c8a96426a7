using System.Buffers;
using System.IO.Pipelines;
using System.Security.Cryptography;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// Admission control: a coordinator works on a bounded number of joins at once; a joiner beyond
/// them is told at once that it is busy, and a peer told so joins again by itself.
/// </summary>
public sealed class AdmissionControlTests
{
    [Fact]
    public async Task A_joiner_beyond_the_joins_in_progress_is_told_busy_and_a_peer_joins_again_by_itself()
    {
        var net = new VirtualNetwork();
        // The hole accepts and never answers: the dial-back probe of a joiner that gives it as its
        // address holds that join's turn until the test breaks the probe's connection (or for the
        // probe's whole timeout, half the heartbeat timeout: 30 s, longer than a loaded machine
        // stalls this test; with 4 s, a stall of 4 s before the next joiner asked let it in).
        var hole = await net.Host("hole").ListenAsync("hole:1", default);
        var holding = Task.Run(async () => await hole.AcceptAsync(default));
        var options = new CoordinatorOptions
        {
            ListenAddress = "coord:1",
            ShardCount = 1,
            HeartbeatTimeout = TimeSpan.FromSeconds(60),
            HeartbeatInterval = TimeSpan.FromSeconds(1),
            MaxJoinsInProgress = 1,
            MaxJoinsWaiting = 0,
        };
        await using var coordinator = new Coordinator(options, net.Host("coord"));
        await coordinator.StartAsync(default);

        var stuck = await net.Host("stuck").ConnectAsync(coordinator.ListenAddress, default);
        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 5, Hello.DefaultUpload, [], "hole:1", RandomNumberGenerator.GetBytes(Protocol.NonceLength)).Write(stuck.Pipe.Output);
        await stuck.Pipe.Output.FlushAsync();
        var probe = await holding.WaitAsync(Overlay.Deadline);

        // While that join holds the only turn, the next joiner hears why it is not placed.
        var (type, body) = await AskAsync(net, coordinator.ListenAddress, new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, 6, Hello.DefaultUpload, [], "x:1", RandomNumberGenerator.GetBytes(Protocol.NonceLength)));
        Assert.Equal(FrameType.Goodbye, type);
        var reader = new SequenceReader<byte>(body);
        Assert.True(Goodbye.TryRead(ref reader, out var goodbye));
        Assert.Equal(GoodbyeCode.Busy, goodbye.Code);
        Assert.Equal("busy: 1 joins in progress and 0 waiting; try again in a moment", goodbye.Reason);

        // A real peer told so backs off and joins once the turn is free.
        var logs = new LogCapture();
        await using var peer = new Peer(new PeerOptions { JoinAddress = coordinator.ListenAddress, ListenAddress = "p:1", HeartbeatTimeout = options.HeartbeatTimeout, HeartbeatInterval = options.HeartbeatInterval }, net.Host("p"), logs.Factory);
        var joining = peer.StartAsync(default);
        await Overlay.WaitUntilAsync(() => logs.Lines.Any(l => l.Message.StartsWith("coord:1 is busy: busy: 1 joins in progress", StringComparison.Ordinal)) || joining.IsCompleted,
            "the peer is told the coordinator is busy");
        Assert.False(joining.IsCompleted, "the peer joined while the only turn was held");
        // The probe's connection breaks: the held joiner is placed (a leaf) and the turn is free.
        probe!.Abort();
        await joining.WaitAsync(Overlay.Deadline);
        Assert.True(peer.Id > 0);
        Assert.True(coordinator.JoinsRefusedBusy >= 2, $"{coordinator.JoinsRefusedBusy} busy answers");
    }

    private static async Task<(FrameType Type, ReadOnlySequence<byte> Body)> AskAsync(VirtualNetwork net, string address, Hello hello)
    {
        var connection = await net.Host("x").ConnectAsync(address, default);
        hello.Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        var input = connection.Pipe.Input;
        using var cts = new CancellationTokenSource(Overlay.Deadline);
        while (true)
        {
            ReadResult result = await input.ReadAsync(cts.Token);
            var buffer = result.Buffer;
            if (FrameCodec.TryReadFrame(ref buffer, out var type, out var frame))
            {
                var copy = new ReadOnlySequence<byte>(frame.ToArray());
                input.AdvanceTo(buffer.Start);
                await connection.DisposeAsync();
                return (type, copy);
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) throw new IOException("the connection closed before an answer arrived");
        }
    }
}

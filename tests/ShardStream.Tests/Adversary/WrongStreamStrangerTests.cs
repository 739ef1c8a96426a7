using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;
using Xunit.Abstractions;

namespace ShardStream.Tests.Adversary;

/// <summary>A stranger that speaks version 13's stream check (docs/protocol.md, section 16, "Asking for a stream").</summary>
public class WrongStreamStrangerTests(ITestOutputHelper output)
{
    private static byte[] Frame(Action<IBufferWriter<byte>> write, byte[]? extra = null)
    {
        var buffer = new ArrayBufferWriter<byte>();
        write(buffer);
        byte[] frame = [.. buffer.WrittenSpan, .. extra ?? []];
        BinaryPrimitives.WriteUInt32BigEndian(frame, BinaryPrimitives.ReadUInt32BigEndian(frame) + (uint)(extra?.Length ?? 0));
        return frame;
    }

    private static Hello Join(byte[] nonce, byte[]? stream, ushort max = Protocol.Version, HelloRole role = HelloRole.Join) =>
        new(Protocol.MinVersion, max, role, 0, 0, [], "s:1", nonce, null, WireCoordinate.Unknown, null, stream);

    private static async Task<Goodbye> AskAsync(VirtualNetwork net, string address, byte[] frame)
    {
        var connection = await net.Host("s").ConnectAsync(address, CancellationToken.None);
        await connection.Pipe.Output.WriteAsync(frame);
        await connection.Pipe.Output.FlushAsync();
        var goodbye = await RawFrames.ReadUntilGoodbyeAsync(connection.Pipe.Input);
        connection.Abort();
        return goodbye;
    }

    [Fact]
    public async Task A_flood_of_wrong_stream_joins_gets_a_proof_per_nonce_and_places_nobody_while_an_honest_viewer_joins()
    {
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: log.Factory);
        var key = overlay.Coordinator.StreamKey;
        // At least 13 batches of 32, and on until the honest viewer, which starts after the first
        // batch was answered, has joined: its join overlaps the flood (at most 64 batches).
        const int joins = 13 * 32, mostJoins = 64 * 32;
        var firstBatch = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var honestJoined = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var clock = Stopwatch.StartNew();
        var flood = Task.Run(async () =>
        {
            var proofs = new List<(byte[] Nonce, byte[] Asked, Goodbye Bye)>();
            for (int i = 0; i < mostJoins && (i < joins || !honestJoined.Task.IsCompleted); i += 32)
            {
                var batch = Enumerable.Range(0, 32).Select(async _ =>
                {
                    byte[] nonce = System.Security.Cryptography.RandomNumberGenerator.GetBytes(Protocol.NonceLength);
                    byte[] asked = System.Security.Cryptography.RandomNumberGenerator.GetBytes(Protocol.KeyLength);
                    return (nonce, asked, await AskAsync(overlay.Network, overlay.Coordinator.ListenAddress, Frame(Join(nonce, asked).Write)));
                });
                proofs.AddRange(await Task.WhenAll(batch));
                firstBatch.TrySetResult();
            }
            return proofs;
        });
        await firstBatch.Task.WaitAsync(Overlay.Deadline);
        var honest = await overlay.AddPeerAsync(configure: o => o with { Stream = key });
        honestJoined.SetResult();
        var answers = await flood.WaitAsync(Overlay.Deadline * 4);
        output.WriteLine($"{answers.Count} wrong-stream joins answered in {clock.Elapsed.TotalMilliseconds:0} ms");
        Assert.True(answers.Count < mostJoins, $"the honest viewer had not joined after {mostJoins} wrong-stream joins");
        Assert.All(answers, a => Assert.Equal(GoodbyeCode.OtherStream, a.Bye.Code));
        // Each proof holds for its own nonce and asked key only: a replay to another joiner fails.
        var (n0, a0, b0) = answers[0];
        var run = new StreamRun(key, b0.RunId!);
        Assert.True(run.VerifyOtherStream(n0, a0, b0.Proof.AsSpan(Protocol.KeyLength)));
        Assert.False(run.VerifyOtherStream(answers[1].Nonce, a0, b0.Proof.AsSpan(Protocol.KeyLength)));
        Assert.False(run.VerifyOtherStream(n0, answers[1].Asked, b0.Proof.AsSpan(Protocol.KeyLength)));
        // Nobody placed but the honest viewer; one line per refusal.
        Assert.Equal(2, overlay.Coordinator.Snapshot().Nodes.Count);
        Assert.Equal(answers.Count, log.Lines.Count(l => l.Message.Contains(": refused, no placement", StringComparison.Ordinal)));
        Assert.NotEqual(0, honest.Id);
    }

    [Theory]
    [InlineData(31, Protocol.Version, HelloRole.Join)]
    [InlineData(33, Protocol.Version, HelloRole.Join)]
    [InlineData(32, 12, HelloRole.Join)]
    [InlineData(32, Protocol.Version, HelloRole.Attach)]
    public async Task A_stream_field_of_another_length_version_or_role_is_a_malformed_hello_and_costs_no_signature(int length, ushort max, HelloRole role)
    {
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, loggers: log.Factory);
        var bye = await AskAsync(overlay.Network, overlay.Coordinator.ListenAddress, Frame(Join(new byte[Protocol.NonceLength], null, max, role).Write, new byte[length]));
        Assert.Equal(GoodbyeCode.ProtocolError, bye.Code);
        Assert.StartsWith("malformed hello frame", bye.Reason);
        Assert.DoesNotContain(log.Lines, l => l.Message.Contains("refused, no placement", StringComparison.Ordinal));
        Assert.Single(overlay.Coordinator.Snapshot().Nodes);
    }

    /// <summary>docs/protocol.md, section 16: a refusal with no valid proof is a protocol error, saying it proved nothing.</summary>
    [Fact]
    public async Task A_refusal_as_another_stream_without_a_proof_is_a_protocol_error()
    {
        var net = new VirtualNetwork();
        using var asked = StreamSigner.CreateEphemeral();
        await using var listener = await net.Host("imp").ListenAsync("imp:1", CancellationToken.None);
        var answering = Task.Run(async () =>
        {
            var connection = (await listener.AcceptAsync(CancellationToken.None))!;
            await RawFrames.ReadAsync(connection.Pipe.Input);
            // Code 8 with its reason and nothing after it.
            byte[] frame = Frame(new Goodbye(GoodbyeCode.Refused, "not placed").Write);
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(5), (ushort)GoodbyeCode.OtherStream);
            // Written and flushed: the viewer resets the connection as soon as it has read this
            // protocol error, so nothing more is sent on it (a second flush met that reset in
            // ci216, "connection reset by peer").
            await connection.Pipe.Output.WriteAsync(frame);
        });
        await using var viewer = new Peer(new PeerOptions { JoinAddress = "imp:1", ListenAddress = "v:1", Stream = asked.PublicKey, RejoinFor = TimeSpan.Zero }, net.Host("v"), Overlay.Loggers);
        var error = await Record.ExceptionAsync(() => viewer.StartAsync(CancellationToken.None).WaitAsync(Overlay.Deadline));
        await answering;
        Assert.True(error is ProtocolException, $"{error?.GetType().Name}: {error?.Message}");
        Assert.Equal("imp:1 refused this peer as a viewer of another stream without proving which stream it is: not placed", error!.Message);
    }
}

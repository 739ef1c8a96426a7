using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using ShardStream.Tests.Nodes;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A peer's listen address is no secret (the coordinator sends it to every joiner as a landmark or
/// a candidate parent, and to the children placed under it), and anyone may send it a reachability
/// probe. The probe's answer must not give away the peer's join token: with it, a stranger joins
/// again in the peer's place (docs/security.md, "A peer's join token in other hands").
/// </summary>
public sealed class ProbedTokenTests
{
    /// <summary>
    /// A stranger probes an honest viewer (a relay the coordinator probed and placed), then joins
    /// again with resume points and whatever join token the answer carried, as the viewer would
    /// after a broken control link. The answer must not hold the token, the stranger must not get
    /// the viewer's id (its place, its control link), and the viewer must stream on to the end,
    /// writing exactly the source, still a relay.
    /// </summary>
    [Fact]
    public async Task A_stranger_that_probes_a_viewers_address_learns_nothing_to_take_its_place_with()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, loggers: logs.Factory);
        var viewer = await overlay.AddPeerAsync(loggers: logs.Factory);
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 410));
        await Overlay.WaitUntilAsync(() => viewer.BytesWritten == 100_000, "the viewer has the first part of the stream");
        string address = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == viewer.Id).Address;

        var (answer, body) = await ProbeAsync(overlay, address, RandomNumberGenerator.GetBytes(Protocol.NonceLength));
        var token = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(token, viewer.Token);
        bool shown = body.AsSpan().IndexOf(token) >= 0;

        await using var impostor = await StrangerControlLink.JoinAsync(overlay, TimeSpan.Zero, host: "mallory", token: answer.PeerId, resume: [new ShardStart(0, 0)]);
        await overlay.WriteAsync(Overlay.RandomBytes(100_000, 411));
        // Not to the end: the coordinator would wait for the stranger, which never says it is done.
        await Overlay.WaitUntilAsync(() => viewer.BytesWritten >= 200_000, "the viewer has the whole stream");
        byte[] got = overlay.Peers.Single().Output.ToArray();
        Assert.True(overlay.Written.AsSpan().SequenceEqual(got), $"the viewer wrote {got.Length} bytes, not the source's 200000");
        Assert.Equal(0, viewer.LostBytes);

        var taken = logs.Lines.Where(l => l.Message.Contains($"peer {viewer.Id} (", StringComparison.Ordinal) && l.Message.Contains("joined again on a new connection", StringComparison.Ordinal)).Select(l => l.Message).ToList();
        string said = string.Join("; ", logs.Lines.Where(l => l.Level >= LogLevel.Information).Select(l => l.Message));
        Assert.False(shown, $"the probe answer shows the viewer's join token {viewer.Token:x} (its peer id field: {answer.PeerId:x}); the stranger joined as peer {impostor.Id}; logged: {said}");
        Assert.True(impostor.Id != viewer.Id, $"the stranger holds the viewer's place as peer {impostor.Id}: {string.Join("; ", taken)}");
        Assert.Empty(taken);
        Assert.DoesNotContain(logs.Lines, l => l.Message.Contains("this peer relays nothing", StringComparison.Ordinal));
    }

    /// <summary>
    /// A joiner measuring its RTT to a landmark or a candidate parent probes it with no nonce: it
    /// wants only the time, and knows no token to check a proof against. A stranger that probes an
    /// honest relay so, twice, must get no proof of the relay's token: over the zero nonce it is one
    /// fixed value per token, the same to every asker (a fingerprint of the token wherever the
    /// relay listens, collected once, and what every joiner measuring it was handed).
    /// </summary>
    [Fact]
    public async Task A_stranger_that_probes_without_a_nonce_gets_no_fixed_proof_of_the_token()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, loggers: logs.Factory);
        var relay = await overlay.AddPeerAsync(loggers: logs.Factory);
        string address = overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == relay.Id).Address;
        var zeros = new byte[Protocol.NonceLength];

        var (first, _) = await ProbeAsync(overlay, address, nonce: null);
        var (second, _) = await ProbeAsync(overlay, address, nonce: null);
        string Shown(byte[]? proof) => proof is null ? "none" : $"{Convert.ToHexString(proof)}{(proof.AsSpan().SequenceEqual(ShardStream.Trust.ProbeProof.Compute(relay.Token, zeros)) ? " (the relay's token's proof over zeros)" : "")}";
        Assert.True(first.ProbeProof is null && second.ProbeProof is null, $"a probe with no nonce was answered with a proof: {Shown(first.ProbeProof)}, then {Shown(second.ProbeProof)}");

        // A probe with a nonce of its own still gets a proof, for that nonce: the coordinator's probe works as before.
        var (asked, _) = await ProbeAsync(overlay, address, RandomNumberGenerator.GetBytes(Protocol.NonceLength));
        Assert.NotNull(asked.ProbeProof);
    }

    /// <summary>Probes <paramref name="address"/> as a stranger on host mallory, with <paramref name="nonce"/> (null: none, as a joiner measuring RTTs sends), and reads the answer and its body.</summary>
    private static async Task<(Welcome Answer, byte[] Body)> ProbeAsync(Overlay overlay, string address, byte[]? nonce)
    {
        var probe = await overlay.Network.Host("mallory").ConnectAsync(address, CancellationToken.None);
        new Hello(Protocol.ProbeVersion, Protocol.Version, HelloRole.Probe, 0, 0, [], "mallory:1", nonce).Write(probe.Pipe.Output);
        await probe.Pipe.Output.FlushAsync();
        var (type, body) = await RawFrames.ReadAsync(probe.Pipe.Input);
        probe.Abort();
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(body));
        Assert.Equal(FrameType.Welcome, type);
        Assert.True(Welcome.TryRead(ref reader, out var answer), "a malformed probe answer");
        return (answer, body);
    }

    /// <summary>
    /// A joiner of version 15 shows its join token to whoever probes it: the coordinator places it
    /// as a leaf without probing it, and tells it why; it streams as any leaf does.
    /// </summary>
    [Fact]
    public async Task A_joiner_older_than_version_16_is_placed_as_a_leaf_unprobed_and_told_why()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, loggers: logs.Factory);
        var old = await overlay.AddPeerAsync(configure: o => o with { MaxVersion = Protocol.ProbeProofVersion - 1 }, loggers: logs.Factory);

        Assert.Equal(0, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Id == old.Id).Budget);
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, $"peer {old.Id} (p1:1) speaks protocol version 15, whose answer to a reachability probe shows its join token to whoever asks: placed as a leaf, unprobed"), "the coordinator says why");
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, "this peer relays nothing: it speaks protocol version 15, whose answer to a reachability probe shows its join token"), "the joiner is told why");
        Assert.False(logs.Has(LogLevel.Debug, "answering a reachability probe"), "the coordinator probed it");

        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(50_000, 412));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(overlay.Peers.Single());
    }

    /// <summary>
    /// A joiner of version 16 whose address answers the probe as version 15 did, with the join
    /// token in the clear and no proof, is not taken for the joiner: it is placed as a leaf.
    /// </summary>
    [Fact]
    public async Task A_probe_answered_with_the_token_in_clear_does_not_count()
    {
        var logs = new LogCapture();
        await using var overlay = await Overlay.StartAsync(1, loggers: logs.Factory);
        const ulong token = 0x7357;
        await using var listener = await overlay.Network.Host("clear").ListenAsync("clear:1", CancellationToken.None);
        var probe = ProbeAnswer.AnswerAsync(listener, token, inClear: true);
        var connection = await overlay.Network.Host("clear").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Join, token, 200, [], "clear:1", new byte[Protocol.NonceLength]).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        var (type, _) = await RawFrames.ReadAsync(connection.Pipe.Input);
        await probe;

        Assert.Equal(FrameType.Welcome, type);
        Assert.Equal(0, overlay.Coordinator.Snapshot().Nodes.Single(n => n.Address == "clear:1").Budget);
        await Overlay.WaitUntilAsync(() => logs.Has(LogLevel.Warning, "another ShardStream node answers at clear:1, not this peer (no proof of its join token)"), "the coordinator says why");
        connection.Abort();
    }
}

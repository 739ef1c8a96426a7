using System.Buffers;
using Microsoft.Extensions.Logging;
using ShardStream.Nodes;
using ShardStream.Tests.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Adversary;

/// <summary>
/// A stranger that joins again in its place, again and again, each time saying it has nothing
/// (chunk 0 next), asks its parent to replay its window each time: the coordinator, which serves it
/// on its control link, and a peer, to which each rejoin's Welcome gives a fresh admission ticket.
/// A parent serves a child that asks again from no earlier than what the child's previous link may
/// not have delivered (docs/security.md, "A replay bought by joining again").
/// </summary>
public class RejoinReplayTests
{
    /// <summary>What these tests let a broken link have had in flight (the default is 16 MiB).</summary>
    private const long InFlight = 256 * 1024;

    /// <summary>A chunk is at most 64 KiB: a replay may begin one chunk early, and the marks it is counted by are a chunk or so apart at this bound.</summary>
    private const long Slack = 2 * 64 * 1024;

    private const int Rejoins = 6;

    private const int Window = 2_000_000;

    /// <summary>The stranger's last control link is left broken: the drain after the end waits this long for it.</summary>
    private static readonly TimeSpan Grace = TimeSpan.FromSeconds(1);

    [Fact]
    public async Task A_stranger_under_the_coordinator_that_rejoins_in_place_claiming_chunk_0_is_not_sent_the_window_again_each_time()
    {
        var log = new LogCapture();
        await using var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 2, ResumeInFlightBytes = InFlight, RejoinGrace = Grace }, loggers: log.Factory);
        overlay.StartStreaming();
        var honest = await overlay.AddPeerAsync();
        const ulong token = 0x7E9A_11C0;
        var (control, welcome) = await UnauthorisedControlTests.JoinRawAsync(overlay, "replayer", token);
        Assert.Equal(AssignmentKind.Served, welcome.Shards[0].Kind);
        long total = await WriteAsync(overlay, 0, Window, 21);
        await ReadReplayedAsync(control, 0, total);

        var replayed = new List<long>();
        for (int i = 0; i < Rejoins; i++)
        {
            (control, var rewelcome) = await RejoinAsync(overlay, token, control);
            Assert.Equal(welcome.PeerId, rewelcome.PeerId);
            Assert.Equal(AssignmentKind.Served, rewelcome.Shards[0].Kind);
            long before = total;
            total = await WriteAsync(overlay, total, 20_000, 30 + i);
            replayed.Add(await ReadReplayedAsync(control, before, total));
        }
        control.Abort();

        AssertBounded(replayed, "the coordinator");
        // Past its grants, it goes on at the live edge: nothing again (at most a mark's spacing and a chunk are let pass).
        Assert.True(replayed.Skip(Relay.GrantsPerChild).All(r => r <= Slack), $"past {Relay.GrantsPerChild} rejoins within a minute it was still sent {string.Join(", ", replayed.Select(r => r.ToString("N0")))} bytes again");
        Assert.True(log.Has(LogLevel.Warning, "which its other link to this node delivered up to chunk"), "the coordinator said why it served the stranger later than it asked");
        await HonestPeerWritesEveryByteAsync(overlay, honest.Id);
    }

    [Fact]
    public async Task A_stranger_under_a_peer_that_rejoins_in_place_and_attaches_again_claiming_chunk_0_is_not_sent_the_window_again_each_time()
    {
        const ulong token = 0x7E9A_11C1;
        var (overlay, a, control, welcome) = await UnderAPeerAsync(token);
        await using var disposed = overlay;
        long total = await WriteAsync(overlay, 0, Window, 22);
        var attach = await AttachRawAsync(a.ListenAddress, overlay, welcome);
        await ReadReplayedAsync(attach, 0, total);

        var replayed = new List<long>();
        for (int i = 0; i < Rejoins; i++)
        {
            // Each rejoin in place gives it a fresh ticket for its parent.
            (control, var rewelcome) = await RejoinAsync(overlay, token, control);
            Assert.Equal((ulong)a.Id, rewelcome.Shards[0].ParentId);
            attach.Abort();
            attach = await AttachRawAsync(a.ListenAddress, overlay, rewelcome);
            long before = total;
            total = await WriteAsync(overlay, total, 20_000, 40 + i);
            replayed.Add(await ReadReplayedAsync(attach, before, total));
        }
        attach.Abort();
        control.Abort();

        AssertBounded(replayed, $"peer {a.Id}");
        await HonestPeerWritesEveryByteAsync(overlay, a.Id);
    }

    [Fact]
    public async Task A_stranger_that_keeps_every_link_it_attached_with_open_is_sent_the_live_stream_on_its_last_one_only()
    {
        const ulong token = 0x7E9A_11C2;
        var (overlay, a, control, welcome) = await UnderAPeerAsync(token);
        await using var disposed = overlay;
        var attaches = new List<IConnection> { await AttachRawAsync(a.ListenAddress, overlay, welcome) };
        long total = await WriteAsync(overlay, 0, 200_000, 23);
        for (int i = 0; i < 3; i++)
        {
            (control, var rewelcome) = await RejoinAsync(overlay, token, control);
            attaches.Add(await AttachRawAsync(a.ListenAddress, overlay, rewelcome));
        }

        // Each attach was answered: a sends the shard to the stranger on the links it serves it on now.
        int served = a.ChildIds()[0].Count(id => id == (int)welcome.PeerId);
        Assert.True(served == 1, $"peer {a.Id} sends the stranger the stream on {served} of the {attaches.Count} links it attached with");
        total = await WriteAsync(overlay, total, 20_000, 24);
        await ReadReplayedAsync(attaches[^1], 0, total);
        foreach (var attach in attaches) attach.Abort();
        control.Abort();
        await HonestPeerWritesEveryByteAsync(overlay, a.Id);
    }

    /// <summary>The stream goes on and ends; the honest peer <paramref name="id"/> wrote every byte of it.</summary>
    private static async Task HonestPeerWritesEveryByteAsync(Overlay overlay, int id)
    {
        await overlay.WriteAsync(Overlay.RandomBytes(50_000, 12));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(overlay.PeerById(id));
    }

    /// <summary>The stranger joins again in its place, saying it has nothing (chunk 0 next), and lets its old control link go.</summary>
    private static async Task<(IConnection Control, Welcome Welcome)> RejoinAsync(Overlay overlay, ulong token, IConnection old)
    {
        var joined = await UnauthorisedControlTests.JoinRawAsync(overlay, "replayer", token, [new ShardStart(0, 0)]);
        old.Abort();
        return joined;
    }

    /// <summary>
    /// An overlay whose coordinator has room for one child, peer a, and the stranger (host
    /// "replayer", <paramref name="token"/>) joined under a: its control link and Welcome.
    /// </summary>
    private static async Task<(Overlay Overlay, Peer A, IConnection Control, Welcome Welcome)> UnderAPeerAsync(ulong token)
    {
        var overlay = await Overlay.StartAsync(shards: 1, configure: o => o with { Upload = 1, ResumeInFlightBytes = InFlight, RejoinGrace = Grace });
        overlay.StartStreaming();
        var a = await overlay.AddPeerAsync(upload: 1, configure: o => o with { ResumeInFlightBytes = InFlight });
        var (control, welcome) = await UnauthorisedControlTests.JoinRawAsync(overlay, "replayer", token);
        Assert.Equal((ulong)a.Id, welcome.Shards[0].ParentId);
        return (overlay, a, control, welcome);
    }

    /// <summary>Each replay is at most what a broken link may have had in flight (and a chunk or two): not the window each time.</summary>
    private static void AssertBounded(List<long> replayed, string parent)
    {
        Assert.True(replayed.All(r => r <= InFlight + Slack),
            $"{parent} sent the stranger {replayed.Sum():N0} bytes again in {Rejoins} rejoins in place ({string.Join(", ", replayed.Select(r => r.ToString("N0")))}): " +
            $"more than the {InFlight + Slack:N0} bytes a broken link may have had in flight (a chunk or two included) each time, out of a window of {Window:N0}");
    }

    private static async Task<long> WriteAsync(Overlay overlay, long total, int length, int seed)
    {
        await overlay.WriteAsync(Overlay.RandomBytes(length, seed));
        return total + length;
    }

    /// <summary>Attaches to <paramref name="parent"/> with the ticket of <paramref name="welcome"/>'s shard 0, asking for it from chunk 0.</summary>
    private static async Task<IConnection> AttachRawAsync(string parent, Overlay overlay, Welcome welcome)
    {
        var connection = await overlay.Network.Host("replayer").ConnectAsync(parent, CancellationToken.None);
        new Hello(Protocol.MinVersion, Protocol.Version, HelloRole.Attach, welcome.PeerId, 0, [new ShardStart(0, 0)], "replayer:1", null, welcome.Shards[0].Ticket).Write(connection.Pipe.Output);
        await connection.Pipe.Output.FlushAsync();
        var (type, _) = await RawFrames.ReadAsync(connection.Pipe.Input);
        Assert.Equal(FrameType.Welcome, type);
        return connection;
    }

    /// <summary>
    /// Reads chunks on <paramref name="connection"/> until the one that ends at <paramref name="total"/>;
    /// returns the payload bytes of those before <paramref name="before"/> (sent again: the stranger had them).
    /// </summary>
    private static async Task<long> ReadReplayedAsync(IConnection connection, long before, long total)
    {
        long replayed = 0;
        while (true)
        {
            var (type, body) = await RawFrames.ReadAsync(connection.Pipe.Input);
            if (type != FrameType.Chunk) continue;
            Assert.True(ChunkHeader.TryRead(new ReadOnlySequence<byte>(body), out var header, out var payload));
            if ((long)header.Offset < before) replayed += payload.Length;
            if ((long)header.Offset + payload.Length >= total) return replayed;
        }
    }
}

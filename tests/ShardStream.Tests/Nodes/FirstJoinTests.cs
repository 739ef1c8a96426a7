using System.IO.Pipelines;
using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A first join whose connection the coordinator takes and then drops before its welcome arrives
/// (on a loaded machine a coordinator that heard nothing from a starved joiner for its heartbeat
/// timeout closes the link) is tried again, as a lost coordinator is; it does not end the peer.
/// </summary>
public sealed class FirstJoinTests
{
    [Fact]
    public async Task A_first_join_dropped_before_the_welcome_is_tried_again_and_the_peer_gets_the_stream()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1);
        // "door:1" passes connections on to the coordinator, except the first, which it reads from and drops.
        await using var door = await overlay.Network.Host("door").ListenAsync("door:1", CancellationToken.None);
        int accepted = 0;
        var serving = Task.Run(async () =>
        {
            while (await door.AcceptAsync(CancellationToken.None) is { } connection)
            {
                if (Interlocked.Increment(ref accepted) == 1)
                {
                    await connection.Pipe.Input.ReadAsync();
                    connection.Abort();
                    continue;
                }
                var upstream = await overlay.Network.Host("door").ConnectAsync(overlay.Coordinator.ListenAddress, CancellationToken.None);
                _ = PumpAsync(connection.Pipe.Input, upstream.Pipe.Output);
                _ = PumpAsync(upstream.Pipe.Input, connection.Pipe.Output);
            }
        });

        var peer = await overlay.AddPeerAsync(joinAddress: "door:1");

        Assert.True(Volatile.Read(ref accepted) >= 2, $"the peer joined through connection {accepted}, not after a second try");
        overlay.StartStreaming();
        await overlay.WriteAsync(Overlay.RandomBytes(300_000, 11));
        await overlay.EndAsync();
        await overlay.AssertIdenticalAsync(overlay.PeerById(peer.Id));
    }

    private static async Task PumpAsync(PipeReader from, PipeWriter to)
    {
        try
        {
            while (true)
            {
                var result = await from.ReadAsync();
                foreach (var segment in result.Buffer) await to.WriteAsync(segment);
                from.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted || result.IsCanceled) break;
            }
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ConnectionFailedException)
        {
            // The other side went away: so does this direction.
        }
        await to.CompleteAsync();
    }
}

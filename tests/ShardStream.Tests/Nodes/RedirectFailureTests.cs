using ShardStream.Transport;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// A joiner sent on by a peer to an address it cannot reach says which node sent it there: the
/// address in its error is not the one it was given. Found by an acceptance run across network
/// namespaces: an IPv6-only viewer joined through a dual-stack peer ([fd24:1:0:2::2]:2001), which
/// redirected it to the IPv4 address it reached the coordinator at, and the viewer's one error line
/// was "cannot connect to 10.241.1.2:1234: Network is unreachable", an address it never typed
/// (the redirect was only in an info line, which a terminal's status line hides).
/// </summary>
public sealed class RedirectFailureTests
{
    [Fact]
    public async Task A_joiner_that_cannot_reach_where_a_peer_redirected_it_names_that_peer()
    {
        await using var overlay = await Overlay.StartAsync(shards: 1);
        var first = await overlay.AddPeerAsync();
        overlay.Network.Block("p2", "coord");
        var failed = await Assert.ThrowsAsync<ConnectionFailedException>(() => overlay.AddPeerAsync(joinAddress: first.ListenAddress));
        Assert.Contains("cannot connect to coord:1", failed.Message, StringComparison.Ordinal);
        Assert.Contains($"where {first.ListenAddress} redirected the join", failed.Message, StringComparison.Ordinal);
    }
}

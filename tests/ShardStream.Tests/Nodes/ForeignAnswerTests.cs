using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using ShardStream.Nodes;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// What a peer says when the address it joins through answers with no ShardStream frame: the
/// library gives the fact (this address does not speak the protocol, which service answered when
/// its first line tells, and that line) and names no CLI flag; the CLI adds which of a node's ports
/// to give (CliErrorTests).
/// </summary>
public sealed class ForeignAnswerTests
{
    [Theory]
    [InlineData("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "an HTTP server answered", "HTTP/1.1 400 Bad Request")]
    [InlineData("RTMP server: not an RTMP handshake\r\n", "an RTMP server answered", "RTMP server: not an RTMP handshake")]
    [InlineData("SSH-2.0-OpenSSH_9.6\r\n", null, "SSH-2.0-OpenSSH_9.6")]
    public async Task A_foreign_answer_is_named_without_cli_flags(string answer, string? service, string text)
    {
        var network = new VirtualNetwork();
        await using var listener = await network.Host("node").ListenAsync("node:1", CancellationToken.None);
        var joinerSide = await network.Host("joiner").ConnectAsync("node:1", CancellationToken.None);
        var nodeSide = (await listener.AcceptAsync(CancellationToken.None))!;
        await nodeSide.Pipe.Output.WriteAsync(Encoding.ASCII.GetBytes(answer));
        await using var link = new Link(joinerSide, "coordinator node:1", new TestOptions().LinkOptions, NullLogger.Instance, TimeProvider.System);

        var e = await Assert.ThrowsAnyAsync<ProtocolException>(() => JoinAnswer.ReadAsync(link, "node:1", TimeSpan.FromSeconds(30), landmarksAllowed: false, CancellationToken.None));

        Assert.StartsWith("node:1 does not speak the ShardStream protocol", e.Message, StringComparison.Ordinal);
        Assert.Contains($"(it begins with text: \"{text}\")", e.Message, StringComparison.Ordinal);
        if (service is null) Assert.DoesNotContain("server answered", e.Message, StringComparison.Ordinal);
        else Assert.Contains(service, e.Message, StringComparison.Ordinal);
        // The library's own line names no flag of the CLI: a front end adds its own hint.
        Assert.DoesNotContain("--http", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("-l)", e.Message, StringComparison.Ordinal);
        await nodeSide.DisposeAsync();
    }

    private sealed record TestOptions : NodeOptions;
}

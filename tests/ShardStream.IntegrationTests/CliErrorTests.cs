using System.Net;
using System.Net.Sockets;

namespace ShardStream.IntegrationTests;

/// <summary>Wrong input gives one line on stderr, a non-zero exit code and no stack trace.</summary>
[Collection(BesideCliCollection.Name)]
public sealed class CliErrorTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private static async Task<(int Exit, string Stderr)> RunAsync(params string[] args)
    {
        await using var process = CliProcess.Start(args);
        process.StandardInput.Close();
        var (exit, _) = await process.WaitForExitAsync(Deadline);
        return (exit, process.Stderr);
    }

    private static void AssertOneLineError(string stderr, string expectedFragment)
    {
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var errors = lines.Where(l => l.StartsWith("shardstream: error:", StringComparison.Ordinal)).ToList();
        Assert.True(errors.Count == 1, $"expected one error line, got:\n{stderr}");
        Assert.Contains(expectedFragment, errors[0]);
        Assert.DoesNotContain(lines, l => l.TrimStart().StartsWith("at ", StringComparison.Ordinal));
    }

    /// <summary>A loopback port nothing listens on (bound for a moment, then given back).</summary>
    private static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    [Fact]
    public async Task Coordinator_that_cannot_listen_says_so()
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen();
        int port = ((IPEndPoint)taken.LocalEndPoint!).Port;

        var (exit, stderr) = await RunAsync("coordinator", "-l", $"127.0.0.1:{port}");

        Assert.NotEqual(0, exit);
        AssertOneLineError(stderr, $"cannot listen on 127.0.0.1:{port}");
    }

    [Fact]
    public async Task Peer_that_cannot_reach_its_start_address_says_so()
    {
        int port = FreePort();

        var (exit, stderr) = await RunAsync("peer", "-c", $"127.0.0.1:{port}");

        Assert.NotEqual(0, exit);
        AssertOneLineError(stderr, $"cannot connect to 127.0.0.1:{port}");
    }

    // A load generator that joined nothing measured nothing: it said so only in its report on
    // stdout, and exited 0.
    [Fact]
    public async Task Swarm_that_cannot_reach_its_coordinator_says_so()
    {
        int port = FreePort();

        var (exit, stderr) = await RunAsync("swarm", "-c", $"127.0.0.1:{port}", "--peers", "3", "--join-rate", "100", "--hold", "0");

        Assert.NotEqual(0, exit);
        AssertOneLineError(stderr, $"not one of 3 joins to 127.0.0.1:{port} succeeded (3 x Connection refused)");
    }

    [Theory]
    [InlineData("0")]
    [InlineData("17")]
    public async Task Invalid_shard_count_is_refused_with_a_clear_message(string shards)
    {
        var (exit, stderr) = await RunAsync("coordinator", "-l", "127.0.0.1:0", "-s", shards);

        Assert.NotEqual(0, exit);
        AssertOneLineError(stderr, $"shard count {shards} is not supported: use 1 to 16");
    }

    [Theory]
    [InlineData("Unrecognized command or argument '--bogus'", "peer", "-c", "127.0.0.1:1", "--bogus")]
    // An unknown command is said so, with or without --help (which printed the main help and exited 0).
    [InlineData("unknown command 'relay': the commands are coordinator, peer, demo, simulate, swarm (--help lists them)", "relay", "--help")]
    [InlineData("unknown command 'relay': the commands are coordinator, peer, demo, simulate, swarm (--help lists them)", "relay", "-c", "127.0.0.1:1")]
    // Two reasons are joined by "; ", without the parser's full stop before it (it read "'--rejoin-seconds'.; Unrecognized").
    [InlineData("Unrecognized command or argument '--rejoin-seconds'; Unrecognized command or argument '0' (--help lists the flags)", "coordinator", "-l", "127.0.0.1:0", "--rejoin-seconds", "0")]
    [InlineData("--topology: 'ring' is not one of binary, tessellated, striped", "coordinator", "-l", "127.0.0.1:0", "--topology", "ring")]
    [InlineData("Option '--connect' is required", "peer")]
    [InlineData("--upload: 'abc' is not a number", "peer", "-c", "127.0.0.1:1", "--upload", "abc")]
    [InlineData("--peers: 'many' is not a whole number", "simulate", "--peers", "many")]
    [InlineData("--topology: 'foo' is not one of binary, tessellated, striped", "simulate", "--peers", "10", "--topology", "foo")]
    [InlineData("--topology: 'ring' is not one of binary, tessellated, striped", "demo", "--topology", "ring")]
    [InlineData("--upload: '1,5' is not a number (decimals take a dot: 1.5)", "peer", "-c", "127.0.0.1:1", "--upload", "1,5")]
    [InlineData("--upload: '2,5' is not a number (decimals take a dot: 2.5)", "simulate", "--peers", "10", "--upload", "2,5")]
    [InlineData("--shards must be between 1 and 16, got 0", "simulate", "--peers", "10", "--shards", "0")]
    [InlineData("'garbage' is not a stream address: it must be the 64 hex digits the coordinator prints at start", "peer", "-c", "127.0.0.1:1", "--stream", "garbage")]
    [InlineData("the replay window (--replay-seconds, 1 s) must be longer than the 2 s", "coordinator", "-l", "127.0.0.1:0", "--replay-seconds", "1")]
    [InlineData("cannot create the key file /nonexistent-shardstream-dir/stream.key", "coordinator", "-l", "127.0.0.1:0", "--key", "/nonexistent-shardstream-dir/stream.key")]
    // Before: "The value cannot be an empty string. (Parameter 'path')", and for a directory "cannot create the key file /: The file '/' already exists."
    [InlineData("--key: the file name cannot be empty", "coordinator", "-l", "127.0.0.1:0", "--key", "")]
    [InlineData("the key file / is a directory", "coordinator", "-l", "127.0.0.1:0", "--key", "/")]
    // Values the parser takes as numbers but nothing after it can use: a stack trace before.
    [InlineData("--latency-aware: 'maybe' is not one of true, false", "coordinator", "-l", "127.0.0.1:0", "--latency-aware", "maybe")]
    [InlineData("--latency-aware: 'yes' is not one of true, false", "simulate", "--peers", "10", "--latency", "world", "--latency-aware", "yes")]
    [InlineData("--heartbeat-timeout: 'NaN' is not a number", "coordinator", "-l", "127.0.0.1:0", "--heartbeat-timeout", "NaN")]
    [InlineData("--upload: 'Infinity' is not a number", "simulate", "--peers", "10", "--upload", "Infinity")]
    [InlineData("--rejoin-seconds: '1e300' is out of range (at most 1,000,000)", "peer", "-c", "127.0.0.1:1", "--rejoin-seconds", "1e300")]
    // An address is checked before anything starts, and the error names its flag.
    [InlineData("--rtmp: 'nonsense' is not an address of the form HOST:PORT", "coordinator", "-l", "127.0.0.1:0", "--rtmp", "nonsense")]
    [InlineData("--rtmp-play: 'nonsense' is not an address of the form HOST:PORT", "peer", "-c", "127.0.0.1:1", "--rtmp-play", "nonsense")]
    [InlineData("--rtmp-play-name: the stream name cannot be empty", "coordinator", "-l", "127.0.0.1:0", "--rtmp-play", "127.0.0.1:0", "--rtmp-play-name", "")]
    // The simulator names the flags, not the planner's options.
    [InlineData("--topology binary needs --shards 1, not 2", "simulate", "--peers", "10", "--topology", "binary", "--shards", "2")]
    [InlineData("--upload (-1) cannot be negative", "simulate", "--peers", "10", "--upload", "-1")]
    [InlineData("--source-upload (0.5) must allow one shard-stream per shard", "simulate", "--peers", "10", "--source-upload", "0.5")]
    [InlineData("--coordinator-pid: no process -1 on this machine", "swarm", "-c", "127.0.0.1:1", "--coordinator-pid", "-1")]
    [InlineData("--latency-rebuild-min-peers must be at least 20, got 5", "simulate", "--peers", "10", "--latency", "world", "--improve-seconds", "1", "--latency-rebuild", "--latency-rebuild-min-peers", "5")]
    [InlineData("the fewest peers for a rebuild by regions (--latency-rebuild-min-peers) must be at least 20, got 5", "coordinator", "-l", "127.0.0.1:0", "--latency-rebuild", "--latency-rebuild-min-peers", "5")]
    // A flag that only matters with another is refused without it (it was silently ignored).
    [InlineData("--latency-rebuild-min-peers has no effect without --latency world or matrix:FILE", "simulate", "--peers", "10", "--latency-rebuild-min-peers", "100")]
    [InlineData("--latency-rebuild-min-peers has no effect without --improve-seconds", "simulate", "--peers", "10", "--latency", "world", "--latency-rebuild-min-peers", "100")]
    [InlineData("--latency-rebuild-min-peers has no effect without --latency-rebuild", "simulate", "--peers", "10", "--latency-rebuild", "false", "--latency-rebuild-min-peers", "100")]
    [InlineData("--latency-rebuild-min-peers has no effect without --latency-rebuild", "coordinator", "-l", "127.0.0.1:0", "--latency-rebuild", "false", "--latency-rebuild-min-peers", "100")]
    [InlineData("--latency-rebuild-min-peers has no effect with --latency-aware false", "coordinator", "-l", "127.0.0.1:0", "-s", "4", "--latency-aware", "false", "--latency-rebuild-min-peers", "100")]
    [InlineData("--latency-rebuild-min-peers has no effect with --latency-moves 0", "coordinator", "-l", "127.0.0.1:0", "-s", "4", "--latency-moves", "0", "--latency-rebuild-min-peers", "100")]
    [InlineData("--rdp-breakdown has no effect without --latency world", "simulate", "--peers", "10", "--rdp-breakdown")]
    [InlineData("--improve-seconds has no effect without --latency world or matrix:FILE", "simulate", "--peers", "10", "--improve-seconds", "5")]
    [InlineData("--latency-moves has no effect without --latency world or matrix:FILE", "simulate", "--peers", "10", "--latency-moves", "8")]
    [InlineData("--latency-moves has no effect without --improve-seconds", "simulate", "--peers", "10", "--latency", "world", "--latency-moves", "8")]
    [InlineData("--latency-rebuild has no effect without --latency world or matrix:FILE", "simulate", "--peers", "10", "--latency-rebuild")]
    [InlineData("--latency-rebuild has no effect without --improve-seconds", "simulate", "--peers", "10", "--latency", "world", "--latency-rebuild")]
    [InlineData("--latency-rebuild has no effect with --latency-moves 0", "simulate", "--peers", "10", "--latency", "world", "--improve-seconds", "2", "--latency-rebuild", "--latency-moves", "0")]
    [InlineData("--latency-rebuild has no effect with --latency-moves 0", "coordinator", "-l", "127.0.0.1:0", "--latency-rebuild", "--latency-moves", "0")]
    [InlineData("--latency-moves has no effect with --latency-aware false", "coordinator", "-l", "127.0.0.1:0", "--latency-aware", "false", "--latency-moves", "8")]
    [InlineData("--latency-rebuild has no effect with --latency-aware false", "coordinator", "-l", "127.0.0.1:0", "--latency-aware", "false", "--latency-rebuild")]
    [InlineData("--rtmp-key has no effect without --rtmp", "coordinator", "-l", "127.0.0.1:0", "--rtmp-key", "k")]
    [InlineData("--rtmp-play-name has no effect without --rtmp-play", "coordinator", "-l", "127.0.0.1:0", "--rtmp-play-name", "tv")]
    [InlineData("--rtmp-play-name has no effect without --rtmp-play", "peer", "-c", "127.0.0.1:1", "--rtmp-play-name", "tv")]
    [InlineData("--quiet has no effect with --verbose", "coordinator", "-l", "127.0.0.1:0", "-v", "-q")]
    [InlineData("--quiet has no effect with --verbose", "peer", "-c", "127.0.0.1:1", "-q", "--verbose")]
    public async Task A_wrong_flag_or_value_is_refused_on_one_line_and_nothing_is_written_to_stdout(string expectedFragment, params string[] args)
    {
        await using var process = CliProcess.Start(args);
        process.StandardInput.Close();
        var (exit, _) = await process.WaitForExitAsync(Deadline);

        Assert.NotEqual(0, exit);
        AssertOneLineError(process.Stderr, expectedFragment);
        // Not the help either: a peer's stdout is the stream, piped into a player.
        Assert.Equal(0, process.StdoutBytes);
    }

    /// <summary>
    /// Every flag is checked before <c>--key</c> creates a missing key file: a refused command
    /// leaves no file behind (the checks once ran after it).
    /// </summary>
    [Theory]
    [InlineData("--latency-rebuild-min-peers has no effect without --latency-rebuild", "--latency-rebuild", "false", "--latency-rebuild-min-peers", "100")]
    [InlineData("--rtmp-key has no effect without --rtmp", "--rtmp-key", "k")]
    [InlineData("the replay window (--replay-seconds, 1 s) must be longer than the 2 s", "--replay-seconds", "1")]
    public async Task A_refused_coordinator_command_creates_no_key_file(string expectedFragment, params string[] flags)
    {
        string keyFile = Path.Combine(Path.GetTempPath(), $"shardstream-refused-{Guid.NewGuid():N}.pem");
        try
        {
            var (exit, stderr) = await RunAsync(["coordinator", "-l", "127.0.0.1:0", "--key", keyFile, .. flags]);

            Assert.NotEqual(0, exit);
            AssertOneLineError(stderr, expectedFragment);
            Assert.False(File.Exists(keyFile), $"the refused command left the key file {keyFile} behind");
        }
        finally
        {
            File.Delete(keyFile);
        }
    }

    /// <summary>
    /// The coordinator's <c>--help</c> names every case in which <c>--latency-rebuild-min-peers</c> is
    /// refused, as the code refuses it (the theory above): it named <c>--latency-rebuild false</c> alone.
    /// </summary>
    [Fact]
    public async Task Coordinator_help_names_every_refusal_of_latency_rebuild_min_peers()
    {
        var info = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { CliProcess.CliDll, "coordinator", "--help" }) info.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(info)!;
        string help = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync(new CancellationTokenSource(Deadline).Token);
        Assert.Equal(0, process.ExitCode);
        // System.CommandLine wraps the description: its words, whitespace joined.
        string flat = System.Text.RegularExpressions.Regex.Replace(help[help.IndexOf("--latency-rebuild-min-peers", StringComparison.Ordinal)..], @"\s+", " ");
        Assert.Contains("refused where the rebuild is off: with --latency-rebuild false, --latency-moves 0 or --latency-aware false", flat, StringComparison.Ordinal);
    }

    /// <summary>
    /// An --http address that cannot be bound, taken or not this machine's: one line that says so,
    /// and no stack trace in any form. (Before, the host logged "Hosting failed to start" with the
    /// whole trace on one line, and an address not of this machine ended in "Unhandled exception"
    /// and 30 lines of trace.)
    /// </summary>
    [Theory]
    [InlineData("coordinator", "taken")]
    [InlineData("peer", "taken")]
    [InlineData("coordinator", "192.0.2.1:8080")]
    [InlineData("peer", "192.0.2.1:8080")]
    public async Task An_http_address_that_cannot_be_bound_is_refused_on_one_line(string command, string address)
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen();
        if (address == "taken") address = $"127.0.0.1:{((IPEndPoint)taken.LocalEndPoint!).Port}";
        string[] node = command == "coordinator" ? ["coordinator", "-l", "127.0.0.1:0"] : ["peer", "-c", $"127.0.0.1:{FreePort()}"];

        var (exit, stderr) = await RunAsync([.. node, "--http", address]);

        Assert.Equal(1, exit);
        AssertOneLineError(stderr, $"cannot listen for HTTP on {address}");
        Assert.DoesNotContain("Exception", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain(" fail: ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Malformed_address_is_refused_with_a_clear_message()
    {
        var (exit, stderr) = await RunAsync("peer", "-c", "no-port-here");

        Assert.NotEqual(0, exit);
        AssertOneLineError(stderr, "'no-port-here' is not an address of the form HOST:PORT");
    }

    [Fact]
    public async Task Peer_that_speaks_to_a_non_shardstream_server_gets_a_clear_error()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var serve = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync();
            var stream = client.GetStream();
            // An HTTP server's answer: the length field is far over the frame limit.
            await stream.WriteAsync("HTTP/1.1 400 Bad Request\r\n\r\n"u8.ToArray());
            // Stay until the peer has read the answer and hung up (bounded).
            using var timeout = new CancellationTokenSource(Deadline);
            try
            {
                while (await stream.ReadAsync(new byte[256], timeout.Token) > 0)
                {
                }
            }
            catch (Exception e) when (e is IOException or OperationCanceledException)
            {
                // Reset or timed out: either way the peer is done with us.
            }
        });

        var (exit, stderr) = await RunAsync("peer", "-c", $"127.0.0.1:{port}");

        Assert.NotEqual(0, exit);
        // The address, what it is not, and what it said: a viewer that gave the node's --http (or
        // another service's) port learns which, not only that a frame was "over the limit".
        AssertOneLineError(stderr, $"127.0.0.1:{port} does not speak the ShardStream protocol");
        Assert.Contains("it begins with text: \"HTTP/1.1 400 Bad Request\"", stderr, StringComparison.Ordinal);
        Assert.Contains("not its --http or --rtmp one? An HTTP server answered:", stderr, StringComparison.Ordinal);
        await serve;
    }

    /// <summary>
    /// A peer given a node's --rtmp port: the RTMP server closes a connection whose first byte is
    /// not version 3, which the peer took for a loaded coordinator and retried until its rejoin
    /// time ended with "closed the connection: connection closed before a frame arrived" (60 s by
    /// default; 1 s here). The server now says what it is in one text line before it closes, so the
    /// peer ends at its first attempt with the hint that names the --rtmp port.
    /// </summary>
    [Fact]
    public async Task Peer_pointed_at_a_nodes_rtmp_port_is_told_it_is_an_rtmp_port()
    {
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "--rtmp", "127.0.0.1:0", "--rtmp-key", "k");
        var rtmp = await coordinator.WaitForRtmpAddressAsync(Deadline);

        var (exit, stderr) = await RunAsync("peer", "-c", rtmp.ToString(), "--rejoin-seconds", "1");

        Assert.NotEqual(0, exit);
        AssertOneLineError(stderr, $"{rtmp} does not speak the ShardStream protocol; is it a node's overlay port (its -l), not its --http or --rtmp one?");
        Assert.Contains("it begins with text: \"RTMP", stderr, StringComparison.Ordinal);
        Assert.Contains("not its --http or --rtmp one? An RTMP server answered:", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("connection closed before a frame arrived", stderr, StringComparison.Ordinal);
    }
}

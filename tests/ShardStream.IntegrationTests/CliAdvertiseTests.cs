using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The README's <c>--advertise HOST:PORT</c> through the real CLI on loopback: a viewer listens on
/// 127.0.0.2 and is reachable only through a port forward at 127.0.0.3 (a TCP relay in this test,
/// as a router's forwarded port would be). It advertises the forward; the coordinator lists it
/// there, its child connects there, and both write the exact stream.
/// </summary>
[Collection(BesideCliCollection.Name)]
public sealed partial class CliAdvertiseTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(2);

    [Fact]
    public async Task A_viewer_behind_a_forwarded_port_is_reached_at_the_address_it_advertises()
    {
        int listenPort = FreePort(IPAddress.Parse("127.0.0.2"));
        await using var forward = PortForward.Start(new IPEndPoint(IPAddress.Parse("127.0.0.3"), 0), new IPEndPoint(IPAddress.Parse("127.0.0.2"), listenPort));
        string advertised = $"127.0.0.3:{forward.Port}";
        var source = new byte[4 << 20];
        new Random(6).NextBytes(source);

        // coordinator (1 slot) -> A (1) -> B (0): B can only be placed under A.
        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "--upload", "1", "--min-peers", "2", "--latency-aware", "false");
        string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(30));
        await using var a = CliProcess.Start("peer", "-c", address, "-l", $"127.0.0.2:{listenPort}", "--advertise", advertised, "--upload", "1");
        int aId = await JoinedAsync(a);
        await using var b = CliProcess.Start("peer", "-c", address, "--upload", "0");
        await JoinedAsync(b);

        Assert.Contains(coordinator.StderrLines, l => l.Contains($"peer {aId} ({advertised}) joined", StringComparison.Ordinal));
        string bJoined = b.StderrLines.First(l => JoinedRegex().IsMatch(l));
        Assert.True(bJoined.Contains($"shard 0 from peer {aId} {advertised}", StringComparison.Ordinal), $"B is not under A at {advertised}: {bJoined}");

        await coordinator.StandardInput.WriteAsync(source);
        coordinator.StandardInput.Close();
        var (coordinatorExit, _) = await coordinator.WaitForExitAsync(Deadline);
        Assert.True(coordinatorExit == 0, $"coordinator exited with {coordinatorExit}:\n{coordinator.Stderr}");
        string expected = Convert.ToHexStringLower(SHA256.HashData(source));
        foreach (var (viewer, name) in new[] { (a, "A"), (b, "B") })
        {
            var (exit, sha) = await viewer.WaitForExitAsync(Deadline);
            Assert.True(exit == 0, $"{name} exited with {exit}:\n{viewer.Stderr}");
            Assert.True(expected == sha, $"{name} wrote {viewer.StdoutBytes} of {source.Length} bytes, not the source:\n{viewer.Stderr}");
        }
        // The coordinator's dial-back probe and B's link (at least) came through the forward.
        Assert.True(forward.Accepted >= 2, $"{forward.Accepted} connection(s) through the forward");
        Assert.DoesNotContain(a.StderrLines, l => l.Contains("relays nothing", StringComparison.Ordinal));
    }

    private static int FreePort(IPAddress address)
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(address, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    /// <summary>Waits for the peer's "joined as peer N" line and returns N.</summary>
    private static async Task<int> JoinedAsync(CliProcess peer)
    {
        var deadline = DateTime.UtcNow + Deadline;
        while (true)
        {
            var m = peer.StderrLines.Select(l => JoinedRegex().Match(l)).FirstOrDefault(m => m.Success);
            if (m is not null) return int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            if (peer.HasExited || DateTime.UtcNow > deadline) throw new TimeoutException($"the peer did not join:\n{peer.Stderr}");
            await Task.Delay(20);
        }
    }

    [GeneratedRegex(@"joined as peer (\d+) ")]
    private static partial Regex JoinedRegex();

    /// <summary>A TCP port forward: every connection accepted is relayed, both ways, to one target.</summary>
    private sealed class PortForward : IAsyncDisposable
    {
        private readonly TcpListener _listener;
        private readonly IPEndPoint _target;
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _relays = [];
        private Task _accepting = Task.CompletedTask;
        private int _accepted;

        private PortForward(TcpListener listener, IPEndPoint target)
        {
            _listener = listener;
            _target = target;
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public int Accepted => Volatile.Read(ref _accepted);

        public static PortForward Start(IPEndPoint at, IPEndPoint target)
        {
            var listener = new TcpListener(at);
            listener.Start();
            var forward = new PortForward(listener, target);
            forward._accepting = forward.AcceptAsync();
            return forward;
        }

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                    Interlocked.Increment(ref _accepted);
                    lock (_relays) _relays.Add(RelayAsync(client));
                }
            }
            catch (OperationCanceledException)
            {
                // Disposed.
            }
        }

        private async Task RelayAsync(TcpClient client)
        {
            using var inbound = client;
            using var outbound = new TcpClient(AddressFamily.InterNetwork);
            try
            {
                await outbound.ConnectAsync(_target, _stop.Token);
                var a = inbound.GetStream();
                var b = outbound.GetStream();
                // When one side ends, the other is ended too, as a forwarded connection would be.
                await Task.WhenAny(a.CopyToAsync(b, _stop.Token), b.CopyToAsync(a, _stop.Token));
            }
            catch (Exception e) when (e is IOException or SocketException or OperationCanceledException)
            {
                // A reset or the end of the test: the connection is closed below.
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Stop();
            await _accepting;
            Task[] relays;
            lock (_relays) relays = [.. _relays];
            await Task.WhenAll(relays);
            _stop.Dispose();
        }
    }
}

using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// One IPv6 host is one stranger, whichever of its /64's 2^64 addresses it connects from
/// (docs/security.md, "a flood of connections"). The real CLI runs in a network namespace of its
/// own whose loopback has addresses of two /64s (fd00:244::/64 and fd00:244:0:1::/64, unique-local,
/// reachable from nowhere else); the test's sockets are made in that namespace (setns on a thread
/// of their own) and bound to one address each.
/// </summary>
public sealed class Ipv6ShareTests(ITestOutputHelper output)
{
    private const string Prefix = "ss-v6-";
    private const string Net = "fd00:244::";
    private const string OtherNet = "fd00:244:0:1::";
    private const int Limit = 512;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(90);

    /// <summary>
    /// A coordinator limited to 512 descriptors takes 64 HTTP connections, 16 from one address,
    /// and 8 RTMP connections from one address. 16 idle HTTP connections from 16 addresses of one
    /// /64 fill that /64's share: a request from a 17th address of it is answered 503 "… from your
    /// address", one from another /64 is answered; 8 idle RTMP connections from 8 addresses of one
    /// /64 fill its 8, a 9th from a 9th address is reset at accept and counted, with the /64 named,
    /// and one from another /64 gets its handshake. Before, each address was its own share: the
    /// 17th HTTP request and the 9th RTMP connection were served.
    /// </summary>
    [Fact]
    public async Task Addresses_of_one_IPv6_64_share_one_addresss_places_at_the_http_and_rtmp_ports()
    {
        if (RequiresTool.Missing(output, NetnsHosts.Unavailable())) return;
        if (RequiresTool.Missing(output, RequiresTool.FindOnPath("prlimit") is null ? "'prlimit' (util-linux) not on PATH" : null)) return;

        const int httpShare = Limit / 8 / 4, rtmpShare = 8;
        using var netns = Namespace.Create(output, [$"{Net}1", .. Enumerable.Range(0x100, httpShare + 1).Select(i => $"{Net}{i:x}"), $"{OtherNet}100"]);
        await using var coordinator = CliProcess.StartInWithDescriptorLimit(netns.Name, Limit, Limit,
            "coordinator", "-l", $"[{Net}1]:0", "--http", $"[{Net}1]:0", "--rtmp", $"[{Net}1]:0", "--rtmp-key", "k");
        var http = IPEndPoint.Parse(new Uri(await Prometheus.WaitForHttpAsync(coordinator, Deadline)).Authority);
        var rtmp = await coordinator.WaitForRtmpAddressAsync(Deadline);
        var idle = new List<Socket>();
        try
        {
            for (int i = 0; i < httpShare; i++) idle.Add(await netns.ConnectAsync(IPAddress.Parse($"{Net}{0x100 + i:x}"), http));
            string refused = await GetAsync(await netns.ConnectAsync(IPAddress.Parse($"{Net}{0x100 + httpShare:x}"), http));
            Assert.StartsWith("HTTP/1.1 503", refused, StringComparison.Ordinal);
            Assert.Contains($"busy: {httpShare} HTTP connections are open from your address", refused, StringComparison.Ordinal);
            Assert.StartsWith("HTTP/1.1 200", await GetAsync(await netns.ConnectAsync(IPAddress.Parse($"{OtherNet}100"), http)), StringComparison.Ordinal);
            await coordinator.WaitUntilAsync(() => coordinator.StderrLines.Any(l => l.Contains($": {httpShare} open from {Net}/64, a quarter of the most this node takes", StringComparison.Ordinal)),
                "the http refusal names the /64", Deadline);

            for (int i = 0; i < rtmpShare; i++) idle.Add(await netns.ConnectAsync(IPAddress.Parse($"{Net}{0x100 + i:x}"), rtmp));
            Assert.False(await RtmpServedAsync(netns, IPAddress.Parse($"{Net}{0x100 + rtmpShare:x}"), rtmp), "a 9th RTMP connection from the /64 was served");
            await coordinator.WaitUntilAsync(() => coordinator.StderrLines.Any(l => l.Contains($"{rtmpShare} RTMP connections open from {Net}/64, the limit per address", StringComparison.Ordinal)),
                "the rtmp refusal names the /64", Deadline);
            using (var other = await netns.ConnectAsync(IPAddress.Parse($"{OtherNet}100"), rtmp))
                Assert.True(await RawSockets.RtmpAnswersAsync(other, Deadline), "an RTMP connection from another /64 was not served");
            Assert.False(coordinator.HasExited, $"the coordinator exited:\n{coordinator.Stderr}");
        }
        finally
        {
            foreach (var socket in idle) socket.Dispose();
        }
    }

    /// <summary>
    /// Whether a connection from <paramref name="from"/> gets the RTMP handshake. The server resets a
    /// refused one at accept, which a loaded machine can let happen before the connect returns
    /// (the kernel finished the handshake, the reset came, and only then was the socket's error
    /// read): the connect then fails with "connection reset", a refusal like the other.
    /// </summary>
    private static async Task<bool> RtmpServedAsync(Namespace netns, IPAddress from, IPEndPoint rtmp)
    {
        Socket socket;
        try
        {
            socket = await netns.ConnectAsync(from, rtmp);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
        {
            return false;
        }
        using (socket) return await RawSockets.RtmpAnswersAsync(socket, Deadline);
    }

    /// <summary>Sends one GET and returns the whole answer (the server closes); disposes the socket.</summary>
    private static async Task<string> GetAsync(Socket socket)
    {
        using var _ = socket;
        return await RawSockets.ExchangeAsync(socket, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"u8.ToArray(), Deadline);
    }

    /// <summary>A network namespace whose loopback has the given IPv6 addresses; sockets are made in it.</summary>
    private sealed class Namespace : IDisposable
    {
        private const int CloneNewNet = 0x40000000;
        private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(30);
        private readonly ITestOutputHelper _output;

        private Namespace(string name, ITestOutputHelper output)
        {
            Name = name;
            _output = output;
        }

        public string Name { get; }

        public static Namespace Create(ITestOutputHelper output, IEnumerable<string> addresses)
        {
            var ns = new Namespace($"{Prefix}{Environment.ProcessId}-{Random.Shared.Next(0x10000):x4}", output);
            Ip("netns", "add", ns.Name);
            try
            {
                Ip("-n", ns.Name, "link", "set", "lo", "up");
                // nodad: usable at once, no duplicate address detection to wait for on a loopback.
                foreach (string a in addresses) Ip("-n", ns.Name, "-6", "addr", "add", $"{a}/128", "dev", "lo", "nodad");
            }
            catch
            {
                ns.Dispose();
                throw;
            }
            output.WriteLine($"netns: {ns.Name} with {string.Join(", ", addresses)} on lo");
            return ns;
        }

        /// <summary>A TCP connection from <paramref name="from"/> to <paramref name="to"/>, both in this namespace.</summary>
        public Task<Socket> ConnectAsync(IPAddress from, IPEndPoint to) => RawSockets.ConnectAsync(MakeSocket(from), to, Deadline);

        /// <summary>
        /// A socket bound to <paramref name="from"/>, made in this namespace: a socket belongs to the
        /// namespace of the thread that made it, so a thread of its own enters the namespace
        /// (setns, which changes that thread alone) and ends once it made it.
        /// </summary>
        private Socket MakeSocket(IPAddress from)
        {
            Socket? socket = null;
            Exception? error = null;
            var thread = new Thread(() =>
            {
                try
                {
                    using var handle = File.OpenHandle($"/var/run/netns/{Name}");
                    if (SetNs((int)handle.DangerousGetHandle(), CloneNewNet) != 0) throw new IOException($"setns({Name}) failed: errno {Marshal.GetLastPInvokeError()}");
                    socket = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp);
                    socket.Bind(new IPEndPoint(from, 0));
                }
                catch (Exception e)
                {
                    socket?.Dispose();
                    error = e;
                }
            });
            thread.Start();
            thread.Join();
            return error is null ? socket! : throw new InvalidOperationException($"cannot make a socket in {Name} from {from}: {error.Message}", error);
        }

        private static void Ip(params string[] args)
        {
            var run = RequiresTool.Run("ip", args, CommandTimeout);
            if (run.ExitCode != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)} failed ({run.ExitCode}): {run.Stderr.Trim()}");
        }

        public void Dispose()
        {
            var run = RequiresTool.Run("ip", ["netns", "del", Name], CommandTimeout);
            if (run.ExitCode != 0) _output.WriteLine($"netns: could not remove {Name}: {run.Stderr.Trim()}");
        }
    }

    [DllImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static extern int SetNs(int fd, int nstype);
}

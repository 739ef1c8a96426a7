using Microsoft.Extensions.Logging;
using ShardStream.Topology;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// Reachability: a joiner that other peers could not connect to is not made a parent (a dial-back
/// probe before it is placed), a child that cannot connect to its parent gets another one, and a
/// parent that several children cannot reach becomes a leaf.
/// </summary>
public sealed partial class Coordinator
{
    /// <summary>How long the dial-back may take: half the heartbeat timeout (the joiner waits twice its own for the welcome).</summary>
    private TimeSpan ProbeTimeout => _options.HeartbeatTimeout / 2;

    /// <summary>The round trip of the last successful probe per address (hello sent to welcome read), for the overlay's view.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, TimeSpan> _probeRtts = new();

    /// <summary>
    /// Connects to <paramref name="address"/>, where the coordinator is about to send other peers
    /// for the joiner's shards, and checks that the very joiner answers there: it must echo the
    /// token of its Join (another node at that address, e.g. another peer behind the same NAT
    /// address, would answer with its own). Null when it does; else why not, in words.
    /// </summary>
    private async Task<string?> ProbeAsync(string address, ulong token)
    {
        using var timeout = new CancellationTokenSource(ProbeTimeout, Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, Stopping);
        Link? link = null;
        try
        {
            link = NewLink(await Transport.ConnectForControlAsync(address, linked.Token).ConfigureAwait(false), $"probe {address}");
            long sent = Time.GetTimestamp();
            await link.WriteNowAsync(new Hello(Protocol.ProbeVersion, Protocol.Version, HelloRole.Probe, 0, 0, [], ListenAddress).Write, linked.Token).ConfigureAwait(false);
            var (type, body) = await link.ReadOneAsync(linked.Token).ConfigureAwait(false);
            var rtt = Time.GetElapsedTime(sent);
            var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(body));
            if (type != FrameType.Welcome || !Welcome.TryRead(ref reader, out var answer)) return $"something answered at {address}, but not as a ShardStream peer ({type} frame)";
            if (answer.PeerId != token) return $"another ShardStream node answers at {address}, not this peer";
            ShardStreamMetrics.ProbeRtt.Record(rtt.TotalSeconds);
            _probeRtts[address] = rtt;
            return null;
        }
        catch (OperationCanceledException) when (!Stopping.IsCancellationRequested && link is not null)
        {
            // The address accepted the connection, so it is reachable; only the answer is late,
            // which a busy machine explains (a CI run at load 90 saw honest loopback peers miss
            // 2.5 s). The peer keeps its budget: if its children cannot use it after all, they
            // say so and it is made a leaf then (DropUnreachableEdges).
            ReachabilityLog.ProbeAnsweredLate(Log, address, ProbeTimeout.TotalSeconds);
            return null;
        }
        catch (OperationCanceledException) when (!Stopping.IsCancellationRequested)
        {
            return $"no connection within {ProbeTimeout.TotalSeconds:0.#} s";
        }
        catch (Exception e) when (e is ConnectionFailedException or IOException or ProtocolException or System.Net.Sockets.SocketException)
        {
            return e.Message;
        }
        finally
        {
            if (link is not null) _ = CloseProbeAsync(link);
        }
    }

    private static async Task CloseProbeAsync(Link link)
    {
        await link.ShutdownAsync("probe done").ConfigureAwait(false);
        await link.DisposeAsync().ConfigureAwait(false);
    }
}

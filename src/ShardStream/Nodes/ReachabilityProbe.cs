using Microsoft.Extensions.Logging;
using System.Collections.Concurrent;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// The coordinator's dial-back probe: before anyone is placed under a joiner, the coordinator
/// connects to the address it would send other peers to, and checks that the very joiner answers
/// there. A joiner that does not is made a leaf (docs/resilience.md, reachability). Keeps the
/// round trip of the last successful probe per address of a placed peer, for the overlay's view.
/// </summary>
internal sealed class ReachabilityProbe(CoordinatorOptions options, ITransport transport, Func<IConnection, string, Link> newLink,
    Func<string> listenAddress, ILogger log, TimeProvider time, CancellationToken stopping)
{
    /// <summary>The round trip of the last successful probe per placed peer's address (hello sent to welcome read).</summary>
    private readonly ConcurrentDictionary<string, (TimeSpan Rtt, int PeerId)> _rtts = new();

    /// <summary>How long the dial-back may take: half the heartbeat timeout (the joiner waits twice its own for the welcome).</summary>
    private TimeSpan Timeout => options.HeartbeatTimeout / 2;

    /// <summary>The round trip of the probe to <paramref name="address"/>, where one was made and answered.</summary>
    public TimeSpan? RoundTrip(string address) => _rtts.TryGetValue(address, out var entry) ? entry.Rtt : null;

    /// <summary>A peer was placed: the round trip its probe took is kept, until it leaves (<see cref="Forget"/>).</summary>
    public void Record(string address, int peerId, TimeSpan rtt) => _rtts[address] = (rtt, peerId);

    /// <summary>
    /// Peer <paramref name="peerId"/> left the overlay: its address's round trip is forgotten,
    /// unless another peer was placed at that address since (a peer back as a new one while its
    /// old place was still kept for the rejoin grace keeps its own).
    /// </summary>
    public void Forget(string address, int peerId)
    {
        if (_rtts.TryGetValue(address, out var entry) && entry.PeerId == peerId) _rtts.TryRemove(KeyValuePair.Create(address, entry));
    }

    /// <summary>
    /// Connects to <paramref name="address"/>, where the coordinator is about to send other peers
    /// for the joiner's shards, and checks that the very joiner answers there: it must prove, over a
    /// fresh nonce, that it holds the token of its Join (<see cref="ProbeProof"/>; another node at
    /// that address, e.g. another peer behind the same NAT address, holds another). The probe is of
    /// version 16 only (<see cref="Protocol.ProbeProofVersion"/>): an older node answers it with
    /// Goodbye(VersionMismatch), and never with its token. Unreachable is null when it does, else says why not, in
    /// words. The round trip is only returned: kept (<see cref="Record"/>) once the joiner is
    /// placed, since a joiner probed and then refused, or one that never came back after its early
    /// probe, is never forgotten (a stranger joining again and again from new addresses grew this
    /// map by one entry each time).
    /// </summary>
    public async Task<ProbeOutcome> ProbeAsync(string address, ulong token)
    {
        using var timeout = new CancellationTokenSource(Timeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, stopping);
        Link? link = null;
        try
        {
            link = newLink(await transport.ConnectForControlAsync(address, linked.Token).ConfigureAwait(false), $"probe {address}");
            byte[] nonce = System.Security.Cryptography.RandomNumberGenerator.GetBytes(Protocol.NonceLength);
            long sent = time.GetTimestamp();
            await link.WriteNowAsync(new Hello(Protocol.ProbeProofVersion, Protocol.Version, HelloRole.Probe, 0, 0, [], listenAddress(), nonce).Write, linked.Token).ConfigureAwait(false);
            var (type, body) = await link.ReadOneAsync(linked.Token).ConfigureAwait(false);
            var rtt = time.GetElapsedTime(sent);
            var reader = new System.Buffers.SequenceReader<byte>(new System.Buffers.ReadOnlySequence<byte>(body));
            if (type == FrameType.Goodbye && Goodbye.TryRead(ref reader, out var refusal)) return new($"the node at {address} refused the probe: {refusal.Reason}", null);
            if (type != FrameType.Welcome || !Welcome.TryRead(ref reader, out var answer)) return new($"something answered at {address}, but not as a ShardStream peer ({type} frame)", null);
            if (answer.ProbeProof is not { } proof || !ProbeProof.Verify(token, nonce, proof)) return new($"another ShardStream node answers at {address}, not this peer (no proof of its join token)", null);
            ShardStreamMetrics.ProbeRtt.Record(rtt.TotalSeconds);
            return new(null, rtt);
        }
        catch (OperationCanceledException) when (!stopping.IsCancellationRequested && link is not null)
        {
            // The address accepted the connection, so it is reachable; only the answer is late,
            // which a busy machine explains (a CI run at load 90 saw honest loopback peers miss
            // 2.5 s). The peer keeps its budget: if its children cannot use it after all, they
            // say so and it is made a leaf then (RepairService.DropUnreachableEdges).
            ReachabilityLog.ProbeAnsweredLate(log, address, Timeout.TotalSeconds);
            return new(null, null);
        }
        catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
        {
            return new($"no connection within {Timeout.TotalSeconds:0.#} s", null);
        }
        catch (Exception e) when (e is ConnectionFailedException or IOException or ProtocolException or System.Net.Sockets.SocketException)
        {
            return new(e.Message, null);
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

/// <summary>What a dial-back found: why the joiner cannot be reached (null: it can), and the probe's round trip when it answered in time.</summary>
internal readonly record struct ProbeOutcome(string? Unreachable, TimeSpan? Rtt);

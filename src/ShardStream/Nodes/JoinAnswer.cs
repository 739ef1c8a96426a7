using System.Buffers;
using Microsoft.Extensions.Logging;
using ShardStream.Transport;
using ShardStream.Trust;
using ShardStream.Wire;

namespace ShardStream.Nodes;

/// <summary>
/// What a peer reads from a node it joins through or attaches to: a Welcome (or a redirect), the
/// landmarks a latency-aware coordinator wants measured first, or a Goodbye that says why not; and
/// the check that the coordinator's Welcome proves it holds the stream's key.
/// </summary>
internal static class JoinAnswer
{
    /// <summary>The welcome <paramref name="address"/> answers with, or (a join, <paramref name="landmarksAllowed"/>) the landmarks to measure first.</summary>
    public static async Task<(Welcome Welcome, Landmarks? Landmarks)> ReadAsync(Link link, string address, TimeSpan within, bool landmarksAllowed, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(within);
        (FrameType Type, byte[] Body) frame;
        try
        {
            frame = await link.ReadOneAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new JoinInterruptedException($"{address} did not answer within {within.TotalSeconds:0.#} s") { Unanswered = true };
        }
        catch (IOException e)
        {
            throw new JoinInterruptedException($"{address} closed the connection: {e.Message}", e);
        }
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(frame.Body));
        if (frame.Type == FrameType.Goodbye)
        {
            string reason = Goodbye.TryRead(ref reader, out var bye) ? bye.Reason : "no reason given";
            if (bye.Code == GoodbyeCode.Busy) throw new CoordinatorBusyException($"{address} is busy: {reason}");
            // Stopped as too slow (its goodbye on the old control link was lost): its own words.
            if (bye.Code == GoodbyeCode.TooSlow) throw new StreamInterruptedException(reason);
            throw new ConnectionFailedException($"{address} refused: {reason}");
        }
        if (frame.Type == FrameType.Landmarks && landmarksAllowed)
        {
            if (!Landmarks.TryRead(ref reader, out var landmarks)) throw new ProtocolException($"{address} sent a malformed landmarks frame");
            return (default, landmarks);
        }
        if (frame.Type != FrameType.Welcome || !Welcome.TryRead(ref reader, out var welcome))
            throw new ProtocolException($"{address} answered with a {frame.Type} frame instead of a welcome");
        if (welcome.Version is < Protocol.MinVersion or > Protocol.Version)
            throw new ProtocolException($"{address} chose protocol version {welcome.Version}, this peer speaks {Protocol.MinVersion}..{Protocol.Version}");
        return (welcome, null);
    }

    /// <summary>
    /// The coordinator's placement must carry its public key, the run id and its signature over
    /// our nonce, our id and that run id: a node that answers in its place cannot make one, nor
    /// change the run. With <see cref="PeerOptions.Stream"/> the key must be that one; without, it
    /// is pinned for the rest of the run and logged; <paramref name="pinned"/> (at a rejoin, the key
    /// of the first join) must then be the key. Returns the run joined.
    /// </summary>
    public static StreamRun CheckProof(string address, Welcome welcome, byte[] nonce, StreamKey? wanted, StreamKey? pinned, ILogger log)
    {
        if (welcome.Proof is not { Length: Welcome.ProofLength } proof)
            throw new ProtocolException($"{address} placed this peer without proving it holds the stream's key");
        if (welcome.RunId is not { Length: Protocol.RunIdLength } runId)
            throw new ProtocolException($"{address} placed this peer without saying which run of the stream it joined");
        StreamKey key;
        try
        {
            key = StreamKey.FromBytes(proof.AsSpan(0, Protocol.KeyLength));
        }
        catch (ArgumentException)
        {
            throw new ProtocolException($"{address} sent a stream key that is not an Ed25519 public key");
        }
        var run = new StreamRun(key, runId);
        if (!run.VerifyJoin(nonce, welcome.PeerId, proof.AsSpan(Protocol.KeyLength)))
            throw new ProtocolException($"{address} did not prove it holds the key of stream {key.Address}: its signature over this peer's nonce and run {run.IdText} is wrong");
        if (wanted is not null)
        {
            if (!wanted.SameAs(key))
                throw new ConnectionFailedException($"{address} streams {key.Address}, not the stream asked for ({wanted.Address})");
            PeerLog.KeyProved(log, key.Address);
        }
        else if (pinned is not null)
        {
            // A rejoin: the key pinned at the first join, not the one that answers now.
            if (!pinned.SameAs(key))
                throw new ConnectionFailedException($"{address} now streams {key.Address}, not {pinned.Address}, the stream this peer pinned at its first join");
        }
        else
        {
            PeerLog.KeyPinned(log, key.Address, key.Address);
        }
        return run;
    }
}

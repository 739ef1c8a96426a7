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
    /// <remarks><paramref name="refused"/> may turn a Goodbye into the exception to throw (null: the default below).</remarks>
    public static async Task<(Welcome Welcome, Landmarks? Landmarks)> ReadAsync(Link link, string address, TimeSpan within, bool landmarksAllowed, CancellationToken cancellationToken,
        Func<Goodbye, Exception?>? refused = null)
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
        catch (ProtocolException e)
        {
            // The answer is no frame at all: another service (often a node's HTTP or RTMP server) answered.
            throw new NotShardStreamException(address, NotShardStreamException.ServiceOf(e.Text), e.Message);
        }
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(frame.Body));
        if (frame.Type == FrameType.Goodbye)
        {
            // A Goodbye(OtherStream) without its proof is malformed, yet its code and reason say what it
            // claims: the refusal's check then says that it proved nothing, not "no reason given".
            if (!Goodbye.TryRead(ref reader, out var bye)) bye = Goodbye.TryReadUnproved(new ReadOnlySequence<byte>(frame.Body)) ?? default;
            string reason = bye.Reason ?? "no reason given";
            if (refused?.Invoke(bye) is { } special) throw special;
            if (bye.Code == GoodbyeCode.Busy) throw new CoordinatorBusyException($"{address} is busy: {reason}");
            if (bye.Code == GoodbyeCode.TokenTaken) throw new JoinTokenTakenException($"{address} refused: {reason}");
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
        var key = KeyOf(proof) ?? throw new ProtocolException($"{address} sent a stream key that is not an Ed25519 public key");
        var run = new StreamRun(key, runId);
        if (!run.VerifyJoin(nonce, welcome.PeerId, proof.AsSpan(Protocol.KeyLength)))
            throw new ProtocolException($"{address} did not prove it holds the key of stream {key.Address}: its signature over this peer's nonce and run {run.IdText} is wrong");
        if ((wanted ?? pinned) is { } expected && !expected.SameAs(key)) throw OtherStream(address, key, wanted, pinned);
        if (wanted is not null) PeerLog.KeyProved(log, key.Address);
        // A rejoin checks the key pinned at the first join (above), and pins nothing again.
        else if (pinned is null) PeerLog.KeyPinned(log, key.Address, key.Address);
        return run;
    }

    /// <summary>
    /// A coordinator's Goodbye(OtherStream) (version 13): it refused this peer's Join, which named
    /// <paramref name="asked"/>, before placing it. Returns what to throw: the refusal, with the key
    /// it proved, when the proof (its key and a signature over our nonce, the stream asked for and its
    /// run id) holds and the key is not <paramref name="asked"/>; a protocol error otherwise. The peer
    /// would refuse an unproved refusal just the same; the proof only makes the line true.
    /// </summary>
    public static Exception CheckOtherStream(string address, Goodbye bye, byte[] nonce, byte[] asked, StreamKey? wanted, StreamKey? pinned)
    {
        if (bye.Proof is not { Length: Welcome.ProofLength } proof || bye.RunId is not { Length: Protocol.RunIdLength } runId)
            return new ProtocolException($"{address} refused this peer as a viewer of another stream without proving which stream it is: {bye.Reason}");
        if (KeyOf(proof) is not { } key)
            return new ProtocolException($"{address} refused this peer as a viewer of another stream with a key that is not an Ed25519 public key");
        var run = new StreamRun(key, runId);
        if (!run.VerifyOtherStream(nonce, asked, proof.AsSpan(Protocol.KeyLength)))
            return new ProtocolException($"{address} refused this peer as a viewer of another stream, but did not prove it holds the key of stream {key.Address}: its signature over this peer's nonce and run {run.IdText} is wrong");
        if (key.Bytes.AsSpan().SequenceEqual(asked))
            return new ProtocolException($"{address} refused this peer as a viewer of another stream, and proved it holds the key of the stream asked for ({key.Address})");
        return OtherStream(address, key, wanted, pinned);
    }

    /// <summary>The key at the start of a proof; null when it is no Ed25519 public key.</summary>
    private static StreamKey? KeyOf(byte[] proof)
    {
        try
        {
            return StreamKey.FromBytes(proof.AsSpan(0, Protocol.KeyLength));
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    /// <summary>The coordinator at <paramref name="address"/> proved it holds <paramref name="key"/>, not the stream this peer asked for or pinned: the refusal, in one line.</summary>
    private static ConnectionFailedException OtherStream(string address, StreamKey key, StreamKey? wanted, StreamKey? pinned) =>
        wanted is not null
            ? new($"the coordinator at {address} is not stream {wanted.Address}, the stream asked for: it proved it holds the key of stream {key.Address}")
            // A rejoin: the key pinned at the first join, not the one that answers now.
            : new($"{address} now streams {key.Address}, not {pinned!.Address}, the stream this peer pinned at its first join");
}

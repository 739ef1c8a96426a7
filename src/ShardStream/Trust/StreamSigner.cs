using NSec.Cryptography;
using ShardStream.Wire;

namespace ShardStream.Trust;

/// <summary>
/// The coordinator's private key: it signs the hash lists, the End and its answer to every
/// joiner's nonce. Kept in a file (PEM, PKCS#8) created with mode 0600 when missing, or made
/// fresh for one run (an ephemeral stream: its address changes every start).
/// </summary>
public sealed class StreamSigner : IDisposable
{
    private static readonly SignatureAlgorithm Ed25519 = SignatureAlgorithm.Ed25519;
    private readonly Key _key;

    private StreamSigner(Key key)
    {
        _key = key;
        PublicKey = StreamKey.FromBytes(key.PublicKey.Export(KeyBlobFormat.RawPublicKey));
    }

    /// <summary>The stream's identity.</summary>
    public StreamKey PublicKey { get; }

    /// <summary>A new key that lives only as long as this object.</summary>
    public static StreamSigner CreateEphemeral() => new(Key.Create(Ed25519));

    /// <summary>
    /// Loads the key in <paramref name="path"/>, or creates it there (mode 0600) when the file does
    /// not exist. <paramref name="created"/> says which. Throws <see cref="ArgumentException"/> with
    /// a reason for a user when the path is a directory, or the file cannot be read or holds no Ed25519 private key.
    /// </summary>
    public static StreamSigner LoadOrCreate(string path, out bool created)
    {
        created = false;
        if (Directory.Exists(path)) throw new ArgumentException($"the key file {path} is a directory");
        if (File.Exists(path))
        {
            byte[] blob;
            try
            {
                blob = File.ReadAllBytes(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ArgumentException($"cannot read the key file {path}: {e.Message}");
            }
            if (!Key.TryImport(Ed25519, blob, KeyBlobFormat.PkixPrivateKeyText, out var key, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.None }) || key is null)
                throw new ArgumentException($"{path} holds no Ed25519 private key (expected the PEM file this tool writes)");
            return new StreamSigner(key);
        }
        var fresh = Key.Create(Ed25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
        byte[] pem = fresh.Export(KeyBlobFormat.PkixPrivateKeyText);
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using var file = new FileStream(path, options);
            file.Write(pem);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            fresh.Dispose();
            throw new ArgumentException($"cannot create the key file {path}: {e.Message}");
        }
        created = true;
        return new StreamSigner(fresh);
    }

    internal byte[] Sign(byte[] message) => Ed25519.Sign(_key, message);

    /// <summary>
    /// The signer of one run of the stream: every signature it makes covers <paramref name="runId"/>
    /// (<see cref="StreamRun"/>), so that nothing signed in one run verifies in another run of the same key.
    /// </summary>
    internal RunSigner ForRun(byte[] runId) => new(this, runId);

    /// <inheritdoc />
    public void Dispose() => _key.Dispose();
}

/// <summary>
/// The coordinator's signatures for one run (one start of the coordinator): each covers the run id
/// it drew at start, besides what it signs (docs/protocol.md, "The run id"). Two runs of one key
/// share sequence numbers; without the run id a chunk of the first run, with its signed hash,
/// would verify in the second.
/// </summary>
internal sealed class RunSigner(StreamSigner signer, byte[] runId)
{
    /// <summary>The run: the stream's key and this run's id.</summary>
    public StreamRun Run { get; } = new(signer.PublicKey, runId);

    /// <summary>The stream's identity.</summary>
    public StreamKey PublicKey => signer.PublicKey;

    /// <summary>This run's id (<see cref="Protocol.RunIdLength"/> random bytes).</summary>
    public byte[] RunId => Run.Id;

    /// <summary>Proves to a joiner that this coordinator holds the key: a signature over its nonce, its new id and the run id.</summary>
    public byte[] SignJoin(ReadOnlySpan<byte> nonce, ulong peerId) => signer.Sign(StreamKey.Messages.Join(RunId, nonce, peerId));

    /// <summary>
    /// Tells a joiner that asked for stream <paramref name="asked"/> that this is another one, and
    /// proves which: a signature over its nonce, the key it asked for and the run id.
    /// </summary>
    public byte[] SignOtherStream(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> asked) => signer.Sign(StreamKey.Messages.OtherStream(RunId, nonce, asked));

    /// <summary>Signs the end of the stream.</summary>
    public byte[] SignEnd(ulong finalSeq, ulong finalOffset) => signer.Sign(StreamKey.Messages.End(RunId, finalSeq, finalOffset));

    /// <summary>Signs a list of chunk hashes of one shard.</summary>
    public HashList SignHashList(byte shard, ulong firstSeq, byte[] hashes) =>
        new(shard, firstSeq, hashes, signer.Sign(StreamKey.Messages.HashList(RunId, shard, firstSeq, hashes)));

    /// <summary>Signs an admission ticket's body.</summary>
    public byte[] SignTicket(ReadOnlySpan<byte> body) => signer.Sign(StreamKey.Messages.Ticket(RunId, body));

    /// <summary>Signs a media header for newcomers.</summary>
    public StreamHeader SignHeader(byte format, uint generation, ulong fromSeq, byte[] bytes) =>
        new(format, generation, fromSeq, bytes, signer.Sign(StreamKey.Messages.Header(RunId, format, generation, fromSeq, bytes)));
}

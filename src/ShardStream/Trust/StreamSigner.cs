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
    /// a reason for a user when the file cannot be read or holds no Ed25519 private key.
    /// </summary>
    public static StreamSigner LoadOrCreate(string path, out bool created)
    {
        created = false;
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

    private byte[] Sign(byte[] message) => Ed25519.Sign(_key, message);

    /// <summary>Proves to a joiner that this coordinator holds the key: a signature over its nonce and its new id.</summary>
    internal byte[] SignJoin(ReadOnlySpan<byte> nonce, ulong peerId) => Sign(StreamKey.Messages.Join(nonce, peerId));

    /// <summary>Signs the end of the stream.</summary>
    internal byte[] SignEnd(ulong finalSeq, ulong finalOffset) => Sign(StreamKey.Messages.End(finalSeq, finalOffset));

    /// <summary>Signs a list of chunk hashes of one shard.</summary>
    internal HashList SignHashList(byte shard, ulong firstSeq, byte[] hashes) =>
        new(shard, firstSeq, hashes, Sign(StreamKey.Messages.HashList(shard, firstSeq, hashes)));

    /// <summary>Signs an admission ticket's body.</summary>
    internal byte[] SignTicket(ReadOnlySpan<byte> body) => Sign(StreamKey.Messages.Ticket(body));

    /// <summary>Signs a media header for newcomers.</summary>
    internal StreamHeader SignHeader(byte format, uint generation, ulong fromSeq, byte[] bytes) =>
        new(format, generation, fromSeq, bytes, Sign(StreamKey.Messages.Header(format, generation, fromSeq, bytes)));

    /// <inheritdoc />
    public void Dispose() => _key.Dispose();
}

using System.Buffers.Binary;
using ShardStream.Collections;
using ShardStream.Wire;

namespace ShardStream.Trust;

/// <summary>
/// The coordinator's permission for one child to attach to one parent for some shards, once. It
/// travels coordinator → child (in the Welcome or Move entry that names the parent) → parent (in the
/// child's Hello(Attach)); the parent checks it against the stream's key, which it already holds.
/// Layout: parent id u64 | child id u64 | shard mask u16 | serial u64 | Ed25519 signature (64).
/// The serial is unique per coordinator run, so a parent can refuse a ticket it has seen; the
/// signature covers the run id (version 9), so a ticket of another run of the stream is refused.
/// </summary>
internal readonly record struct AdmissionTicket(ulong ParentId, ulong ChildId, ushort ShardMask, ulong Serial)
{
    private const int BodyLength = 8 + 8 + 2 + 8;

    /// <summary>Bytes of a signed ticket.</summary>
    public const int Length = BodyLength + Protocol.SignatureLength;

    /// <summary>The mask of a list of shards (K ≤ 16, so one bit each).</summary>
    public static ushort MaskOf(IEnumerable<int> shards)
    {
        int mask = 0;
        foreach (int s in shards) mask |= 1 << s;
        return (ushort)mask;
    }

    private byte[] Body()
    {
        var body = new byte[BodyLength];
        BinaryPrimitives.WriteUInt64BigEndian(body, ParentId);
        BinaryPrimitives.WriteUInt64BigEndian(body.AsSpan(8), ChildId);
        BinaryPrimitives.WriteUInt16BigEndian(body.AsSpan(16), ShardMask);
        BinaryPrimitives.WriteUInt64BigEndian(body.AsSpan(18), Serial);
        return body;
    }

    /// <summary>The signed ticket, as it goes on the wire.</summary>
    public byte[] Sign(RunSigner signer)
    {
        byte[] body = Body();
        return [.. body, .. signer.SignTicket(body)];
    }

    /// <summary>Reads and checks a ticket; null with <paramref name="reason"/> when it is missing, malformed or not signed with the stream's key.</summary>
    public static AdmissionTicket? Verify(StreamRun run, byte[]? bytes, out string reason)
    {
        reason = "";
        if (bytes is null || bytes.Length == 0)
        {
            reason = "no admission ticket: only a child the coordinator placed here is served";
            return null;
        }
        if (bytes.Length != Length)
        {
            reason = $"an admission ticket of {bytes.Length} bytes (a ticket has {Length})";
            return null;
        }
        var body = bytes.AsSpan(0, BodyLength);
        if (!run.VerifyTicket(body, bytes.AsSpan(BodyLength)))
        {
            reason = "an admission ticket that does not carry the stream's signature for this run (forged, or of another run of the stream)";
            return null;
        }
        return new AdmissionTicket(BinaryPrimitives.ReadUInt64BigEndian(body), BinaryPrimitives.ReadUInt64BigEndian(body[8..]),
            BinaryPrimitives.ReadUInt16BigEndian(body[16..]), BinaryPrimitives.ReadUInt64BigEndian(body[18..]));
    }
}

/// <summary>
/// A parent's record of the tickets it has honoured, so that each serves once. Bounded: past
/// <see cref="Capacity"/> serials the oldest are forgotten (a ticket that old names a plan long
/// gone; its child has moved on). Serials count from 1 in every run of the coordinator, so the
/// book is of one run: a ticket of the run before cannot be shown in this one (its signature
/// covers the run id), and a relay that lived through a restart of its coordinator refused the
/// new run's first tickets as used when it kept the old run's serials.
/// </summary>
internal sealed class TicketBook
{
    public const int Capacity = 65_536;
    private readonly RecentSet<ulong> _used = new(Capacity);
    private byte[]? _run;

    /// <summary>True the first time a serial is seen in run <paramref name="runId"/> (a ticket already verified against that run).</summary>
    public bool TryUse(byte[] runId, ulong serial)
    {
        lock (_used)
        {
            if (_run is null || !_run.AsSpan().SequenceEqual(runId))
            {
                _used.Clear();
                _run = runId;
            }
            return _used.Add(serial);
        }
    }
}

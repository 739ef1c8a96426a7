using System.Buffers;

namespace ShardStream.Wire;

/// <summary>
/// Peer to coordinator (version 7), on the control link: send me these shards on this link, each
/// from its <see cref="ShardStart.FromSeq"/>, up to (not including) chunk <paramref name="UntilSeq"/>,
/// then stop. A peer moved under a parent that holds the stream only from <paramref name="UntilSeq"/>
/// on (it joined after the peer's position) takes the chunks in between from the coordinator's
/// replay window first (docs/resilience.md, "A parent that joined later").
/// </summary>
public readonly record struct Fill(ShardStart[] Shards, ulong UntilSeq)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.Fill, ShardStart.ListSize(Shards.Length) + 8, in this, static (in Fill m, ref SpanWriter w) =>
    {
        ShardStart.WriteList(ref w, m.Shards);
        w.WriteUInt64(m.UntilSeq);
    });

    /// <summary>Reads a fill body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Fill value)
    {
        value = default;
        if (!ShardStart.TryReadList(ref r, out var shards) || !FrameCodec.TryReadUInt64(ref r, out ulong until) || !r.End) return false;
        value = new Fill(shards, until);
        return true;
    }
}

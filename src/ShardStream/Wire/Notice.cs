using System.Buffers;

namespace ShardStream.Wire;

/// <summary>What a <see cref="Notice"/> is about. Receivers accept codes they do not know (they log the text).</summary>
public enum NoticeCode : ushort
{
    /// <summary>The peer is a leaf in every tree from now on: other peers cannot connect to it, so nobody is placed under it.</summary>
    Leaf = 1,

    /// <summary>
    /// The peer is a leaf in every tree from now on: its download did not keep up, or its upload
    /// did not carry its children. The text says which, with the figures. A peer that does not know
    /// the code logs the text as for any unknown code.
    /// </summary>
    Demoted = 2,
}

/// <summary>
/// Coordinator to peer, on the control link, version 4 and later: something the peer should know
/// and tell its user, with the reason in words. Sent only on connections that negotiated version 4 or later.
/// </summary>
public readonly record struct Notice(NoticeCode Code, string Text)
{
    /// <summary>Writes the whole frame.</summary>
    public void Write(IBufferWriter<byte> writer) => FrameWriting.Write(writer, FrameType.Notice, 2 + FrameCodec.StringSize(Text), in this, static (in Notice m, ref SpanWriter w) =>
    {
        w.WriteUInt16((ushort)m.Code);
        FrameCodec.WriteString(ref w, m.Text);
    });

    /// <summary>Reads a notice body.</summary>
    public static bool TryRead(ref SequenceReader<byte> r, out Notice value)
    {
        value = default;
        if (!FrameCodec.TryReadUInt16(ref r, out ushort code) || !FrameCodec.TryReadString(ref r, out string text) || !r.End) return false;
        value = new Notice((NoticeCode)code, text);
        return true;
    }
}

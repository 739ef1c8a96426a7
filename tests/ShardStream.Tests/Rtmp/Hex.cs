using System.Buffers;
using ShardStream.Rtmp;

namespace ShardStream.Tests.Rtmp;

internal static class Hex
{
    /// <summary>Bytes from hex written with spaces for readability.</summary>
    public static byte[] Bytes(string hex) => Convert.FromHexString(hex.Replace(" ", "").Replace("\n", ""));

    /// <summary>Every message <paramref name="reader"/> finds in <paramref name="data"/>, fed in pieces of <paramref name="piece"/> bytes.</summary>
    public static List<RtmpMessage> ReadAll(ChunkReader reader, byte[] data, int piece = int.MaxValue)
    {
        var messages = new List<RtmpMessage>();
        var pending = new List<byte>();
        for (int i = 0; i < data.Length; i += Math.Min(piece, data.Length))
        {
            pending.AddRange(data.AsSpan(i, Math.Min(piece, data.Length - i)).ToArray());
            var buffer = new ReadOnlySequence<byte>(pending.ToArray());
            var r = new SequenceReader<byte>(buffer);
            while (reader.TryRead(ref r, out var m))
            {
                if (m.Type == RtmpMessageType.SetChunkSize) reader.SetChunkSize(RtmpControl.ReadUInt32(m));
                messages.Add(m);
            }
            pending.RemoveRange(0, (int)r.Consumed);
        }
        Assert.Empty(pending);
        return messages;
    }
}

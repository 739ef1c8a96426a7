using System.Buffers;
using ShardStream.Wire;

namespace ShardStream.Tests.Wire;

/// <summary>Encodes frames into bytes and parses them back, the way a read loop sees them.</summary>
internal static class Frames
{
    public static byte[] Encode(Action<IBufferWriter<byte>> write)
    {
        var buffer = new ArrayBufferWriter<byte>();
        write(buffer);
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Reads exactly one frame that fills <paramref name="sequence"/>.</summary>
    public static (FrameType Type, ReadOnlySequence<byte> Body) ReadSingle(ReadOnlySequence<byte> sequence)
    {
        var buffer = sequence;
        Assert.True(FrameCodec.TryReadFrame(ref buffer, out var type, out var body), "a whole frame was not recognised");
        Assert.Equal(0, buffer.Length);
        return (type, body);
    }

    public static (FrameType Type, ReadOnlySequence<byte> Body) ReadSingle(byte[] bytes) => ReadSingle(new ReadOnlySequence<byte>(bytes));

    /// <summary>The body of a frame, as a sequence, after a codec round trip.</summary>
    public static ReadOnlySequence<byte> Body(byte[] frame) => ReadSingle(frame).Body;

    public static byte[] Hex(string hex) => Convert.FromHexString(string.Concat(hex.Where(c => !char.IsWhiteSpace(c))));
}

/// <summary>Builds a <see cref="ReadOnlySequence{T}"/> of many segments, as a pipe hands them out.</summary>
internal sealed class Segment : ReadOnlySequenceSegment<byte>
{
    private Segment(ReadOnlyMemory<byte> memory, long runningIndex)
    {
        Memory = memory;
        RunningIndex = runningIndex;
    }

    /// <summary>Cuts <paramref name="bytes"/> into segments of <paramref name="size"/> bytes (the last may be shorter).</summary>
    public static ReadOnlySequence<byte> Split(byte[] bytes, int size)
    {
        if (bytes.Length == 0) return ReadOnlySequence<byte>.Empty;
        var sizes = new List<int>();
        for (int at = 0; at < bytes.Length; at += size) sizes.Add(Math.Min(size, bytes.Length - at));
        return Split(bytes, sizes);
    }

    /// <summary>Cuts <paramref name="bytes"/> into segments of the given sizes, which must add up to its length.</summary>
    public static ReadOnlySequence<byte> Split(byte[] bytes, IReadOnlyList<int> sizes)
    {
        Assert.Equal(bytes.Length, sizes.Sum());
        // Copy every segment into its own array so that nothing can read across a boundary by accident.
        var first = new Segment(bytes.AsSpan(0, sizes[0]).ToArray(), 0);
        var last = first;
        int at = sizes[0];
        for (int i = 1; i < sizes.Count; i++)
        {
            var next = new Segment(bytes.AsSpan(at, sizes[i]).ToArray(), at);
            last.Next = next;
            last = next;
            at += sizes[i];
        }
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }
}

using System.Buffers;
using ShardStream.Wire;

namespace ShardStream.Fuzz;

/// <summary>
/// The check behind the fuzz target and the corpus round-trip tests: takes every frame off the
/// front of some bytes with <see cref="FrameCodec.TryReadFrame"/>, decodes its body with the
/// message's own TryRead, and for every message that decodes, encodes it again and decodes that:
/// the re-encoded frame must be byte for byte the frame that was read (every field has one
/// encoding), and the second decode must give the same message. Malformed input may only make a
/// TryRead return false or the codec throw <see cref="ProtocolException"/>; any other exception,
/// or a round trip that differs, is a bug (<see cref="RoundTripException"/>).
/// </summary>
public static class FrameRoundTrip
{
    /// <summary>What one input held: frames read, messages decoded, bodies rejected.</summary>
    public readonly record struct Counts(int Frames, int Decoded, int Rejected, bool ProtocolError);

    /// <summary>Checks every frame in <paramref name="input"/>, as a read loop would see it (one segment, or cut into pieces of <paramref name="segment"/> bytes).</summary>
    public static Counts Check(byte[] input, int segment = 0)
    {
        var buffer = segment > 0 ? Segments.Split(input, segment) : new ReadOnlySequence<byte>(input);
        int frames = 0, decoded = 0, rejected = 0;
        try
        {
            while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
            {
                frames++;
                long start = input.Length - buffer.Length - Protocol.FrameHeaderLength - body.Length;
                byte[] frame = input.AsSpan((int)start, (int)(Protocol.FrameHeaderLength + body.Length)).ToArray();
                if (CheckFrame(type, body, frame)) decoded++;
                else rejected++;
            }
        }
        catch (ProtocolException)
        {
            return new Counts(frames, decoded, rejected, true);
        }
        return new Counts(frames, decoded, rejected, false);
    }

    /// <summary>Decodes one body; when it decodes, the encode → decode round trip must reproduce <paramref name="frame"/>. False when the body is rejected.</summary>
    public static bool CheckFrame(FrameType type, ReadOnlySequence<byte> body, byte[] frame)
    {
        byte[]? again = Reencode(type, body);
        if (again is null) return false;
        if (!again.AsSpan().SequenceEqual(frame))
            throw new RoundTripException($"{type}: decoded and encoded again, {Convert.ToHexString(frame)} became {Convert.ToHexString(again)}");
        // The re-encoded frame must read back as the same frame and encode to the same bytes again.
        var second = new ReadOnlySequence<byte>(again);
        if (!FrameCodec.TryReadFrame(ref second, out var type2, out var body2) || type2 != type || second.Length != 0)
            throw new RoundTripException($"{type}: the re-encoded frame {Convert.ToHexString(again)} does not read back as one {type} frame");
        byte[]? third = Reencode(type2, body2);
        if (third is null || !third.AsSpan().SequenceEqual(again))
            throw new RoundTripException($"{type}: the re-encoded frame {Convert.ToHexString(again)} does not decode to the same message");
        return true;
    }

    /// <summary>Decodes a body with its message's TryRead and encodes the message again as a whole frame; null when TryRead rejects the body.</summary>
    private static byte[]? Reencode(FrameType type, ReadOnlySequence<byte> body)
    {
        var r = new SequenceReader<byte>(body);
        var w = new ArrayBufferWriter<byte>();
        switch (type)
        {
            case FrameType.Hello:
                if (!Hello.TryRead(ref r, out var hello)) return null;
                hello.Write(w);
                break;
            case FrameType.Welcome:
                if (!Welcome.TryRead(ref r, out var welcome)) return null;
                welcome.Write(w);
                break;
            case FrameType.Chunk:
                if (!ChunkHeader.TryRead(body, out var header, out var payload)) return null;
                header.Write(w, payload.ToArray());
                break;
            case FrameType.End:
                if (!End.TryRead(ref r, out var end)) return null;
                end.Write(w);
                break;
            case FrameType.Goodbye:
                if (!Goodbye.TryRead(ref r, out var goodbye)) return null;
                goodbye.Write(w);
                break;
            case FrameType.Heartbeat:
                if (!Heartbeat.TryRead(ref r, out var heartbeat)) return null;
                heartbeat.Write(w);
                break;
            case FrameType.Attached:
                if (!Attached.TryRead(ref r, out var attached)) return null;
                attached.Write(w);
                break;
            case FrameType.Move:
                if (!Move.TryRead(ref r, out var move)) return null;
                move.Write(w);
                break;
            case FrameType.ParentLost:
                if (!ParentLost.TryRead(ref r, out var lost)) return null;
                lost.Write(w);
                break;
            case FrameType.Detach:
                if (!Detach.TryRead(ref r, out var detach)) return null;
                detach.Write(w);
                break;
            case FrameType.Fill:
                if (!Fill.TryRead(ref r, out var fill)) return null;
                fill.Write(w);
                break;
            case FrameType.Leave:
                if (!Leave.TryRead(ref r, out var leave)) return null;
                leave.Write(w);
                break;
            case FrameType.DropChild:
                if (!DropChild.TryRead(ref r, out var drop)) return null;
                drop.Write(w);
                break;
            case FrameType.SlowChild:
                if (!SlowChild.TryRead(ref r, out var slow)) return null;
                slow.Write(w);
                break;
            case FrameType.Hashes:
                if (!HashList.TryRead(ref r, out var list)) return null;
                list.Write(w);
                break;
            case FrameType.Notice:
                if (!Notice.TryRead(ref r, out var notice)) return null;
                notice.Write(w);
                break;
            case FrameType.StreamHeader:
                if (!StreamHeader.TryRead(ref r, out var streamHeader)) return null;
                streamHeader.Write(w);
                break;
            case FrameType.Ping:
                if (!Ping.TryRead(ref r, out var ping)) return null;
                ping.Write(w);
                break;
            case FrameType.Pong:
                if (!Pong.TryRead(ref r, out var pong)) return null;
                pong.Write(w);
                break;
            case FrameType.Landmarks:
                if (!Landmarks.TryRead(ref r, out var landmarks)) return null;
                landmarks.Write(w);
                break;
            default:
                throw new RoundTripException($"the codec returned frame type {(byte)type}, which has no message");
        }
        return w.WrittenSpan.ToArray();
    }

    /// <summary>A sequence of many segments, as a pipe hands them out.</summary>
    private sealed class Segments : ReadOnlySequenceSegment<byte>
    {
        private Segments(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public static ReadOnlySequence<byte> Split(byte[] bytes, int size)
        {
            if (bytes.Length <= size) return new ReadOnlySequence<byte>(bytes);
            var first = new Segments(bytes.AsMemory(0, size).ToArray(), 0);
            var last = first;
            for (int at = size; at < bytes.Length; at += size)
            {
                var next = new Segments(bytes.AsMemory(at, Math.Min(size, bytes.Length - at)).ToArray(), at);
                last.Next = next;
                last = next;
            }
            return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        }
    }
}

/// <summary>A decode → encode → decode round trip that did not give back what was read: a bug, never bad input.</summary>
public sealed class RoundTripException(string message) : Exception(message);

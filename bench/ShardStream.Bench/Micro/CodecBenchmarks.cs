using System.Buffers;
using BenchmarkDotNet.Attributes;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Bench.Micro;

/// <summary>
/// The per-chunk work of a relay for a full 64 KiB chunk: encode a chunk frame, find it in the
/// received bytes, parse its header, and the relay step itself: as the relay runs now (keep the
/// payload where it arrived, in a receive slab; hold it for the replay window and one child; write
/// the 22-byte frame prefix for a gathered send; release all), and the earlier copying step (copy
/// the payload into a pooled chunk, encode the whole frame for the child) for comparison.
/// Received bytes come as one segment and as the 16 KiB segments a pipe hands out; the expected
/// allocation is 0 B everywhere.
/// </summary>
[MemoryDiagnoser]
public class CodecBenchmarks
{
    private const int PipeSegment = 16 * 1024;
    private readonly ArrayBufferWriter<byte> _writer = new(Protocol.MaxFrameLength + 64);
    private byte[] _payload = [];
    private ReadOnlySequence<byte> _contiguous;
    private ReadOnlySequence<byte> _segmented;
    private readonly ReceiveSlabPool _slabs = new();
    private readonly byte[] _prefix = new byte[ChunkHeader.FramePrefixLength];
    private IMemoryOwner<byte>? _slabRental;
    private ReadOnlySequence<byte> _inSlab;
    private long _seq;

    [GlobalSetup]
    public void Setup()
    {
        _payload = new byte[Protocol.MaxChunkLength];
        new Random(1).NextBytes(_payload);
        var writer = new ArrayBufferWriter<byte>();
        new ChunkHeader(0, 42, 42L * Protocol.MaxChunkLength).Write(writer, _payload);
        byte[] frame = writer.WrittenSpan.ToArray();
        _contiguous = new ReadOnlySequence<byte>(frame);
        _segmented = Segment.Split(frame, PipeSegment);
        // The frame as a TCP connection's pipe holds it: inside a receive slab.
        _slabRental = _slabs.Rent(frame.Length);
        frame.CopyTo(_slabRental.Memory);
        _inSlab = new ReadOnlySequence<byte>(_slabRental.Memory[..frame.Length]);
        // Warm the chunk pool, so that the first measured rent does not allocate.
        Chunk.Rent(Protocol.MaxChunkLength).Release();
    }

    [Benchmark(Description = "ChunkHeader.Write (64 KiB frame)")]
    public int Write()
    {
        _writer.ResetWrittenCount();
        new ChunkHeader(0, (ulong)_seq, (ulong)(_seq++ * Protocol.MaxChunkLength)).Write(_writer, _payload);
        return _writer.WrittenCount;
    }

    [Benchmark(Description = "TryReadFrame + ChunkHeader.TryRead, 1 segment")]
    public long ReadContiguous() => Read(_contiguous);

    [Benchmark(Description = "TryReadFrame + ChunkHeader.TryRead, 16 KiB segments")]
    public long ReadSegmented() => Read(_segmented);

    [Benchmark(Baseline = true, Description = "Write + TryReadFrame + TryRead (round trip)")]
    public long RoundTrip()
    {
        _writer.ResetWrittenCount();
        new ChunkHeader(1, (ulong)_seq, (ulong)(_seq++ * Protocol.MaxChunkLength)).Write(_writer, _payload);
        return Read(new ReadOnlySequence<byte>(_writer.WrittenMemory));
    }

    [Benchmark(Description = "relay step (copying): read, Chunk.Copy, retain x2, write to a child, release x3")]
    public long RelayStepCopying()
    {
        var buffer = _segmented;
        if (!FrameCodec.TryReadFrame(ref buffer, out _, out var body) || !ChunkHeader.TryRead(body, out var header, out var payload))
            throw new InvalidOperationException("bad frame");
        var chunk = Chunk.Copy(header.Shard, (long)header.Seq, (long)header.Offset, payload);
        var inWindow = chunk.Retain();
        var queued = chunk.Retain();
        _writer.ResetWrittenCount();
        new ChunkHeader((byte)queued.Shard, (ulong)queued.Seq, (ulong)queued.Offset).Write(_writer, queued.Span);
        queued.Release();
        inWindow.Release();
        chunk.Release();
        return _writer.WrittenCount;
    }

    [Benchmark(Description = "relay step (as the relay runs): read from a receive slab, Chunk.FromReceived, retain x2, frame prefix + payload segment for a child, release x3")]
    public long RelayStep()
    {
        var buffer = _inSlab;
        if (!FrameCodec.TryReadFrame(ref buffer, out _, out var body) || !ChunkHeader.TryRead(body, out var header, out var payload))
            throw new InvalidOperationException("bad frame");
        var chunk = Chunk.FromReceived(header.Shard, (long)header.Seq, (long)header.Offset, payload);
        var inWindow = chunk.Retain();
        var queued = chunk.Retain();
        new ChunkHeader((byte)queued.Shard, (ulong)queued.Seq, (ulong)queued.Offset).WritePrefix(_prefix, queued.Length);
        var segment = queued.Segment;
        queued.Release();
        inWindow.Release();
        chunk.Release();
        return segment.Count + _prefix[4];
    }

    private static long Read(ReadOnlySequence<byte> buffer)
    {
        if (!FrameCodec.TryReadFrame(ref buffer, out var type, out var body) || !ChunkHeader.TryRead(body, out var header, out var payload))
            throw new InvalidOperationException("bad frame");
        return (long)type + (long)header.Seq + payload.Length;
    }

    /// <summary>A piece of a multi-segment sequence, as a pipe hands out.</summary>
    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        private Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public static ReadOnlySequence<byte> Split(byte[] data, int size)
        {
            var first = new Segment(data.AsMemory(0, Math.Min(size, data.Length)), 0);
            var last = first;
            for (int at = size; at < data.Length; at += size)
            {
                var next = new Segment(data.AsMemory(at, Math.Min(size, data.Length - at)), at);
                last.Next = next;
                last = next;
            }
            return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        }
    }
}

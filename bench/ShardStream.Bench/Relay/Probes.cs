using System.Buffers.Binary;
using System.Diagnostics;

namespace ShardStream.Bench.Relay;

/// <summary>What a receiving peer does with the bytes it gets: count them, or time the records in them.</summary>
internal interface IProbe
{
    /// <summary>
    /// Bytes of sub-stream <paramref name="stream"/> arrived at <paramref name="now"/>. ShardStream
    /// peers deliver one ordered stream (0); baseline peers deliver each shard's bytes as they come.
    /// </summary>
    void Consume(int stream, ReadOnlySpan<byte> data, long now);
}

/// <summary>Counts bytes, checks them against the bulk pattern, and notes when the last one came.</summary>
internal sealed class ByteCountProbe(long total, int streams, int blockSize) : IProbe
{
    private readonly long[] _positions = new long[streams];
    private long _received;

    public long Received => Interlocked.Read(ref _received);

    public long CompletedTicks { get; private set; }

    public string? Error { get; private set; }

    public void Consume(int stream, ReadOnlySpan<byte> data, long now)
    {
        if (data.IsEmpty) return;
        // Check one byte per delivery: a chunk at the wrong place or from the wrong shard shows.
        long global = ToGlobal(stream, _positions[stream]);
        if (Error is null && data[0] != BulkSource.ExpectedByte(global))
            Error = $"byte at stream offset {global} differs from the source";
        _positions[stream] += data.Length;
        if (Interlocked.Add(ref _received, data.Length) == total) CompletedTicks = now;
    }

    /// <summary>Sub-stream <c>s</c> of <c>K</c> carries blocks <c>s, s+K, …</c> of the source.</summary>
    private long ToGlobal(int stream, long position) =>
        streams == 1 ? position : (position / blockSize * streams + stream) * blockSize + position % blockSize;
}

/// <summary>
/// Finds the fixed-size records of <see cref="PacedRecordSource"/> in the bytes as they arrive and
/// notes, per record, the send time written in it and the time its last byte arrived. Sub-stream
/// <c>s</c> of <c>K</c> carries records <c>s, s+K, …</c> (the baseline deals whole records).
/// </summary>
internal sealed class RecordProbe : IProbe
{
    private const int R = PacedRecordSource.RecordSize;
    private readonly int _streams;
    private readonly long[] _positions;
    private readonly byte[][] _headers;

    public RecordProbe(int records, int streams)
    {
        _streams = streams;
        _positions = new long[streams];
        _headers = new byte[streams][];
        for (int s = 0; s < streams; s++) _headers[s] = new byte[16];
        Sent = new long[records];
        Arrived = new long[records];
    }

    public long[] Sent { get; }

    public long[] Arrived { get; }

    public string? Error { get; private set; }

    public void Consume(int stream, ReadOnlySpan<byte> data, long now)
    {
        var header = _headers[stream];
        long position = _positions[stream];
        while (!data.IsEmpty)
        {
            int inRecord = (int)(position % R);
            if (inRecord < 16)
            {
                int h = Math.Min(16 - inRecord, data.Length);
                data[..h].CopyTo(header.AsSpan(inRecord));
            }
            int take = Math.Min(R - inRecord, data.Length);
            position += take;
            data = data[take..];
            if (take == R - inRecord)
            {
                long local = position / R - 1;
                long index = local * _streams + stream;
                long number = BinaryPrimitives.ReadInt64LittleEndian(header.AsSpan(8));
                if (number != index || index >= Sent.Length)
                {
                    Error ??= $"record {number} found where record {index} belongs";
                    continue;
                }
                Sent[index] = BinaryPrimitives.ReadInt64LittleEndian(header);
                Arrived[index] = now;
            }
        }
        _positions[stream] = position;
    }

    /// <summary>
    /// Per record, the latency of in-order delivery in ticks: a record counts as delivered when it
    /// and every record before it have arrived (what a player sees; ShardStream's output is in order already).
    /// </summary>
    public long[] InOrderLatencies()
    {
        var result = new long[Sent.Length];
        long delivered = 0;
        for (int i = 0; i < Sent.Length; i++)
        {
            if (Arrived[i] == 0) throw new InvalidOperationException($"record {i} never arrived");
            delivered = Math.Max(delivered, Arrived[i]);
            result[i] = delivered - Sent[i];
        }
        return result;
    }
}

/// <summary>A write-only stream that hands what a ShardStream peer writes to a probe, stamped on arrival.</summary>
internal sealed class ProbeStream(IProbe probe) : Stream
{
    public override void Write(ReadOnlySpan<byte> buffer) => probe.Consume(0, buffer, Stopwatch.GetTimestamp());

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Write(buffer.Span);
        return ValueTask.CompletedTask;
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        Write(buffer.AsSpan(offset, count));
        return Task.CompletedTask;
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override void Flush()
    {
    }

    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}

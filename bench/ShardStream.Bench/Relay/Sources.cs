using System.Buffers.Binary;
using System.Diagnostics;

namespace ShardStream.Bench.Relay;

/// <summary>
/// A source that can be read as fast as the reader asks: <c>length</c> bytes of a fixed pseudo-random
/// pattern, in reads of up to 64 KiB. Remembers when it was first read (the start of the clock).
/// It holds a read while it is more than <c>maxLead</c> bytes ahead of <c>slowest()</c> (the bytes
/// the slowest peer has output): the flow control of a file source, so that the overlay is pushed
/// as fast as its slowest peer takes the stream, not faster.
/// </summary>
internal sealed class BulkSource(long length, Func<long> slowest, long maxLead) : Stream
{
    private static readonly byte[] Pattern = CreatePattern();
    private long _position;

    public long FirstReadTicks { get; private set; }

    public static byte ExpectedByte(long position) => Pattern[position % Pattern.Length];

    private static byte[] CreatePattern()
    {
        // 1 MiB + 7 bytes: not a multiple of the chunk size, so a misplaced chunk shows.
        var pattern = new byte[(1 << 20) + 7];
        new Random(11).NextBytes(pattern);
        return pattern;
    }

    public override int Read(Span<byte> buffer)
    {
        if (FirstReadTicks == 0) FirstReadTicks = Stopwatch.GetTimestamp();
        int n = (int)Math.Min(Math.Min(buffer.Length, 64 * 1024), length - _position);
        int done = 0;
        while (done < n)
        {
            int at = (int)((_position + done) % Pattern.Length);
            int take = Math.Min(n - done, Pattern.Length - at);
            Pattern.AsSpan(at, take).CopyTo(buffer[done..]);
            done += take;
        }
        _position += n;
        return n;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (_position - slowest() > maxLead)
        {
            HeldReads++;
            await Task.Delay(1, cancellationToken).ConfigureAwait(false);
        }
        return Read(buffer.Span);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <summary>How many times a read waited for the slowest peer.</summary>
    public int HeldReads { get; private set; }

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => length;

    public override long Position { get => _position; set => throw new NotSupportedException(); }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

/// <summary>
/// A live source at a fixed rate: record <c>i</c> (<see cref="RecordSize"/> bytes) is released at
/// <c>start + i·interval</c>, one record per read, and stamped as it is handed out: bytes 0..7 hold
/// the send time (<see cref="Stopwatch"/> ticks), bytes 8..15 the record number. A late wake-up
/// sends at once (the schedule is absolute), so the average rate holds and the stamp is the real
/// send time.
/// </summary>
internal sealed class PacedRecordSource(int records, TimeSpan interval) : Stream
{
    public const int RecordSize = 1250;
    private readonly long _intervalTicks = (long)(interval.TotalSeconds * Stopwatch.Frequency);
    private long _start;
    private int _next;

    public long FirstReadTicks => _start;

    public long LastReadTicks { get; private set; }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_next == records) return 0;
        if (buffer.Length < RecordSize) throw new ArgumentException("the reader must take a whole record");
        if (_start == 0) _start = Stopwatch.GetTimestamp();
        long due = _start + _next * _intervalTicks;
        long now = Stopwatch.GetTimestamp();
        if (now < due) await Task.Delay(TimeSpan.FromSeconds((double)(due - now) / Stopwatch.Frequency), cancellationToken).ConfigureAwait(false);
        var span = buffer.Span[..RecordSize];
        span[16..].Fill((byte)_next);
        BinaryPrimitives.WriteInt64LittleEndian(span[8..], _next);
        LastReadTicks = Stopwatch.GetTimestamp();
        BinaryPrimitives.WriteInt64LittleEndian(span, LastReadTicks);
        _next++;
        return RecordSize;
    }

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => (long)records * RecordSize;

    public override long Position { get => (long)_next * RecordSize; set => throw new NotSupportedException(); }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;

namespace ShardStream.Rtmp;

/// <summary>
/// Reassembles RTMP messages from the chunk stream (RTMP specification, Adobe 2012, section 5.3):
/// the three basic-header forms (chunk stream ids 2..63 in one byte, 64..319 in two, 64..65599 in
/// three), the four message-header types (0: full, 11 bytes with the little-endian message stream
/// id; 1: no stream id; 2: timestamp delta only; 3: nothing), the extended timestamp (present when
/// the 24-bit field is 0xFFFFFF, and then repeated on the type-3 chunks that follow), and a type-1,
/// -2 or -3 chunk opening a new message from the state its chunk stream left. Pure: no I/O.
/// A chunk's payload is consumed as it arrives, so nothing waits for a whole chunk of a large
/// chunk size; partly received messages grow only with the bytes received, within
/// <see cref="RtmpLimits.MaxBufferedBytes"/> (a message's buffer starts at up to 64 KiB and doubles).
/// </summary>
public sealed class ChunkReader(RtmpLimits limits)
{
    /// <summary>The largest header: 3-byte basic header, 11-byte message header, extended timestamp.</summary>
    public const int MaxHeaderLength = 18;

    private sealed class ChunkStream
    {
        public uint Timestamp;
        public uint Delta;
        public int Length;
        public RtmpMessageType Type;
        public uint StreamId;
        public bool Extended;
        public byte[]? Buffer;
        public int Received;
    }

    private readonly Dictionary<int, ChunkStream> _streams = [];
    private ChunkStream? _current;
    private int _currentId;
    private int _chunkRemaining;
    private long _buffered;

    /// <summary>The peer's chunk size (128 until it sends Set Chunk Size).</summary>
    public int ChunkSize { get; private set; } = 128;

    /// <summary>Bytes held in partly received messages.</summary>
    public long BufferedBytes => _buffered;

    /// <summary>
    /// Applies a Set Chunk Size from the peer. Valid sizes are 1..2^31-1 (section 5.4.1; bit 31
    /// must be zero); sizes over 16777215 act as 16777215, since no message is longer.
    /// </summary>
    public void SetChunkSize(uint size)
    {
        if (size == 0 || size > 0x7FFFFFFF) throw new RtmpProtocolException($"invalid chunk size {size} (valid: 1 to 2147483647)");
        ChunkSize = (int)Math.Min(size, 0xFFFFFFu);
    }

    /// <summary>Abort (section 5.4.2): drops the partly received message of a chunk stream.</summary>
    public void Abort(uint chunkStreamId)
    {
        if (chunkStreamId > int.MaxValue || !_streams.TryGetValue((int)chunkStreamId, out var s)) return;
        if (_current == s && _chunkRemaining > 0) throw new RtmpProtocolException("Abort of the chunk stream being read");
        _buffered -= s.Buffer?.Length ?? 0;
        s.Buffer = null;
        s.Received = 0;
    }

    /// <summary>
    /// Consumes chunks from <paramref name="reader"/> until a message completes (returned, so
    /// that the caller can apply a Set Chunk Size before the next chunk is read) or the bytes run
    /// out (false; an incomplete header is left unread). Throws <see cref="RtmpProtocolException"/>
    /// on input the specification or the limits forbid.
    /// </summary>
    public bool TryRead(ref SequenceReader<byte> reader, [NotNullWhen(true)] out RtmpMessage? message)
    {
        message = null;
        while (true)
        {
            if (_chunkRemaining == 0 && !TryReadHeader(ref reader)) return false;
            var s = _current!;
            int n = (int)Math.Min(_chunkRemaining, reader.Remaining);
            if (n > 0)
            {
                Grow(s, s.Received + n);
                reader.TryCopyTo(s.Buffer.AsSpan(s.Received, n));
                reader.Advance(n);
                s.Received += n;
                _chunkRemaining -= n;
            }
            if (_chunkRemaining > 0) return false;
            if (s.Received == s.Length)
            {
                byte[] payload = s.Length == 0 ? [] : s.Buffer!;
                _buffered -= payload.Length;
                s.Buffer = null;
                s.Received = 0;
                message = new RtmpMessage(_currentId, s.Timestamp, s.Type, s.StreamId, payload);
                return true;
            }
        }
    }

    private void Grow(ChunkStream s, int needed)
    {
        int capacity = s.Buffer?.Length ?? 0;
        if (needed <= capacity) return;
        int next = Math.Min(s.Length, Math.Max(needed, Math.Max(capacity * 2, 64 * 1024)));
        if (_buffered + next - capacity > limits.MaxBufferedBytes)
            throw new RtmpProtocolException($"partly received messages would hold {_buffered + next - capacity} bytes, over the limit of {limits.MaxBufferedBytes}");
        var grown = new byte[next];
        s.Buffer?.AsSpan(0, s.Received).CopyTo(grown);
        _buffered += next - capacity;
        s.Buffer = grown;
    }

    private bool TryReadHeader(ref SequenceReader<byte> reader)
    {
        Span<byte> h = stackalloc byte[MaxHeaderLength];
        int available = (int)Math.Min(reader.Remaining, MaxHeaderLength);
        if (available == 0 || !reader.TryCopyTo(h[..available])) return false;
        h = h[..available];

        int fmt = h[0] >> 6;
        int id = h[0] & 0x3F;
        int pos = id switch { 0 => 2, 1 => 3, _ => 1 };
        int messageHeader = fmt switch { 0 => 11, 1 => 7, 2 => 3, _ => 0 };
        if (available < pos + messageHeader) return false;
        if (id == 0) id = h[1] + 64;
        else if (id == 1) id = h[2] * 256 + h[1] + 64;

        if (!_streams.TryGetValue(id, out var s))
        {
            if (fmt != 0) throw new RtmpProtocolException($"chunk stream {id} opens with a type-{fmt} header (a new chunk stream needs type 0)");
            if (_streams.Count >= limits.MaxChunkStreams) throw new RtmpProtocolException($"more than {limits.MaxChunkStreams} chunk streams");
            s = new ChunkStream();
        }
        bool continuation = s.Received > 0;
        if (continuation && fmt != 3) throw new RtmpProtocolException($"type-{fmt} header on chunk stream {id} in the middle of a message (only type 3 continues one)");

        uint field = 0;
        if (fmt <= 2) field = ReadUInt24(h[pos..]);
        bool extended = fmt <= 2 ? field == 0xFFFFFF : s.Extended;
        int total = pos + messageHeader + (extended ? 4 : 0);
        if (available < total) return false;
        if (extended) field = BinaryPrimitives.ReadUInt32BigEndian(h[(pos + messageHeader)..]);

        if (fmt <= 1)
        {
            int length = (int)ReadUInt24(h[(pos + 3)..]);
            if (length > limits.MaxMessageLength) throw new RtmpProtocolException($"message of {length} bytes on chunk stream {id}, over the limit of {limits.MaxMessageLength}");
            s.Length = length;
            s.Type = (RtmpMessageType)h[pos + 6];
            if (fmt == 0) s.StreamId = BinaryPrimitives.ReadUInt32LittleEndian(h[(pos + 7)..]);
        }
        if (!continuation)
        {
            unchecked
            {
                switch (fmt)
                {
                    case 0: s.Timestamp = field; s.Delta = field; break;
                    case 1 or 2: s.Timestamp += field; s.Delta = field; break;
                    default: s.Timestamp += s.Delta; break; // type 3 opening a message: the previous delta again (5.3.1.2.4)
                }
            }
            s.Extended = extended;
        }
        _streams[id] = s;
        reader.Advance(total);
        _current = s;
        _currentId = id;
        _chunkRemaining = Math.Min(ChunkSize, s.Length - s.Received);
        return true;
    }

    private static uint ReadUInt24(ReadOnlySpan<byte> b) => (uint)(b[0] << 16 | b[1] << 8 | b[2]);
}

namespace ShardStream.Media;

/// <summary>One chunk's worth of source bytes: how many, whether a decoder can start there, and the header in effect there.</summary>
public readonly record struct MediaRead(int Length, bool RandomAccess, MediaHeader? Header);

/// <summary>
/// The source the coordinator reads. Raw bytes pass as they are read (one read, one chunk, as
/// always, unless the coordinator merges short reads: <c>CoordinatorOptions.MergeShortReads</c>). FLV and MPEG-TS are cut at unit boundaries (tags, packets): a chunk holds whole units
/// when they fit in it (a unit over the chunk size spans several chunks), and a unit a decoder can
/// start at (a keyframe) always starts a chunk, which is then marked as a random-access point. The
/// format comes from the first read (<see cref="MediaFormats.Detect"/>) unless it is given.
/// </summary>
public sealed class MediaReader
{
    /// <summary>The longest partial unit held while waiting for its end: an FLV tag of the largest size.</summary>
    public const int MaxBuffered = 16 * 1024 * 1024 + 64 * 1024;

    private readonly Stream _source;
    private readonly MediaFormat? _forced;
    private UnitScanner? _scanner;
    private bool _started;
    private bool _ended;
    private byte[] _buffer = [];
    private int _start;      // first byte not yet handed out
    private int _scanned;    // first byte not yet scanned into units (a unit boundary)
    private int _end;        // end of the bytes read
    private readonly Queue<(int Start, int Length, bool RandomAccess, MediaHeader? Header)> _units = new();
    private (int Start, int Length, bool RandomAccess, MediaHeader? Header) _current;
    private bool _inUnit;
    private bool _reportedLostSync;

    /// <summary>Reads <paramref name="source"/>; <paramref name="format"/> null detects the format from the first read.</summary>
    public MediaReader(Stream source, MediaFormat? format = null)
    {
        _source = source;
        _forced = format;
    }

    /// <summary>The format, once the first read has been made (or it was given).</summary>
    public MediaFormat? Format { get; private set; }

    /// <summary>The header as of the last chunk handed out, null before it is known (and for raw bytes).</summary>
    public MediaHeader? Header { get; private set; }

    /// <summary>Called once when the scanner stops finding units (with why), for the log.</summary>
    public Action<string>? LostSync { get; set; }

    /// <summary>Fills <paramref name="destination"/> with the next chunk's bytes; a length of 0 means the source ended.</summary>
    public async ValueTask<MediaRead> ReadAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        if (!_started)
        {
            _started = true;
            if (_forced is MediaFormat.Raw)
            {
                Format = MediaFormat.Raw;
            }
            else
            {
                // The first read decides the format; it is handed out below as any other bytes.
                _buffer = new byte[Math.Max(destination.Length, 64 * 1024) * 2];
                _end = await _source.ReadAsync(_buffer.AsMemory(0, destination.Length), cancellationToken).ConfigureAwait(false);
                // A first read of "F", "FL" or "FLV" cannot tell yet: read on until it can (a text
                // line always ends with a newline, which no signature holds, so text is not held back).
                while (_end is > 0 and < 4 && "FLV"u8.StartsWith(_buffer.AsSpan(0, _end)))
                {
                    int more = await _source.ReadAsync(_buffer.AsMemory(_end, destination.Length - _end), cancellationToken).ConfigureAwait(false);
                    if (more == 0) break;
                    _end += more;
                }
                Format = _forced ?? MediaFormats.Detect(_buffer.AsSpan(0, _end));
                _scanner = UnitScanner.For(Format.Value);
                if (_end == 0) _ended = true;
            }
        }
        if (_scanner is null)
        {
            if (_end > _start)
            {
                // The first read of a stream that turned out raw.
                int n = Math.Min(destination.Length, _end - _start);
                _buffer.AsMemory(_start, n).CopyTo(destination);
                _start += n;
                return new MediaRead(n, false, null);
            }
            return new MediaRead(await _source.ReadAsync(destination, cancellationToken).ConfigureAwait(false), false, null);
        }
        while (true)
        {
            Scan();
            if (TryCut(destination.Span, out var read)) return read;
            if (_ended)
            {
                // The source ended inside a unit: the bytes still go out, as they are.
                int n = Math.Min(destination.Length, _end - _start);
                _buffer.AsMemory(_start, n).CopyTo(destination);
                _start += n;
                _scanned = Math.Max(_scanned, _start);
                return new MediaRead(n, false, Header);
            }
            await FillAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private void Scan()
    {
        while (_scanned < _end)
        {
            int length = _scanner!.Next(_buffer.AsSpan(_scanned, _end - _scanned), out bool randomAccess);
            if (length == 0) break;
            _units.Enqueue((_scanned, length, randomAccess, _scanner.Header));
            _scanned += length;
            if (_scanner.LostSync is { } why && !_reportedLostSync)
            {
                _reportedLostSync = true;
                LostSync?.Invoke(why);
            }
        }
    }

    /// <summary>
    /// The next chunk from the units scanned: the rest of a unit that spans chunks, else whole
    /// units up to the chunk size, stopping before a random-access unit.
    /// </summary>
    private bool TryCut(Span<byte> destination, out MediaRead read)
    {
        read = default;
        int max = destination.Length;
        if (!_inUnit)
        {
            if (!_units.TryDequeue(out _current)) return false;
            _inUnit = true;
        }
        int from = _start;
        bool randomAccess = _current.RandomAccess && _start == _current.Start;
        var header = _current.Header;
        int unitEnd = _current.Start + _current.Length;
        if (unitEnd - _start >= max)
        {
            // A unit longer than a chunk: a piece of it.
            _start += max;
            if (_start == unitEnd) _inUnit = false;
        }
        else
        {
            _start = unitEnd;
            _inUnit = false;
            while (_units.TryPeek(out var next) && !next.RandomAccess && next.Start + next.Length - from <= max)
            {
                _units.Dequeue();
                _start = next.Start + next.Length;
                header = next.Header;
            }
        }
        int n = _start - from;
        _buffer.AsSpan(from, n).CopyTo(destination);
        Header = header;
        read = new MediaRead(n, randomAccess, randomAccess ? _current.Header : header);
        return true;
    }

    private async ValueTask FillAsync(CancellationToken cancellationToken)
    {
        if (_start > 0 && (_end == _buffer.Length || _start > _buffer.Length / 2))
        {
            // Move what is left to the front; unit positions move with it.
            int shift = _start;
            _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
            _end -= shift;
            _scanned -= shift;
            _start = 0;
            int count = _units.Count;
            for (int i = 0; i < count; i++)
            {
                var u = _units.Dequeue();
                _units.Enqueue((u.Start - shift, u.Length, u.RandomAccess, u.Header));
            }
            if (_inUnit) _current = (_current.Start - shift, _current.Length, _current.RandomAccess, _current.Header);
        }
        if (_end == _buffer.Length)
        {
            if (_buffer.Length >= MaxBuffered) throw new InvalidDataException($"a media unit longer than {MaxBuffered} bytes");
            Array.Resize(ref _buffer, Math.Min(MaxBuffered, _buffer.Length * 2));
        }
        int n = await _source.ReadAsync(_buffer.AsMemory(_end, Math.Min(_buffer.Length - _end, 64 * 1024)), cancellationToken).ConfigureAwait(false);
        if (n == 0) _ended = true;
        _end += n;
    }
}

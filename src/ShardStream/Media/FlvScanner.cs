namespace ShardStream.Media;

/// <summary>
/// Units of an FLV stream: the file header with PreviousTagSize0, then one unit per tag with its
/// PreviousTagSize. Keyframe tags (and the file header, where a whole stream starts) are random
/// access points; onMetaData and the sequence headers make the header.
/// </summary>
internal sealed class FlvScanner : UnitScanner
{
    private bool _preambleDone;
    private byte _typeFlags;
    private byte[]? _metadata;
    private byte[]? _video;
    private byte[]? _audio;
    private uint _generation;

    public override MediaFormat Format => MediaFormat.Flv;

    public override int Next(ReadOnlySpan<byte> data, out bool randomAccess)
    {
        randomAccess = false;
        if (LostSync is not null) return data.Length;
        try
        {
            if (!_preambleDone)
            {
                if (!Flv.TryReadPreamble(data, out _typeFlags, out int preamble)) return 0;
                _preambleDone = true;
                Update();
                randomAccess = true; // the start of the stream needs no header
                return preamble;
            }
            if (!Flv.TryReadTag(data, out var type, out _, out int bodyLength, out int length)) return 0;
            var body = data.Slice(FlvTag.HeaderLength, bodyLength);
            switch (FlvTagInfo.Classify(type, body))
            {
                case FlvTagKind.Keyframe:
                    randomAccess = true;
                    break;
                case FlvTagKind.Metadata:
                    Keep(ref _metadata, data[..length]);
                    break;
                case FlvTagKind.VideoSequenceHeader:
                    Keep(ref _video, data[..length]);
                    break;
                case FlvTagKind.AudioSequenceHeader:
                    Keep(ref _audio, data[..length]);
                    break;
            }
            return length;
        }
        catch (InvalidDataException e)
        {
            LostSync = $"the FLV stream is not well formed ({e.Message}); the rest passes through as raw bytes, with no keyframes marked";
            return data.Length;
        }
    }

    private void Keep(ref byte[]? slot, ReadOnlySpan<byte> tag)
    {
        // The same body again (a publisher that repeats its headers) keeps the generation: only
        // the timestamp may differ.
        if (slot is not null && slot.Length == tag.Length && slot.AsSpan(FlvTag.HeaderLength).SequenceEqual(tag[FlvTag.HeaderLength..])) return;
        slot = tag.ToArray();
        Update();
    }

    private void Update()
    {
        int length = Flv.PreambleLength + (_metadata?.Length ?? 0) + (_video?.Length ?? 0) + (_audio?.Length ?? 0);
        var bytes = new byte[length];
        int at = Flv.WritePreamble(bytes, _typeFlags);
        foreach (var part in new[] { _metadata, _video, _audio })
        {
            if (part is null) continue;
            part.CopyTo(bytes, at);
            at += part.Length;
        }
        Header = new MediaHeader(MediaFormat.Flv, ++_generation, bytes);
    }
}

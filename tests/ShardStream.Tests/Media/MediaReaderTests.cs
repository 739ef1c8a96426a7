using ShardStream.Media;

namespace ShardStream.Tests.Media;

/// <summary>The coordinator's source: chunks cut at unit boundaries, keyframes starting chunks, the header tracked.</summary>
public sealed class MediaReaderTests
{
    private static async Task<List<(byte[] Bytes, bool RandomAccess, MediaHeader? Header)>> ReadAllAsync(Stream source, MediaFormat? format = null, int chunkSize = 64 * 1024)
    {
        var reader = new MediaReader(source, format);
        var chunks = new List<(byte[], bool, MediaHeader?)>();
        var buffer = new byte[chunkSize];
        while (true)
        {
            var read = await reader.ReadAsync(buffer, CancellationToken.None);
            if (read.Length == 0) return chunks;
            chunks.Add((buffer[..read.Length], read.RandomAccess, read.Header));
        }
    }

    [Fact]
    public async Task Flv_is_detected_and_every_keyframe_starts_a_chunk()
    {
        byte[][] tags = [MediaStreams.Preamble(), MediaStreams.Metadata, MediaStreams.AvcHeader, MediaStreams.AacHeader,
            MediaStreams.Keyframe(0, 500), MediaStreams.Audio(10), MediaStreams.Inter(33, 100), MediaStreams.Audio(40),
            MediaStreams.Keyframe(1000, 700), MediaStreams.Inter(1033, 90)];
        byte[] stream = [.. tags.SelectMany(t => t)];
        var chunks = await ReadAllAsync(new MemoryStream(stream));

        Assert.Equal(stream, chunks.SelectMany(c => c.Bytes).ToArray());
        // The start of the stream, then each keyframe: three random-access chunks, each starting with its unit.
        Assert.Equal(3, chunks.Count);
        Assert.All(chunks, c => Assert.True(c.RandomAccess));
        Assert.Equal(MediaStreams.Keyframe(0, 500), chunks[1].Bytes[..MediaStreams.Keyframe(0, 500).Length]);
        Assert.Equal(MediaStreams.Keyframe(1000, 700), chunks[2].Bytes[..MediaStreams.Keyframe(1000, 700).Length]);
        // The header a joiner at the second keyframe writes first: preamble, metadata, sequence headers.
        Assert.Equal([.. MediaStreams.Preamble(), .. MediaStreams.Metadata, .. MediaStreams.AvcHeader, .. MediaStreams.AacHeader], chunks[2].Header!.Bytes);
    }

    [Fact]
    public async Task Chunks_end_at_tag_boundaries_and_a_tag_larger_than_a_chunk_spans_several()
    {
        byte[][] tags = [MediaStreams.Preamble(), MediaStreams.AvcHeader, MediaStreams.Keyframe(0, 3000), MediaStreams.Inter(33, 300), MediaStreams.Inter(66, 300), MediaStreams.Inter(99, 300)];
        byte[] stream = [.. tags.SelectMany(t => t)];
        // A reader that returns one byte at a time: chunks still end only where a tag ends.
        var chunks = await ReadAllAsync(new TrickleStream(stream, 1), chunkSize: 1024);
        Assert.Equal(stream, chunks.SelectMany(c => c.Bytes).ToArray());
        var boundaries = new HashSet<int>();
        int at = 0;
        foreach (var t in tags) boundaries.Add(at += t.Length);
        int keyStart = tags[0].Length + tags[1].Length;
        int pos = 0;
        foreach (var c in chunks)
        {
            pos += c.Bytes.Length;
            bool insideKeyframe = pos > keyStart && pos < keyStart + tags[2].Length;
            Assert.True(boundaries.Contains(pos) || (insideKeyframe && c.Bytes.Length == 1024), $"a chunk ends at {pos}, not at a tag boundary");
        }
        Assert.Contains(chunks, c => c.RandomAccess && c.Bytes.Length == 1024); // the keyframe's first piece
    }

    [Fact]
    public async Task Mpegts_random_access_comes_from_the_video_pid_only_and_pat_pmt_make_the_header()
    {
        byte[] pat = MediaStreams.Pat(0x1000), pmt = MediaStreams.Pmt(0x1000, 0x100, 0x101);
        byte[][] packets = [pat, pmt, MediaStreams.TsPacket(0x100, randomAccess: true, unitStart: true), MediaStreams.TsPacket(0x100),
            MediaStreams.TsPacket(0x101, randomAccess: true, unitStart: true), MediaStreams.TsPacket(0x100),
            MediaStreams.Pat(0x1000, cc: 1), MediaStreams.Pmt(0x1000, 0x100, 0x101, cc: 1), MediaStreams.TsPacket(0x100, randomAccess: true, unitStart: true, cc: 3)];
        byte[] stream = [.. packets.SelectMany(p => p)];
        var chunks = await ReadAllAsync(new MemoryStream(stream));
        Assert.Equal(stream, chunks.SelectMany(c => c.Bytes).ToArray());
        // Cut before each video random-access packet only (the audio one does not cut).
        Assert.Equal([376, 188 * 6, 188], chunks.Select(c => c.Bytes.Length));
        Assert.Equal([false, true, true], chunks.Select(c => c.RandomAccess));
        Assert.Equal([.. pat, .. pmt], chunks[2].Header!.Bytes);
        // Repeated tables (only the continuity counter changed) keep the header's generation.
        Assert.Equal(chunks[1].Header!.Generation, chunks[2].Header!.Generation);
    }

    [Fact]
    public async Task Mpegts_cut_at_packet_boundaries_from_any_reads()
    {
        byte[] stream = [.. MediaStreams.Pat(0x1000), .. MediaStreams.Pmt(0x1000, 0x100, 0x101), .. Enumerable.Range(0, 50).SelectMany(i => MediaStreams.TsPacket(0x100, randomAccess: i % 10 == 0, unitStart: true))];
        var chunks = await ReadAllAsync(new TrickleStream(stream, 1000), chunkSize: 2000);
        Assert.Equal(stream, chunks.SelectMany(c => c.Bytes).ToArray());
        Assert.All(chunks, c => Assert.Equal(0, c.Bytes.Length % 188));
        Assert.Equal(5, chunks.Count(c => c.RandomAccess));
    }

    [Theory]
    [InlineData("hello, world\n")]
    [InlineData("FLV is a container\n")]
    [InlineData("Good morning\n")]
    public async Task Other_bytes_are_raw_one_read_one_chunk(string text)
    {
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(text);
        var chunks = await ReadAllAsync(new TrickleStream([.. bytes, .. bytes], bytes.Length));
        Assert.Equal(2, chunks.Count);
        Assert.All(chunks, c => Assert.Equal(bytes, c.Bytes));
        Assert.All(chunks, c => Assert.False(c.RandomAccess));
    }

    [Fact]
    public async Task A_broken_flv_stream_passes_through_whole()
    {
        byte[] bad = MediaStreams.Inter(66, 10);
        bad[0] = 0x07;
        byte[] stream = [.. MediaStreams.Preamble(), .. MediaStreams.AvcHeader, .. MediaStreams.Keyframe(0, 100), .. bad, .. MediaStreams.Keyframe(99, 100)];
        var reader = new MediaReader(new MemoryStream(stream));
        string? why = null;
        reader.LostSync = w => why = w;
        var all = new List<byte>();
        var buffer = new byte[65536];
        for (var r = await reader.ReadAsync(buffer, default); r.Length > 0; r = await reader.ReadAsync(buffer, default)) all.AddRange(buffer[..r.Length]);
        Assert.Equal(stream, all.ToArray());
        Assert.Contains("FLV tag of type 7", why);
    }

    /// <summary>Hands out at most <c>step</c> bytes per read.</summary>
    private sealed class TrickleStream(byte[] data, int step) : MemoryStream(data)
    {
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            base.ReadAsync(buffer[..Math.Min(step, buffer.Length)], cancellationToken);
    }
}

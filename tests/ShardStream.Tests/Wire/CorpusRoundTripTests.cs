using System.Buffers;
using System.Text;
using ShardStream.Fuzz;
using ShardStream.Wire;

namespace ShardStream.Tests.Wire;

/// <summary>
/// The fuzz corpus as unit tests: every committed seed (tests/ShardStream.Fuzz/corpus) and every
/// input the fuzzer once found a bug with (tests/ShardStream.Fuzz/regressions) goes through the
/// fuzz target's own check, <see cref="FrameRoundTrip"/>: each frame decodes, encodes back to the
/// same bytes and decodes to the same message, whole and cut into pieces; a malformed body is
/// refused, never thrown on.
/// </summary>
public class CorpusRoundTripTests
{
    private static string FuzzFolder(string name)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "tests", "ShardStream.Fuzz", name);
            if (Directory.Exists(candidate)) return candidate;
        }
        throw new DirectoryNotFoundException($"tests/ShardStream.Fuzz/{name} not found above {AppContext.BaseDirectory}");
    }

    public static TheoryData<string> Seeds() => [.. Directory.GetFiles(FuzzFolder("corpus")).Select(f => Path.GetFileName(f)).Order()];

    public static TheoryData<string> Regressions() => [.. Directory.GetFiles(FuzzFolder("regressions")).Select(f => Path.GetFileName(f)).Order()];

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Every_seed_frame_decodes_and_encodes_back_to_the_same_bytes(string seed)
    {
        byte[] input = File.ReadAllBytes(Path.Combine(FuzzFolder("corpus"), seed));
        foreach (int segment in new[] { 0, 1, 3, 7 })
        {
            var counts = FrameRoundTrip.Check(input, segment);
            // A seed is made of valid frames only: all of them decode, none is refused.
            Assert.False(counts.ProtocolError, $"{seed}: protocol error");
            Assert.True(counts.Frames > 0 && counts.Decoded == counts.Frames, $"{seed}: {counts}");
        }
    }

    [Fact]
    public void The_committed_seeds_are_the_ones_the_fuzz_target_writes()
    {
        var expected = SeedCorpus.Frames().ToDictionary(f => f.Name, f => f.Bytes);
        var folder = FuzzFolder("corpus");
        Assert.Equal(expected.Keys.Order(), Directory.GetFiles(folder).Select(Path.GetFileName).Order());
        foreach (var (name, bytes) in expected) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(folder, name)));
    }

    public static TheoryData<FrameType> Types() => [.. Enum.GetValues<FrameType>()];

    [Theory]
    [MemberData(nameof(Types))]
    public void Every_frame_type_has_a_seed_that_the_round_trip_decodes(FrameType type)
    {
        // The frames of that type in every seed file, whole: a type added to FrameType without a
        // seed (or without a case in FrameRoundTrip, which then throws) fails here.
        var found = new List<string>();
        foreach (string path in Directory.GetFiles(FuzzFolder("corpus")).Order())
        {
            byte[] input = File.ReadAllBytes(path);
            var buffer = new ReadOnlySequence<byte>(input);
            while (FrameCodec.TryReadFrame(ref buffer, out var read, out var body))
            {
                if (read != type) continue;
                long start = input.Length - buffer.Length - Protocol.FrameHeaderLength - body.Length;
                byte[] frame = input.AsSpan((int)start, (int)(Protocol.FrameHeaderLength + body.Length)).ToArray();
                Assert.True(FrameRoundTrip.CheckFrame(type, body, frame), $"{Path.GetFileName(path)}: the {type} frame is refused");
                found.Add(Path.GetFileName(path));
            }
        }
        Assert.True(found.Count > 0, $"no seed in tests/ShardStream.Fuzz/corpus holds a {type} frame (add one to SeedCorpus.cs)");
    }

    [Theory]
    [MemberData(nameof(Regressions))]
    public void An_input_the_fuzzer_found_a_bug_with_is_refused_or_round_trips(string input)
    {
        // Before the fix each of these threw RoundTripException: invalid UTF-8 decoded to
        // replacement characters, so the message encoded to other (longer) bytes.
        FrameRoundTrip.Check(File.ReadAllBytes(Path.Combine(FuzzFolder("regressions"), input)));
        FrameRoundTrip.Check(File.ReadAllBytes(Path.Combine(FuzzFolder("regressions"), input)), segment: 7);
    }

    [Fact]
    public void A_string_of_invalid_utf8_is_refused()
    {
        // A Hello whose listen address is 1,024 bytes of 0xFF: decoded with replacement
        // characters it grew to 3,072 UTF-8 bytes, and encoding it for the next joiner threw.
        var hello = Frames.Body(Frames.Encode(new Hello(1, 1, HelloRole.Join, 0, Hello.DefaultUpload, [], new string('a', Protocol.MaxStringLength)).Write)).ToArray();
        hello.AsSpan(hello.Length - Protocol.MaxStringLength).Fill(0xFF);
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(hello));
        Assert.False(Hello.TryRead(ref reader, out _));

        // A reason cut inside a two-byte character, split across segments.
        var goodbye = Frames.Body(Frames.Encode(new Goodbye(GoodbyeCode.Normal, "ünï").Write)).ToArray();
        goodbye[^1] = 0xC3;
        reader = new SequenceReader<byte>(Segment.Split(goodbye, 3));
        Assert.False(Goodbye.TryRead(ref reader, out _));

        // Valid multi-byte UTF-8 across segment boundaries still reads.
        var good = Frames.Body(Frames.Encode(new Goodbye(GoodbyeCode.Normal, "ünïcödé ✓").Write)).ToArray();
        reader = new SequenceReader<byte>(Segment.Split(good, 3));
        Assert.True(Goodbye.TryRead(ref reader, out var read));
        Assert.Equal("ünïcödé ✓", read.Reason);
        Assert.Equal(Encoding.UTF8.GetByteCount(read.Reason), good.Length - 4);
    }
}

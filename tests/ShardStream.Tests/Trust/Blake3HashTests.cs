using System.Runtime.InteropServices;
using ShardStream.Trust.Hashing;

namespace ShardStream.Tests.Trust;

/// <summary>
/// Our BLAKE3 gives BLAKE3: the official test vectors, and the Blake3 package's hash of every
/// length up to 17,000 bytes and of random lengths up to 1 MiB, with each set of kernels this CPU
/// runs (a CPU without AVX-512 tests the ones it has; the portable scalar code runs everywhere).
/// </summary>
public unsafe class Blake3HashTests
{
    /// <summary>
    /// The first 32 bytes of the "hash" outputs of test_vectors/test_vectors.json in the BLAKE3
    /// repository (BLAKE3-team/BLAKE3): input byte i is i % 251.
    /// </summary>
    public static readonly TheoryData<int, string> OfficialVectors = new()
    {
        { 0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" },
        { 1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213" },
        { 1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11" },
        { 1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7" },
        { 1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444" },
        { 2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a" },
        { 2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030" },
        { 3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2" },
        { 3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3" },
        { 4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969" },
        { 4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995" },
        { 5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833" },
        { 5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff" },
        { 6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205" },
        { 6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f" },
        { 7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a" },
        { 7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817" },
        { 8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63" },
        { 8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b" },
        { 16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4" },
        { 31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47" },
        { 102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085" },
    };

    /// <summary>Every set of kernels this CPU runs, the portable one first.</summary>
    public static TheoryData<string> Kernels => new(Enum.GetValues<Blake3Kernels>().Where(Blake3Hash.IsSupported).Select(k => k.ToString()));

    [Theory]
    [MemberData(nameof(OfficialVectors))]
    public void Gives_the_official_test_vectors_with_every_kernel(int length, string expected)
    {
        byte[] input = new byte[length];
        for (int i = 0; i < length; i++) input[i] = (byte)(i % 251);
        byte[] hash = new byte[Blake3Hash.OutputLength];
        foreach (var kernels in Enum.GetValues<Blake3Kernels>().Where(Blake3Hash.IsSupported))
        {
            Array.Clear(hash);
            Blake3Hash.Hash(input, hash, kernels);
            Assert.True(expected == Convert.ToHexStringLower(hash), $"{kernels}, {length} bytes: {Convert.ToHexStringLower(hash)}, expected {expected}");
        }
        Blake3Hash.Hash(input, hash);
        Assert.Equal(expected, Convert.ToHexStringLower(hash));
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void Agrees_with_the_Blake3_package_on_every_length_up_to_17000_bytes(string name)
    {
        var kernels = Enum.Parse<Blake3Kernels>(name);
        byte[] data = new byte[17_000 + 64];
        new Random(10).NextBytes(data);
        byte[] expected = new byte[32], actual = new byte[32];
        for (int length = 0; length <= 17_000; length++)
        {
            // Inputs at every alignment: the node hashes bodies wherever they landed in a receive buffer.
            var input = data.AsSpan(length % 61, length);
            Blake3.Hasher.Hash(input, expected);
            Blake3Hash.Hash(input, actual, kernels);
            if (!expected.AsSpan().SequenceEqual(actual)) Assert.Fail($"{kernels}: {length} bytes (at offset {length % 61}) hash to {Convert.ToHexStringLower(actual)}, the package says {Convert.ToHexStringLower(expected)}");
        }
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void Agrees_with_the_Blake3_package_on_random_lengths_up_to_1_MiB(string name)
    {
        var kernels = Enum.Parse<Blake3Kernels>(name);
        var random = new Random(11);
        byte[] data = new byte[(1 << 20) + 64];
        random.NextBytes(data);
        byte[] expected = new byte[32], actual = new byte[32];
        // Around every multiple of 1 KiB up to 66 KiB (chunk and lane-group boundaries), then at random.
        var lengths = Enumerable.Range(1, 66).SelectMany(k => new[] { 1024 * k - 1, 1024 * k, 1024 * k + 1, 1024 * k + 17 })
            .Concat(Enumerable.Range(0, 150).Select(_ => random.Next(17_001, (1 << 20) + 1)))
            .Append(1 << 20);
        foreach (int length in lengths)
        {
            int offset = random.Next(64);
            var input = data.AsSpan(offset, length);
            Blake3.Hasher.Hash(input, expected);
            Blake3Hash.Hash(input, actual, kernels);
            if (!expected.AsSpan().SequenceEqual(actual)) Assert.Fail($"{kernels}: {length} bytes (at offset {offset}) hash to {Convert.ToHexStringLower(actual)}, the package says {Convert.ToHexStringLower(expected)}");
        }
    }

    /// <summary>
    /// No kernel reads a byte before or after its input: inputs that end just before, or start just
    /// after, a page the process may not read (a read there kills the test run). The differential
    /// tests above cannot see such a read when it does not change the hash (bytes past a short
    /// block that are then masked, say), as the bytes around their slices are readable.
    /// </summary>
    [Fact]
    public void Reads_nothing_outside_its_input_with_every_kernel()
    {
        if (!OperatingSystem.IsLinux()) return; // mprotect
        const int page = 4096;
        const int span = 18 * page; // 72 KiB, more than a 64 KiB chunk's body
        byte* region = (byte*)NativeMemory.AlignedAlloc(span + 2 * page, page);
        try
        {
            Assert.Equal(0, Mprotect(region, page, 0));
            Assert.Equal(0, Mprotect(region + page + span, page, 0));
            var readable = new Span<byte>(region + page, span);
            new Random(12).NextBytes(readable);
            byte[] expected = new byte[32], actual = new byte[32];
            var lengths = Enumerable.Range(0, 4200)
                .Concat(Enumerable.Range(4, 68).SelectMany(k => new[] { 1024 * k - 64, 1024 * k - 63, 1024 * k - 1, 1024 * k, 1024 * k + 1, 1024 * k + 17, 1024 * k + 63, 1024 * k + 65 }))
                .Where(length => length <= span);
            foreach (var kernels in Enum.GetValues<Blake3Kernels>().Where(Blake3Hash.IsSupported))
            {
                foreach (int length in lengths)
                {
                    foreach (var input in new[] { (At: "ending at", Offset: span - length), (At: "starting at", Offset: 0) })
                    {
                        var bytes = new ReadOnlySpan<byte>(region + page + input.Offset, length);
                        Blake3.Hasher.Hash(bytes, expected);
                        Blake3Hash.Hash(bytes, actual, kernels);
                        if (!expected.AsSpan().SequenceEqual(actual)) Assert.Fail($"{kernels}: {length} bytes {input.At} a guard page: {Convert.ToHexStringLower(actual)}, the package says {Convert.ToHexStringLower(expected)}");
                    }
                }
            }
        }
        finally
        {
            Mprotect(region, span + 2 * page, 3);
            NativeMemory.AlignedFree(region);
        }
    }

    [DllImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static extern int Mprotect(void* address, nuint length, int protection);

    [Fact]
    public void The_best_kernels_of_this_CPU_are_the_default()
    {
        Assert.True(Blake3Hash.IsSupported(Blake3Hash.Best));
        Assert.True(Blake3Hash.IsSupported(Blake3Kernels.Portable));
        if (System.Runtime.Intrinsics.X86.Avx512F.VL.IsSupported) Assert.Equal(Blake3Kernels.Avx512, Blake3Hash.Best);
    }
}

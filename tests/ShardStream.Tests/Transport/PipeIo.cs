using System.Buffers;
using System.IO.Pipelines;

namespace ShardStream.Tests.Transport;

/// <summary>Reads and writes on a connection's pipes, with a generous deadline so a hang fails instead of blocking.</summary>
internal static class PipeIo
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    public static async Task WriteAsync(PipeWriter output, byte[] bytes)
    {
        var result = await output.WriteAsync(bytes).AsTask().WaitAsync(Deadline);
        Assert.False(result.IsCompleted, "the other side stopped reading");
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes.</summary>
    public static async Task<byte[]> ReadExactlyAsync(PipeReader input, int count)
    {
        using var cts = new CancellationTokenSource(Deadline);
        var received = new List<byte>(count);
        while (received.Count < count)
        {
            var result = await input.ReadAsync(cts.Token);
            var buffer = result.Buffer;
            var take = buffer.Slice(0, Math.Min(buffer.Length, count - received.Count));
            received.AddRange(take.ToArray());
            input.AdvanceTo(take.End);
            if (result.IsCompleted && received.Count < count)
                Assert.Fail($"the connection ended after {received.Count} of {count} bytes");
        }
        return [.. received];
    }

    /// <summary>Reads until the other side completes, returning what came; throws what the pipe throws.</summary>
    public static async Task<byte[]> ReadToEndAsync(PipeReader input)
    {
        using var cts = new CancellationTokenSource(Deadline);
        var received = new List<byte>();
        while (true)
        {
            var result = await input.ReadAsync(cts.Token);
            received.AddRange(result.Buffer.ToArray());
            input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted) return [.. received];
        }
    }

    /// <summary>Waits until <paramref name="condition"/> holds, polling briefly.</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Deadline;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"timed out waiting until {what}");
            await Task.Delay(10);
        }
    }
}

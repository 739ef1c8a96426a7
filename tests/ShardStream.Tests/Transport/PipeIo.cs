using System.Buffers;
using System.IO.Pipelines;

namespace ShardStream.Tests.Transport;

/// <summary>Reads and writes on a connection's pipes, with a generous deadline so a hang fails instead of blocking.</summary>
internal static class PipeIo
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    public static async Task WriteAsync(PipeWriter output, byte[] bytes)
    {
        var result = await WithinAsync(output.WriteAsync(bytes), $"a write of {bytes.Length} bytes was taken");
        Assert.False(result.IsCompleted, "the other side stopped reading");
    }

    /// <summary>Awaits <paramref name="task"/> for at most <see cref="Deadline"/>; fails naming <paramref name="what"/> if it did not end by then.</summary>
    public static async Task<T> WithinAsync<T>(Task<T> task, string what)
    {
        try
        {
            return await task.WaitAsync(Deadline);
        }
        catch (TimeoutException)
        {
            throw TimedOut(what);
        }
    }

    /// <inheritdoc cref="WithinAsync{T}(Task{T}, string)"/>
    public static async Task WithinAsync(Task task, string what)
    {
        try
        {
            await task.WaitAsync(Deadline);
        }
        catch (TimeoutException)
        {
            throw TimedOut(what);
        }
    }

    /// <inheritdoc cref="WithinAsync{T}(Task{T}, string)"/>
    public static Task<T> WithinAsync<T>(ValueTask<T> task, string what) => WithinAsync(task.AsTask(), what);

    /// <inheritdoc cref="WithinAsync{T}(Task{T}, string)"/>
    public static Task WithinAsync(ValueTask task, string what) => WithinAsync(task.AsTask(), what);

    private static Exception TimedOut(string what) => new Xunit.Sdk.XunitException($"timed out after {Deadline.TotalSeconds:0} s waiting until {what}");

    /// <summary>Reads exactly <paramref name="count"/> bytes.</summary>
    public static async Task<byte[]> ReadExactlyAsync(PipeReader input, int count)
    {
        using var cts = new CancellationTokenSource(Deadline);
        var received = new List<byte>(count);
        while (received.Count < count)
        {
            var result = await ReadWithinAsync(input, cts.Token, () => $"{count} bytes arrived (got {received.Count})");
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
            var result = await ReadWithinAsync(input, cts.Token, () => $"the other side ended the connection (got {received.Count} bytes, no end)");
            received.AddRange(result.Buffer.ToArray());
            input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted) return [.. received];
        }
    }

    /// <summary>A read that gives up at <paramref name="deadline"/>'s end, failing with what did not happen instead of a bare cancellation.</summary>
    private static async ValueTask<ReadResult> ReadWithinAsync(PipeReader input, CancellationToken deadline, Func<string> what)
    {
        try
        {
            return await input.ReadAsync(deadline);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            throw TimedOut(what());
        }
    }

    /// <summary>Waits until <paramref name="condition"/> holds, polling briefly; each look at it is bounded too.</summary>
    public static async Task EventuallyAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Deadline;
        while (!await WithinAsync(condition(), what))
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"timed out waiting until {what}");
            await Task.Delay(10);
        }
    }
}

using System.Diagnostics;

namespace ShardStream.IntegrationTests;

/// <summary>
/// Waiting on a condition, as the timing-sensitive tests here do instead of sleeping: polled every
/// 20 ms until it holds; past the deadline, a <see cref="TimeoutException"/> that says what did not happen.
/// </summary>
internal static class Poll
{
    public static async Task UntilAsync(Func<bool> condition, TimeSpan within, Func<string> describe)
    {
        long deadline = Stopwatch.GetTimestamp() + (long)(within.TotalSeconds * Stopwatch.Frequency);
        while (!condition())
        {
            if (Stopwatch.GetTimestamp() > deadline) throw new TimeoutException(describe());
            await Task.Delay(20);
        }
    }

    public static Task UntilAsync(Func<bool> condition, TimeSpan within, string what) => UntilAsync(condition, within, () => $"timed out waiting until {what}");
}

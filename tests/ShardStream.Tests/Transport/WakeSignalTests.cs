using ShardStream.Transport;

namespace ShardStream.Tests.Transport;

/// <summary>The parked writer's signal: a set is never lost, several are one, and the waiter never runs inside <see cref="WakeSignal.Set"/>.</summary>
public sealed class WakeSignalTests
{
    [Fact]
    public async Task A_set_before_the_wait_completes_the_wait_at_once_and_is_used_up()
    {
        var signal = new WakeSignal();
        signal.Set();
        signal.Set();
        Assert.True(signal.WaitAsync().IsCompleted);
        // Two sets with no wait between them are one wake-up.
        var next = signal.WaitAsync();
        Assert.False(next.IsCompleted);
        signal.Set();
        await next.AsTask().WaitAsync(TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task A_parked_waiter_is_woken_on_another_thread_than_the_setter()
    {
        var signal = new WakeSignal();
        var setter = new Lock();
        int waiterThread = 0;
        var woken = Run();
        async Task Run()
        {
            await signal.WaitAsync();
            // The setter still holds its lock: had the waiter run inline, it would be this thread and hold it.
            Assert.False(setter.IsHeldByCurrentThread);
            waiterThread = Environment.CurrentManagedThreadId;
        }
        Assert.False(woken.IsCompleted);
        int setterThread;
        lock (setter)
        {
            setterThread = Environment.CurrentManagedThreadId;
            signal.Set();
            // Held until the waiter has run (or a generous deadline): it must not need this thread.
            SpinWait.SpinUntil(() => woken.IsCompleted, TimeSpan.FromSeconds(30));
        }
        await woken.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.NotEqual(setterThread, waiterThread);
    }

    [Fact]
    public async Task Sets_and_waits_racing_on_two_threads_lose_no_wake_up()
    {
        // One setter, one waiter: after the setter's last set, the waiter's next wait completes.
        const int rounds = 20_000;
        var signal = new WakeSignal();
        int handed = 0;
        var waiter = Task.Run(async () =>
        {
            int seen = 0;
            while (seen < rounds)
            {
                await signal.WaitAsync();
                seen = Volatile.Read(ref handed);
            }
        });
        var setter = Task.Run(() =>
        {
            for (int i = 1; i <= rounds; i++)
            {
                Volatile.Write(ref handed, i);
                signal.Set();
            }
        });
        await Task.WhenAll(waiter, setter).WaitAsync(TimeSpan.FromSeconds(60));
    }
}

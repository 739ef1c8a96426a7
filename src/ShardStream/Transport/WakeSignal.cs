using System.Threading.Tasks.Sources;

namespace ShardStream.Transport;

/// <summary>
/// An auto-reset signal for one waiter at a time that allocates nothing per wait: what a link's
/// parked writer waits on. It replaced a <see cref="SemaphoreSlim"/> whose every asynchronous wait
/// with a cancellation token allocated a task, a cancellation promise, a state machine and a
/// registration (about 420 bytes held per parked link, and as much again in garbage for each
/// heartbeat it sent: docs/performance.md#the-coordinator-at-scale). A <see cref="Set"/> with no
/// waiter is kept for the next <see cref="WaitAsync"/>; several are one. The waiter's continuation
/// never runs inside <see cref="Set"/> (callers may hold locks).
/// </summary>
internal sealed class WakeSignal : IValueTaskSource
{
    private const int Idle = 0;
    private const int Signalled = 1;
    private const int Waiting = 2;

    private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };
    private int _state;

    /// <summary>Wakes the waiter, or the next one to wait.</summary>
    public void Set()
    {
        while (true)
        {
            switch (Volatile.Read(ref _state))
            {
                case Signalled:
                    return;
                case Idle:
                    if (Interlocked.CompareExchange(ref _state, Signalled, Idle) == Idle) return;
                    break;
                default:
                    if (Interlocked.CompareExchange(ref _state, Idle, Waiting) == Waiting)
                    {
                        _core.SetResult(true);
                        return;
                    }
                    break;
            }
        }
    }

    /// <summary>Completes at once when signalled since the last wait, else at the next <see cref="Set"/>. One waiter at a time.</summary>
    public ValueTask WaitAsync()
    {
        if (Interlocked.CompareExchange(ref _state, Idle, Signalled) == Signalled) return ValueTask.CompletedTask;
        // Nobody completes the core before the state says someone waits on it.
        _core.Reset();
        if (Interlocked.CompareExchange(ref _state, Waiting, Idle) == Idle) return new ValueTask(this, _core.Version);
        // Set meanwhile: take it.
        Volatile.Write(ref _state, Idle);
        return ValueTask.CompletedTask;
    }

    void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

    void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}

using Microsoft.Extensions.Time.Testing;
using ShardStream.Nodes;
using ShardStream.Streaming;
using ShardStream.Trust;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// When the coordinator signs: a full list at once; a live source that has caught up (short reads)
/// as soon as the last signature is the minimum interval old, so its chunks do not wait the whole
/// maximum delay; a source that keeps the reads full only when a list is full or its oldest chunk
/// has waited the maximum delay. Signatures stay at most one per interval while the source is live.
/// </summary>
public class SigningQueueTests
{
    private static readonly TimeSpan MaxDelay = TimeSpan.FromMilliseconds(5);
    private static readonly TimeSpan MinInterval = TimeSpan.FromMilliseconds(2);

    [Fact]
    public void A_live_source_is_signed_once_the_interval_has_passed_not_after_the_whole_delay()
    {
        var time = new FakeTimeProvider();
        using var signer = StreamSigner.CreateEphemeral();
        var relay = new Relay(1, 1 << 20, TimeSpan.FromSeconds(30), time);
        var queue = new SigningQueue(signer.ForRun(StreamRun.NewId()), relay, 1, 32, 1 << 20, time);

        // The first record of a live source: no signature yet, so it is signed as soon as the
        // source's next read waits.
        queue.Add(Record(0), sourceCaughtUp: true);
        Assert.Equal(0, queue.ListsSigned);
        queue.SourceWaiting(MinInterval);
        Assert.Equal(1, queue.ListsSigned);

        // One record per millisecond: the next waits for the interval, not for the 5 ms delay.
        long seq = 1;
        var signedAt = new List<double>();
        for (int ms = 1; ms <= 20; ms++)
        {
            time.Advance(TimeSpan.FromMilliseconds(1));
            long before = queue.ListsSigned;
            queue.SignIfDue(MaxDelay, MinInterval);
            queue.Add(Record(seq++), sourceCaughtUp: true);
            queue.SourceWaiting(MinInterval);
            if (queue.ListsSigned > before) signedAt.Add(ms);
        }
        // Every 2 ms, never more often, and never a record held 5 ms.
        Assert.Equal(Enumerable.Range(1, 10).Select(i => 2.0 * i), signedAt);
    }

    [Fact]
    public void A_burst_of_a_live_source_is_signed_once_when_the_burst_ends()
    {
        var time = new FakeTimeProvider();
        using var signer = StreamSigner.CreateEphemeral();
        var relay = new Relay(1, 1 << 20, TimeSpan.FromSeconds(30), time);
        var queue = new SigningQueue(signer.ForRun(StreamRun.NewId()), relay, 1, 32, 1 << 20, time);

        // Records that came late and are read back to back (each read short, the next one ready):
        // nothing is signed in the middle of the burst...
        for (int i = 0; i < 4; i++) queue.Add(Record(i), sourceCaughtUp: true);
        Assert.Equal(0, queue.ListsSigned);
        // ...and one signature covers all four once the next read waits.
        queue.SourceWaiting(MinInterval);
        Assert.Equal(1, queue.ListsSigned);
        // The next burst comes 1 ms later: held until the interval has passed, then signed by the timer.
        time.Advance(TimeSpan.FromMilliseconds(1));
        for (int i = 4; i < 8; i++) queue.Add(Record(i), sourceCaughtUp: true);
        queue.SourceWaiting(MinInterval);
        Assert.Equal(1, queue.ListsSigned);
        time.Advance(TimeSpan.FromMilliseconds(1));
        queue.SignIfDue(MaxDelay, MinInterval);
        Assert.Equal(2, queue.ListsSigned);
    }

    [Fact]
    public void A_source_that_keeps_reads_full_is_signed_by_size_or_after_the_whole_delay()
    {
        var time = new FakeTimeProvider();
        using var signer = StreamSigner.CreateEphemeral();
        var relay = new Relay(1, 64 << 20, TimeSpan.FromSeconds(30), time);
        var queue = new SigningQueue(signer.ForRun(StreamRun.NewId()), relay, 1, 32, 1 << 20, time);

        // Full reads: 15 chunks of 64 KiB stay held however long it has been since a signature...
        for (int i = 0; i < 15; i++)
        {
            queue.Add(Record(i, 64 * 1024), sourceCaughtUp: false);
            time.Advance(TimeSpan.FromMilliseconds(0.25));
            queue.SignIfDue(MaxDelay, MinInterval);
        }
        Assert.Equal(0, queue.ListsSigned);
        // ...the 16th fills 1 MiB: signed at once.
        queue.Add(Record(15, 64 * 1024), sourceCaughtUp: false);
        Assert.Equal(1, queue.ListsSigned);

        // One more, then nothing: it is signed when it has waited the maximum delay, not before.
        queue.Add(Record(16, 64 * 1024), sourceCaughtUp: false);
        time.Advance(MaxDelay - TimeSpan.FromMilliseconds(0.5));
        queue.SignIfDue(MaxDelay, MinInterval);
        Assert.Equal(1, queue.ListsSigned);
        time.Advance(TimeSpan.FromMilliseconds(0.5));
        queue.SignIfDue(MaxDelay, MinInterval);
        Assert.Equal(2, queue.ListsSigned);
        queue.Clear();
    }

    [Fact]
    public void A_short_read_is_appended_only_to_the_last_chunk_still_waiting_for_its_signature()
    {
        var time = new FakeTimeProvider();
        using var signer = StreamSigner.CreateEphemeral();
        var relay = new Relay(1, 1 << 20, TimeSpan.FromSeconds(30), time);
        var queue = new SigningQueue(signer.ForRun(StreamRun.NewId()), relay, 1, 32, 1 << 20, time);
        var more = new byte[1250];

        queue.Add(Record(0), sourceCaughtUp: true);
        Assert.True(queue.TryAppend(0, more, 64 * 1024, sourceCaughtUp: true));
        // Not an earlier chunk, not past the chunk size, not a chunk already signed.
        queue.Add(Record(1), sourceCaughtUp: true);
        Assert.False(queue.TryAppend(0, more, 64 * 1024, sourceCaughtUp: true));
        Assert.False(queue.TryAppend(1, new byte[64 * 1024 - 1249], 64 * 1024, sourceCaughtUp: true));
        queue.SignAll();
        Assert.Equal(1, queue.ListsSigned);
        Assert.False(queue.TryAppend(1, more, 64 * 1024, sourceCaughtUp: true));
    }

    private static Chunk Record(long seq, int length = 1250)
    {
        var chunk = Chunk.Rent(length);
        chunk.Set(0, seq, seq * length, length);
        return chunk;
    }
}

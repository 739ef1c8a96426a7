using System.Globalization;

namespace ShardStream.Nodes;

/// <summary>
/// What a peer's own download carried lately, measured where the bytes arrive: the stream bytes it
/// accepted, sampled at every tick, and the most it took in any <see cref="Window"/> of the last
/// <see cref="Kept"/>. A viewer stopped as too slow is told this beside the stream rate. Its
/// parents cannot measure it: each sees only its own share of the viewer's link, and counts bytes
/// as they are handed to its transport, which holds seconds of them on a slow link (across network
/// namespaces a viewer behind a 700 kbit/s tbf was told "92 kbit/s" and "50 kbit/s" from its
/// parents' figures). While a viewer is behind its link is full, so its best window is its download.
/// </summary>
internal sealed class IntakeMeter(TimeProvider time)
{
    /// <summary>The window one figure is measured over.</summary>
    internal static readonly TimeSpan Window = TimeSpan.FromSeconds(5);

    /// <summary>How far back windows are looked for.</summary>
    internal static readonly TimeSpan Kept = TimeSpan.FromSeconds(30);

    private readonly Queue<(long At, long Bytes, int Run)> _samples = new();

    /// <summary>Which stretch between pauses of the process a sample belongs to: no window spans two.</summary>
    private int _run;

    /// <summary>Adds a sample of the running total of bytes accepted; forgets samples older than <see cref="Kept"/>.</summary>
    public void Sample(long bytes)
    {
        long now = time.GetTimestamp();
        lock (_samples)
        {
            _samples.Enqueue((now, bytes, _run));
            while (_samples.Count > 1 && time.GetElapsedTime(_samples.Peek().At, now) > Kept) _samples.Dequeue();
        }
    }

    /// <summary>
    /// This process was held up: bytes it then reads at once crossed the link over a longer time,
    /// so no window spans the pause. The windows before it measured the link and are kept.
    /// </summary>
    public void NotePause()
    {
        lock (_samples) _run++;
    }

    /// <summary>
    /// The most it took in any window of at least half <see cref="Window"/> and at most
    /// <see cref="Window"/>, in Mbit/s, with that window; null while it has no such window.
    /// </summary>
    public (double Mbps, TimeSpan Over)? Best()
    {
        (long At, long Bytes, int Run)[] samples;
        lock (_samples) samples = [.. _samples];
        (double Mbps, TimeSpan Over)? best = null;
        int from = 0;
        for (int to = 1; to < samples.Length; to++)
        {
            while (samples[from].Run != samples[to].Run || time.GetElapsedTime(samples[from].At, samples[to].At) > Window) from++;
            var span = time.GetElapsedTime(samples[from].At, samples[to].At);
            if (span < Window / 2) continue;
            double mbps = (samples[to].Bytes - samples[from].Bytes) * 8 / span.TotalSeconds / 1e6;
            if (best is not { } b || mbps > b.Mbps) best = (mbps, span);
        }
        return best;
    }

    /// <summary>
    /// What a viewer stopped as too slow adds to the reason it was given: "this peer received X
    /// Mbit/s at best (N s of the last 30)", in kbit/s under 0.1 Mbit/s; empty without a window.
    /// </summary>
    public string Said()
    {
        if (Best() is not { } b) return "";
        string rate = b.Mbps < 0.1 ? string.Create(CultureInfo.InvariantCulture, $"{b.Mbps * 1000:0.#} kbit/s") : string.Create(CultureInfo.InvariantCulture, $"{b.Mbps:0.0} Mbit/s");
        return string.Create(CultureInfo.InvariantCulture, $"; this peer received {rate} at best ({b.Over.TotalSeconds:0.#} s of the last {Kept.TotalSeconds:0})");
    }
}

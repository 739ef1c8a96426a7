using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace ShardStream.IntegrationTests;

/// <summary>
/// The resilience test runs 31 processes and measures stalls. Running it next to the other CLI
/// tests would put 40+ processes on the machine and measure the machine instead of the overlay.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class CliResilienceCollection
{
    public const string Name = "CLI resilience (timing-sensitive, runs alone)";
}

/// <summary>
/// Issue 4: the real CLI in 31 processes on loopback. A coordinator and 30 peers stream a paced
/// 200 MiB source; every 2 s one random interior peer is killed with SIGKILL (10 kills), then one
/// more interior peer is frozen with SIGSTOP. Every surviving peer must write exactly the source
/// (sha256), and the stall each peer saw after each failure is measured and reported.
/// </summary>
/// <remarks>
/// <para>Interior peers are picked from the live parent map, which the test rebuilds from the
/// peers' own logs: <c>joined as peer N ...: shard s from peer P</c>, <c>moving shard(s) s@seq to
/// peer P</c> (or <c>to coordinator</c>) and <c>lost parent P for shard(s) s</c>. The peers log every parent change, so the
/// map follows repairs (the coordinator's join lines would go stale after the first move).</para>
/// <para>Stall of a peer after a failure at time t (the next failure is at t'): the longest gap
/// between two stdout arrivals that ends after t and starts in [t - 0.5 s, min(t' - 0.5 s, t + 3 s)),
/// counted from max(previous arrival, t) to the next arrival; a stall that runs past t' counts in
/// full unless t' is a failure of one of the peer's ancestors, which takes over the rest of the gap.
/// The 0.5 s slack gives each gap to one failure: the one it started at.</para>
/// <para>A stall after a kill is bounded from when the coordinator logged the victim gone (its
/// repair starts there), and that detection is bounded on its own (heartbeat timeout + 3 s): on a
/// starved machine the coordinator saw two kills 3–5 s late, and a bound counted from the kill
/// measured the machine.</para>
/// <para>A victim with no child in the plan when the coordinator read the end of its control link
/// (made a leaf before the kill, or its children moved elsewhere by the repair of an earlier kill:
/// their moves were sent, but not yet in their logs when the victim was picked) is kept for the
/// rejoin grace (4 heartbeat timeouts, docs/resilience.md) by design, as no child in the plan is
/// left to report it. The coordinator's line that starts the wait says how many shard-streams the
/// peer relays in the plan; with none, its detection is reported, not bounded, and its children's
/// stalls are bounded from the kill.</para>
/// </remarks>
[Collection(CliResilienceCollection.Name)]
public sealed partial class CliResilienceTests(ITestOutputHelper output)
{
    private const int PeerCount = 30;
    private const int SourceBytes = 128 * 1024 * 1024;
    private const int BlockBytes = 64 * 1024;
    private const int KillCount = 10;
    private const int JoinsInFlight = 4;
    private const double HeartbeatTimeoutSeconds = 5;

    /// <summary>
    /// 4 MiB/s: the 128 MiB last 32 s, long enough for the 10 kills (at 2..20 s), the freeze
    /// (at 22 s), its detection (heartbeat timeout, 5 s) and the repair to happen while streaming.
    /// It was 6.25 MiB/s; since every chunk is signed and verified, 31 processes at that rate
    /// saturate this 2-core machine (the source took 34–47 s instead of 32, and orphans catching
    /// up behind catching-up parents stalled 5–6 s), which measured the machine, not the repair.
    /// </summary>
    private const double RateBytesPerSecond = 4.0 * 1024 * 1024;

    private static readonly TimeSpan KillEvery = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan StallWindow = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan ExitDeadline = TimeSpan.FromMinutes(2);

    /// <summary>The generous bounds asserted; the issue's targets (500 ms median, timeout + 500 ms) are reported.</summary>
    private static readonly TimeSpan MaxStallAfterKill = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan MaxStallAfterFreeze = TimeSpan.FromSeconds(HeartbeatTimeoutSeconds + 3);

    /// <summary>A killed peer's links are reset at once; the heartbeat timeout is the fallback.</summary>
    private static readonly TimeSpan MaxDetectionAfterKill = TimeSpan.FromSeconds(HeartbeatTimeoutSeconds + 3);

    [Theory]
    [InlineData(2)]
    [InlineData(1)]
    public async Task Thirty_peers_lose_no_byte_when_interior_peers_are_killed_every_2_s_and_one_freezes(int shards)
    {
        var source = new byte[SourceBytes];
        new Random(4000 + shards).NextBytes(source);
        string expected = Convert.ToHexStringLower(SHA256.HashData(source));
        var pick = new Random(17 * shards);
        string timeout = HeartbeatTimeoutSeconds.ToString(CultureInfo.InvariantCulture);
        long testStart = Stopwatch.GetTimestamp();

        await using var coordinator = CliProcess.Start("coordinator", "-l", "127.0.0.1:0", "-s", shards.ToString(CultureInfo.InvariantCulture),
            "--min-peers", PeerCount.ToString(CultureInfo.InvariantCulture), "--heartbeat-timeout", timeout);
        string address = await coordinator.WaitForListenAddressAsync(TimeSpan.FromSeconds(30));
        var peers = new List<PeerRun>();
        var events = new List<Failure>();
        long t0 = testStart;
        try
        {
            // At most a few joins in flight: 30 runtimes starting at once on 2 cores make joins take
            // over a second, and then a heartbeat can overtake the welcome (a join bug, reported
            // separately; this test is about failures after the join).
            for (int i = 0; i < PeerCount; i++)
            {
                peers.Add(new PeerRun(CliProcess.Start("peer", "-c", address, "-l", "127.0.0.1:0", "--heartbeat-timeout", timeout)));
                await WaitUntilAsync(() => peers.Count(p => !p.TryReadId()) < JoinsInFlight || peers.Any(p => p.Process.HasExited), StartDeadline, () => StartFailure(coordinator, peers));
                Assert.False(peers.Any(p => p.Process.HasExited), StartFailure(coordinator, peers));
            }

            // Every peer knows its id and the coordinator has all of them attached: the source starts.
            await WaitUntilAsync(() => peers.All(p => p.TryReadId()) && coordinator.StderrLines.Any(l => StreamingRegex().IsMatch(l)), StartDeadline,
                () => StartFailure(coordinator, peers));
            t0 = Stopwatch.GetTimestamp();
            var writing = WritePacedAsync(coordinator.StandardInput, source, t0);

            // Ten SIGKILLs of interior peers, 2 s apart, then one SIGSTOP.
            for (int i = 0; i <= KillCount; i++)
            {
                await DelayUntilAsync(t0, KillEvery * (i + 1));
                bool freeze = i == KillCount;
                var map = ParentMap(peers.Where(p => p.Alive), shards);
                var candidates = peers.Where(p => p.Alive && map.Values.Any(ps => ps.Contains(p.Id))).ToList();
                bool interior = candidates.Count > 0;
                var victim = interior ? candidates[pick.Next(candidates.Count)] : peers.Where(p => p.Alive).MinBy(p => p.Id)!;
                var (orphans, subtree) = Affected(map, victim.Id, shards);
                long at = Stopwatch.GetTimestamp();
                if (freeze) await victim.Process.SignalAsync("STOP");
                else victim.Process.Kill();
                victim.DeadAt = at;
                victim.Frozen = freeze;
                events.Add(new Failure(i, freeze, victim, at, interior, orphans, subtree, map));
            }

            TimeSpan sourceTook = await writing;
            coordinator.StandardInput.Close();
            var (coordinatorExit, _) = await coordinator.WaitForExitAsync(ExitDeadline);
            var survivors = peers.Where(p => p.DeadAt is null).ToList();
            var results = new List<(PeerRun Peer, int Exit, string Sha)>();
            foreach (var p in survivors)
            {
                var (exit, sha) = await p.Process.WaitForExitAsync(ExitDeadline);
                results.Add((p, exit, sha));
            }

            string report = Report(shards, events, peers, coordinator, t0, testStart, sourceTook, out var killStalls, out var freezeStalls);
            output.WriteLine(report);
            File.WriteAllText(Path.Combine(AppContext.BaseDirectory, $"stall-report-k{shards}.txt"), report);

            Assert.True(coordinatorExit == 0, $"coordinator exited with {coordinatorExit}:\n{coordinator.Stderr}");
            foreach (var (p, exit, sha) in results)
            {
                Assert.True(exit == 0, $"peer {p.Id} exited with {exit}:\n{p.Process.Stderr}");
                Assert.True(expected == sha, $"peer {p.Id} wrote {p.Process.StdoutBytes} bytes with sha256 {sha}, the source has {SourceBytes} bytes with {expected}:\n{p.Process.Stderr}");
            }
            Assert.True(survivors.Count == PeerCount - KillCount - 1, $"{survivors.Count} survivors");
            // Counted from when the coordinator saw the kill: a coordinator the machine starves sees
            // kills late (at load 32: 4.8 s and 3.1 s, unaffected peers stalled 4.5 s meanwhile), and
            // the repair starts then. How late it may see one is bounded on its own.
            Assert.All(killStalls, s => Assert.True(s.Stall - s.Detection < MaxStallAfterKill,
                $"peer {s.Peer} stalled {s.Stall.TotalMilliseconds:0} ms after kill #{s.Event + 1}, {(s.Stall - s.Detection).TotalMilliseconds:0} ms of it after the coordinator saw the kill"));
            // A leaf kill is exempt from the detection bound on the coordinator's own word (its wait
            // line): a coordinator that said so of every victim would exempt them all. Victims are
            // picked among peers with children in the test's map; a repair emptied one in 16 runs.
            int leafKills = killStalls.Where(s => s.Leaf).Select(s => s.Event).Distinct().Count();
            Assert.True(leafKills <= KillCount / 2, $"{leafKills} of {KillCount} kills relayed nothing in the coordinator's plan when their control links broke");
            // The CLI's logger drops lines when stderr cannot keep up (CommonOptions, DropWrite): a
            // leaf whose wait line was dropped fails here, and the message says so.
            Assert.All(killStalls.Where(s => !s.Leaf), s => Assert.True(s.Detection < MaxDetectionAfterKill, $"the coordinator saw kill #{s.Event + 1} after {s.Detection.TotalMilliseconds:0} ms"
                + (s.WaitLogged ? "" : "; it logged no wait for the victim to join again (a line dropped under load would hide a leaf)")));
            Assert.All(freezeStalls, s => Assert.True(s.Stall < MaxStallAfterFreeze, $"peer {s.Peer} stalled {s.Stall.TotalMilliseconds:0} ms after the freeze"));
        }
        finally
        {
            foreach (var p in peers) await p.Process.DisposeAsync();
            WriteLogs(shards, coordinator, peers, t0);
        }
    }

    private static string StartFailure(CliProcess coordinator, List<PeerRun> peers) =>
        $"not all peers joined, or the coordinator did not start streaming; peers that exited:\n"
        + string.Join("\n", peers.Where(p => p.Process.HasExited).Select(p => p.Process.Stderr))
        + $"\ncoordinator:\n{coordinator.Stderr}";

    /// <summary>Every process's stderr, each line prefixed with its arrival in seconds since the source started, under resilience-logs-kK/.</summary>
    private static void WriteLogs(int shards, CliProcess coordinator, List<PeerRun> peers, long t0)
    {
        string dir = Path.Combine(AppContext.BaseDirectory, $"resilience-logs-k{shards}");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        Directory.CreateDirectory(dir);
        void Write(string name, CliProcess process) => File.WriteAllLines(Path.Combine(dir, name),
            process.TimedStderrLines.Select(l => $"{Stopwatch.GetElapsedTime(t0, l.Timestamp).TotalSeconds.ToString("+0.000;-0.000", CultureInfo.InvariantCulture)} {l.Line}"));
        Write("coordinator.log", coordinator);
        for (int i = 0; i < peers.Count; i++) Write(peers[i].Id >= 0 ? $"peer-{peers[i].Id:00}.log" : $"process-{i:00}.log", peers[i].Process);
    }

    /// <summary>Writes the source into the coordinator's stdin at <see cref="RateBytesPerSecond"/> (absolute schedule); returns how long it took.</summary>
    private static async Task<TimeSpan> WritePacedAsync(Stream stdin, byte[] source, long t0)
    {
        await Task.Yield();
        for (int offset = 0; offset < source.Length; offset += BlockBytes)
        {
            await DelayUntilAsync(t0, TimeSpan.FromSeconds(offset / RateBytesPerSecond));
            await stdin.WriteAsync(source.AsMemory(offset, Math.Min(BlockBytes, source.Length - offset)));
            await stdin.FlushAsync();
        }
        return Stopwatch.GetElapsedTime(t0);
    }

    private static async Task DelayUntilAsync(long t0, TimeSpan at)
    {
        var wait = at - Stopwatch.GetElapsedTime(t0);
        if (wait > TimeSpan.Zero) await Task.Delay(wait);
    }

    private static Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, Func<string> describe) => Poll.UntilAsync(condition, timeout, describe);

    /// <summary>Per live peer id, its parent per shard (0 = coordinator, -1 = none known), from the peers' logs.</summary>
    private static Dictionary<int, int[]> ParentMap(IEnumerable<PeerRun> peers, int shards)
    {
        var map = new Dictionary<int, int[]>();
        foreach (var p in peers)
        {
            var parents = Enumerable.Repeat(-1, shards).ToArray();
            foreach (string line in p.Process.StderrLines)
            {
                if (JoinedRegex().Match(line) is { Success: true } joined)
                {
                    foreach (Match m in ShardFromRegex().Matches(joined.Groups["parents"].Value))
                        parents[int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)] = m.Groups[2].Success ? int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) : 0;
                }
                else if (MovingRegex().Match(line) is { Success: true } moving)
                {
                    int parent = moving.Groups[2].Success ? int.Parse(moving.Groups[2].Value, CultureInfo.InvariantCulture) : 0;
                    foreach (string s in moving.Groups[1].Value.Split(','))
                        parents[int.Parse(s.Split('@')[0], CultureInfo.InvariantCulture)] = parent;
                }
                else if (LostParentRegex().Match(line) is { Success: true } lost)
                {
                    int parent = int.Parse(lost.Groups[1].Value, CultureInfo.InvariantCulture);
                    foreach (string s in lost.Groups[2].Value.Split(','))
                    {
                        int shard = int.Parse(s, CultureInfo.InvariantCulture);
                        if (parents[shard] == parent) parents[shard] = -1;
                    }
                }
            }
            map[p.Id] = parents;
        }
        return map;
    }

    /// <summary>The victim's children (any shard), and every peer in its subtree of some shard tree (children included).</summary>
    private static (int[] Orphans, int[] Subtree) Affected(Dictionary<int, int[]> map, int victim, int shards)
    {
        var orphans = map.Where(kv => kv.Value.Contains(victim)).Select(kv => kv.Key).Order().ToArray();
        var subtree = new HashSet<int>();
        for (int s = 0; s < shards; s++)
        {
            var frontier = new Queue<int>([victim]);
            while (frontier.TryDequeue(out int node))
                foreach (var (id, parents) in map)
                    if (parents[s] == node && subtree.Add(id)) frontier.Enqueue(id);
        }
        return (orphans, subtree.Order().ToArray());
    }

    /// <summary>
    /// The longest stall of <paramref name="peer"/> after a failure at <paramref name="at"/>: the
    /// longest gap between stdout arrivals that ends after <paramref name="at"/> and starts in
    /// [at - slack, <paramref name="startsBefore"/>), counted from max(start, at) up to the gap's
    /// end or <paramref name="cutAt"/>, whichever is first. A gap still open at the end of
    /// observation (the peer's death, or now) counts up to there.
    /// </summary>
    /// <remarks>
    /// <para>Each gap is attributed to one failure at most: the previous arrival of a stall caused
    /// by a failure lies at most one normal inter-arrival time before it (the slack, 0.5 s), so a
    /// gap that starts later than slack before the next failure belongs to the next one.</para>
    /// <para>A later failure of one of the peer's own ancestors splits a gap: the part before it
    /// belongs to the earlier failure (<paramref name="cutAt"/>), the rest to the later one, which
    /// counts a gap already running at its time (<paramref name="running"/>) from that time. In
    /// ci104 (load 54) peer 22 was still waiting for its parent 14 to be repaired after kill #6
    /// (3.6 s) when kill #8 killed 14; its second repair took 2.7 s, and the whole 6.3 s was
    /// counted against kill #6.</para>
    /// </remarks>
    private static Gap Stall(PeerRun peer, long at, long startsBefore, long cutAt = long.MaxValue, bool running = false)
    {
        var arrivals = peer.Process.Arrivals();
        long end = Math.Min(peer.DeadAt ?? Stopwatch.GetTimestamp(), cutAt);
        long earliest = running ? long.MinValue : at - Slack;
        var longest = new Gap(at, at);
        long previous = long.MinValue;
        foreach (var (arrival, _) in arrivals)
        {
            if (arrival > at && previous >= earliest && previous < startsBefore && Math.Max(previous, at) < cutAt)
            {
                var gap = new Gap(Math.Max(previous, at), Math.Min(arrival, cutAt), Cut: arrival > cutAt);
                if (gap.Length > longest.Length) longest = gap;
            }
            previous = arrival;
            if (previous >= startsBefore) break;
        }
        bool complete = arrivals.Length > 0 && arrivals[^1].TotalBytes >= SourceBytes;
        if (!complete && previous >= earliest && previous < startsBefore && end - Math.Max(previous, at) > longest.Ticks)
            longest = new Gap(Math.Max(previous, at), end, Open: end < cutAt, Cut: end == cutAt);
        return longest;
    }

    private static long Slack => Stopwatch.Frequency / 2;

    /// <summary>A stretch with no stdout arrival (Stopwatch timestamps); open = still running at the end of observation; cut = still running when a later failure of an ancestor took it over.</summary>
    private readonly record struct Gap(long From, long To, bool Open = false, bool Cut = false)
    {
        public long Ticks => To - From;

        public TimeSpan Length => Stopwatch.GetElapsedTime(From, To);
    }

    private static string Report(int shards, List<Failure> events, List<PeerRun> peers, CliProcess coordinator, long t0, long testStart, TimeSpan sourceTook,
        out List<(int Event, int Peer, TimeSpan Stall, TimeSpan Detection, bool Leaf, bool WaitLogged)> killStalls, out List<(int Event, int Peer, TimeSpan Stall)> freezeStalls)
    {
        killStalls = [];
        freezeStalls = [];
        var orphanKill = new List<double>();
        var subtreeKill = new List<double>();
        var othersKill = new List<double>();
        var orphanFreeze = new List<double>();
        var subtreeFreeze = new List<double>();
        var othersFreeze = new List<double>();
        var detectKill = new List<double>();
        var sb = new StringBuilder();
        double Ms(TimeSpan t) => t.TotalMilliseconds;
        double SinceT0(long at) => Stopwatch.GetElapsedTime(t0, at).TotalSeconds;
        string Fmt(double ms) => ms.ToString("0", CultureInfo.InvariantCulture);

        sb.AppendLine(CultureInfo.InvariantCulture, $"ShardStream CLI resilience: K={shards}, {PeerCount} peers, {SourceBytes >> 20} MiB at {RateBytesPerSecond / (1 << 20):0.##} MiB/s, "
            + $"{KillCount} x SIGKILL of an interior peer every {KillEvery.TotalSeconds:0} s, then 1 x SIGSTOP; heartbeat timeout {HeartbeatTimeoutSeconds:0} s");
        sb.AppendLine(CultureInfo.InvariantCulture, $"source written in {sourceTook.TotalSeconds:0.0} s (scheduled {SourceBytes / RateBytesPerSecond:0.0} s); test ran {Stopwatch.GetElapsedTime(testStart).TotalSeconds:0.0} s; load average {LoadAverage()}");

        // Jitter with no failure: each survivor's longest gap between 0.5 s and the first kill.
        var baseline = peers.Where(p => p.DeadAt is null).Select(p => Ms(Stall(p, t0 + Stopwatch.Frequency, events[0].At - Slack).Length)).Order().ToList();
        sb.AppendLine(CultureInfo.InvariantCulture, $"before any failure (1 s .. first kill), longest gap per peer: median {Fmt(Percentile(baseline, 50))} ms, max {Fmt(Percentile(baseline, 100))} ms");
        sb.AppendLine();

        var coordinatorLines = coordinator.TimedStderrLines;
        for (int e = 0; e < events.Count; e++)
        {
            var ev = events[e];
            long startsBefore = Math.Min(e + 1 < events.Count ? events[e + 1].At - Slack : long.MaxValue, ev.At + (long)(StallWindow.TotalSeconds * Stopwatch.Frequency));
            var gone = coordinatorLines.FirstOrDefault(l => l.Timestamp >= ev.At && l.Line.Contains($"peer {ev.Victim.Id} is gone", StringComparison.Ordinal));
            string detected = gone.Line is null ? "not seen" : $"{Fmt(Ms(Stopwatch.GetElapsedTime(ev.At, gone.Timestamp)))} ms";
            // Not seen: no discount (the stall bound then counts from the kill).
            var detection = gone.Line is null ? TimeSpan.Zero : Stopwatch.GetElapsedTime(ev.At, gone.Timestamp);
            // A victim that relayed nothing in the plan when the coordinator read the end of its
            // control link (made a leaf before the kill, or its children moved elsewhere by a repair
            // of an earlier kill, their moves reaching them after this one) is kept for the rejoin
            // grace (4 heartbeat timeouts) by design: no child in the plan is left to report it.
            // The coordinator says so on the line that starts the wait; its children's stalls
            // count from the kill.
            var waits = coordinatorLines.Where(l => l.Timestamp >= ev.At && WaitingRegex().Match(l.Line) is { Success: true } m && m.Groups["id"].Value == ev.Victim.Id.ToString(CultureInfo.InvariantCulture)).ToList();
            bool leaf = !ev.Freeze && waits.Any(l => WaitedForAsLeaf(l.Line, ev.Victim.Id));
            if (leaf) detection = TimeSpan.Zero;
            if (!ev.Freeze && !leaf && gone.Line is not null) detectKill.Add(Ms(detection));
            string parents = string.Join(" ", ev.Map.GetValueOrDefault(ev.Victim.Id) ?? []);
            sb.AppendLine(CultureInfo.InvariantCulture, $"{(ev.Freeze ? "SIGSTOP" : $"SIGKILL #{e + 1}")} at {SinceT0(ev.At):0.00} s: peer {ev.Victim.Id} (pid {ev.Victim.Process.Pid}, parents {parents}){(ev.Interior ? "" : " NOT INTERIOR (no peer had children)")}, "
                + $"children [{string.Join(",", ev.Orphans)}], subtree [{string.Join(",", ev.Subtree)}]; coordinator saw it gone after {detected}"
                + $"{(leaf ? " (it relayed nothing in the coordinator's plan when its control link broke: kept for the rejoin grace)" : "")}");

            var alive = peers.Where(p => p != ev.Victim && (p.DeadAt is null || p.DeadAt > ev.At)).ToList();
            // A later failure of the peer's own ancestor (the peer in its subtree) takes over the rest of the gap.
            long CutAt(PeerRun p) => events.Skip(e + 1).FirstOrDefault(f => f.Subtree.Contains(p.Id))?.At ?? long.MaxValue;
            var stalls = alive.Select(p => (Peer: p, Stall: Stall(p, ev.At, startsBefore, CutAt(p), running: ev.Subtree.Contains(p.Id)))).ToList();
            foreach (var (p, gap) in stalls)
            {
                var stall = gap.Length;
                if (ev.Freeze) freezeStalls.Add((e, p.Id, stall));
                else killStalls.Add((e, p.Id, stall, detection, leaf, waits.Count > 0));
                bool orphan = ev.Orphans.Contains(p.Id), inSubtree = ev.Subtree.Contains(p.Id);
                (orphan ? (ev.Freeze ? orphanFreeze : orphanKill) : inSubtree ? (ev.Freeze ? subtreeFreeze : subtreeKill) : (ev.Freeze ? othersFreeze : othersKill)).Add(Ms(stall));
            }
            string Line(IEnumerable<(PeerRun Peer, Gap Stall)> group) => string.Join(" ", group.OrderBy(x => x.Peer.Id)
                .Select(x => $"{x.Peer.Id}:{Fmt(Ms(x.Stall.Length))}{(x.Stall.Length > TimeSpan.FromSeconds(1) ? $"({SinceT0(x.Stall.From):0.00}..{SinceT0(x.Stall.To):0.00}{(x.Stall.Open ? " open" : "")}{(x.Stall.Cut ? " cut" : "")})" : "")}"));
            sb.AppendLine(CultureInfo.InvariantCulture, $"  stall ms, children:       {Line(stalls.Where(x => ev.Orphans.Contains(x.Peer.Id)))}");
            sb.AppendLine(CultureInfo.InvariantCulture, $"  stall ms, deeper subtree: {Line(stalls.Where(x => !ev.Orphans.Contains(x.Peer.Id) && ev.Subtree.Contains(x.Peer.Id)))}");
            var others = stalls.Where(x => !ev.Subtree.Contains(x.Peer.Id)).Select(x => Ms(x.Stall.Length)).Order().ToList();
            sb.AppendLine(CultureInfo.InvariantCulture, $"  stall ms, others ({others.Count}): median {Fmt(Percentile(others, 50))}, max {Fmt(Percentile(others, 100))}");
        }

        sb.AppendLine();
        sb.AppendLine("summary (ms): group | n | median | p90 | max");
        void Row(string name, List<double> values)
        {
            values.Sort();
            sb.AppendLine(CultureInfo.InvariantCulture, $"  {name,-38} | {values.Count,3} | {Fmt(Percentile(values, 50)),6} | {Fmt(Percentile(values, 90)),6} | {Fmt(Percentile(values, 100)),6}");
        }
        Row("SIGKILL: children of the killed peer", orphanKill);
        Row("SIGKILL: whole subtree (children+deeper)", [.. orphanKill, .. subtreeKill]);
        Row("SIGKILL: unaffected peers", othersKill);
        Row("SIGKILL: coordinator detection", detectKill);
        Row("SIGSTOP: children of the frozen peer", orphanFreeze);
        Row("SIGSTOP: whole subtree (children+deeper)", [.. orphanFreeze, .. subtreeFreeze]);
        Row("SIGSTOP: unaffected peers", othersFreeze);
        return sb.ToString();
    }

    /// <summary>
    /// The coordinator's line that starts its wait for peer <paramref name="id"/> to join again,
    /// saying the peer relayed nothing to children in the plan then.
    /// </summary>
    private static bool WaitedForAsLeaf(string line, int id) =>
        WaitingRegex().Match(line) is { Success: true } m && m.Groups["id"].Value == id.ToString(CultureInfo.InvariantCulture) && m.Groups["edges"].Value == "0";

    /// <summary>Nearest-rank percentile of sorted values (NaN when empty).</summary>
    private static double Percentile(List<double> sorted, double p)
    {
        if (sorted.Count == 0) return double.NaN;
        int rank = (int)Math.Ceiling(p / 100 * sorted.Count);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Count - 1)];
    }

    private static string LoadAverage()
    {
        try
        {
            return File.ReadAllText("/proc/loadavg").Trim();
        }
        catch (IOException)
        {
            return "?";
        }
    }

    private sealed class PeerRun(CliProcess process)
    {
        public CliProcess Process { get; } = process;

        public int Id { get; private set; } = -1;

        /// <summary>When the test killed or froze it.</summary>
        public long? DeadAt { get; set; }

        public bool Frozen { get; set; }

        public bool Alive => DeadAt is null && !Process.HasExited;

        public bool TryReadId()
        {
            if (Id >= 0) return true;
            foreach (string line in Process.StderrLines)
                if (JoinedRegex().Match(line) is { Success: true } m)
                {
                    Id = int.Parse(m.Groups["id"].Value, CultureInfo.InvariantCulture);
                    return true;
                }
            return false;
        }
    }

    private sealed record Failure(int Index, bool Freeze, PeerRun Victim, long At, bool Interior, int[] Orphans, int[] Subtree, Dictionary<int, int[]> Map);

    [GeneratedRegex(@"\bstreaming$")]
    private static partial Regex StreamingRegex();

    [GeneratedRegex(@"joined as peer (?<id>\d+) at offset \d+; \d+ shard\(s\): (?<parents>.*)$")]
    private static partial Regex JoinedRegex();

    [GeneratedRegex(@"shard (\d+) from (?:coordinator|peer (\d+))")]
    private static partial Regex ShardFromRegex();

    [GeneratedRegex(@"moving shard\(s\) ([\d@,]+) to (?:coordinator|peer (\d+)) \(")]
    private static partial Regex MovingRegex();

    [GeneratedRegex(@"lost parent (\d+) for shard\(s\) ([\d,]+):")]
    private static partial Regex LostParentRegex();

    [GeneratedRegex(@"peer (?<id>\d+): control link broken on its side .*; keeping its place for \d+ s for it to join again; it relays (?<edges>\d+) shard-stream\(s\) to children in the plan$")]
    private static partial Regex WaitingRegex();
}

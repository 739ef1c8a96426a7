using Microsoft.Extensions.Time.Testing;
using ShardStream.Nodes;
using ShardStream.Topology;

namespace ShardStream.Tests.Nodes;

/// <summary>The probation of demoted peers (<see cref="Repromotions"/>), check by check, on a fake clock.</summary>
public sealed class RepromotionsTests
{
    private static readonly TimeSpan Probation = TimeSpan.FromSeconds(30);
    private const int Finder = 5;
    private const int Elsewhere = 7;
    private const int Peer = 3;

    private readonly FakeTimeProvider _time = new(DateTimeOffset.UnixEpoch);
    private readonly Dictionary<int, int[]> _parents = new() { [Peer] = [Finder] };

    private List<Repromotions.Due> Check(Repromotions r, bool streaming = true) => r.Check(streaming, id => _parents.TryGetValue(id, out var p) ? p : null);

    /// <summary>Checks once a second for <paramref name="seconds"/>; the second of the first peer due, or null.</summary>
    private int? Run(Repromotions r, int seconds, bool streaming = true, Action<int>? each = null)
    {
        for (int t = 1; t <= seconds; t++)
        {
            _time.Advance(TimeSpan.FromSeconds(1));
            each?.Invoke(t);
            if (Check(r, streaming).Count > 0) return t;
        }
        return null;
    }

    private Repromotions Demoted(bool childrenSlow = false, int foundBy = Finder)
    {
        var r = new Repromotions(Probation, _time);
        Check(r);
        r.Demoted(Peer, 2, foundBy, childrenSlow);
        return r;
    }

    [Fact]
    public void A_peer_found_slow_that_keeps_up_under_another_parent_for_the_probation_is_due_with_its_budget()
    {
        var r = Demoted();
        // Under the parent that found it slow, nothing counts.
        Assert.Null(Run(r, 40));
        // Counted from the first check that sees it elsewhere (it may have moved just before).
        _parents[Peer] = [Elsewhere];
        var due = new List<Repromotions.Due>();
        for (int t = 1; t <= 31 && due.Count == 0; t++)
        {
            _time.Advance(TimeSpan.FromSeconds(1));
            due = Check(r);
            Assert.True(due.Count == 0 || t == 31, $"due after {t} s");
        }
        var d = Assert.Single(due);
        Assert.Equal(new Repromotions.Due(Peer, 2, Probation, Finder, 1), d);
        Assert.False(r.OnProbation(Peer));
        Assert.Null(Run(r, 60));
    }

    [Fact]
    public void A_finding_or_a_return_under_the_finder_starts_the_probation_over_and_a_paused_source_counts_nothing()
    {
        var r = Demoted();
        _parents[Peer] = [Elsewhere];
        Assert.Null(Run(r, 25));
        r.FoundSlow(Peer);
        Assert.Equal(31, Run(r, 40));   // the first check after a finding counts nothing

        r = Demoted();
        _parents[Peer] = [Elsewhere];
        Assert.Null(Run(r, 25, each: t => _parents[Peer] = t == 20 ? [Elsewhere, Finder] : [Elsewhere]));
        Assert.Equal(26, Run(r, 40));   // 4 s since it left the finder again counted already

        r = Demoted();
        Assert.Null(Run(r, 60, streaming: false, each: _ => _parents[Peer] = [Elsewhere]));
        Assert.Equal(30, Run(r, 40));
    }

    [Fact]
    public void A_relay_demoted_for_its_children_or_for_anything_but_a_finding_is_never_due()
    {
        _parents[Peer] = [Elsewhere];
        Assert.Null(Run(Demoted(childrenSlow: true), 600));
        Assert.Null(Run(Demoted(foundBy: Planner.None), 600));
    }

    [Fact]
    public void Each_demotion_after_a_repromotion_doubles_the_probation_and_a_stall_counts_at_most_the_step()
    {
        var r = Demoted();
        _parents[Peer] = [Elsewhere];
        Assert.Equal(31, Run(r, 40));
        r.Demoted(Peer, 2, Finder, childrenSlow: false);
        Assert.Equal(TimeSpan.FromSeconds(60), r.Needed(Peer));
        Assert.Equal(61, Run(r, 100));
        r.Demoted(Peer, 2, Finder, childrenSlow: false);
        Assert.Equal(TimeSpan.FromSeconds(120), r.Needed(Peer));
        Assert.Null(Run(r, 10));
        // A coordinator held up for a minute counts it as one step.
        _time.Advance(TimeSpan.FromSeconds(60));
        Assert.Empty(Check(r));
        Assert.Equal(120 - 9 - (int)Repromotions.MaxStep.TotalSeconds, Run(r, 200));
        // Demoted then for its children: off probation for good, and it leaves nothing behind once forgotten.
        r.Demoted(Peer, 2, Planner.None, childrenSlow: true);
        Assert.False(r.OnProbation(Peer));
        r.Forget(Peer);
        Assert.False(r.Remembers(Peer));
    }

    [Fact]
    public void A_peer_that_left_is_dropped()
    {
        var r = Demoted();
        _parents.Remove(Peer);
        Assert.Null(Run(r, 5));
        Assert.False(r.OnProbation(Peer));
    }
}

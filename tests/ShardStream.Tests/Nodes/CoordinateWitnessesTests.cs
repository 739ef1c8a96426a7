using ShardStream.Nodes;
using ShardStream.Topology;
using Xunit.Abstractions;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The check of a claimed coordinate's direction by what the peers it was a parent of measured
/// (<see cref="CoordinateWitnesses"/>): the claim puts a node at (100, 0), 100 ms from the
/// coordinator as measured; it really is at (-100, 0), 200 ms from children at (100, ±5).
/// </summary>
public sealed class CoordinateWitnessesTests(ITestOutputHelper output)
{
    private static readonly NetworkCoordinate Claim = new(100 - (2 * Vivaldi.MinHeight), 0, Vivaldi.MinHeight, 0.1);

    private static readonly Dictionary<int, NetworkCoordinate> Children = new()
    {
        [1] = new(100, 5, Vivaldi.MinHeight, 0.1),
        [2] = new(100, -5, Vivaldi.MinHeight, 0.1),
        [3] = new(105, 0, Vivaldi.MinHeight, 0.1),
    };

    private static NetworkCoordinate? At(int id) => Children.TryGetValue(id, out var c) ? c : null;

    /// <summary>Witnesses of the claim with these reports; a test moves their coordinates in the plan in <paramref name="at"/>.</summary>
    private static CoordinateWitnesses Reported(Dictionary<int, NetworkCoordinate> at, params (int Witness, double Ms)[] reports)
    {
        var witnesses = new CoordinateWitnesses();
        foreach (var (witness, ms) in reports)
        {
            Assert.True(at.ContainsKey(witness));
            witnesses.Note(witness, ms);
        }
        return witnesses;
    }

    /// <summary>The claim held by <paramref name="witnesses"/> at their coordinates now, the coordinator having measured 100 ms.</summary>
    private static NetworkCoordinate Hold(CoordinateWitnesses witnesses, Dictionary<int, NetworkCoordinate> at, out Contradiction contradiction) =>
        witnesses.Hold(Claim, 100, id => at.TryGetValue(id, out var c) ? c : null, new Vivaldi(1), out contradiction);

    [Fact]
    public void One_child_that_measured_its_parent_far_holds_the_claim_nowhere_else()
    {
        // A lying child reports 900 ms to an honest parent; the other agrees with the claim.
        var witnesses = new CoordinateWitnesses();
        witnesses.Note(1, 900);
        witnesses.Note(2, 6);
        var held = witnesses.Hold(Claim, 100, At, new Vivaldi(1), out var contradiction);
        Assert.Equal(Claim, held);
        Assert.Equal(1, contradiction.Count);
    }

    [Fact]
    public void Two_children_that_measured_their_parent_far_hold_it_where_their_rtts_put_it()
    {
        var witnesses = new CoordinateWitnesses();
        witnesses.Note(1, 200);
        witnesses.Note(2, 201);
        witnesses.Note(3, 205);
        var held = witnesses.Hold(Claim, 100, At, new Vivaldi(1), out var contradiction);
        Assert.Equal(3, contradiction.Count);
        Assert.Equal(3, contradiction.Witness); // the largest shortfall: the claim is 5.1 ms from it, 205 measured
        // At most one child still measured it more than twice as far, and by more than the slack.
        Assert.True(Children.Count(c => CoordinateWitnesses.Contradicts(held.EstimateRtt(c.Value), 200)) < CoordinateWitnesses.MinWitnesses, $"held at {held}");
        // Never nearer the coordinator than it measured.
        Assert.True(held.EstimateRtt(Coordinator.Anchor) >= 100 - 1e-9, $"held at {held}");
    }

    [Fact]
    public void A_held_claim_stays_held_while_one_child_contradicts_it_and_another_bears_that_out()
    {
        // Three children contradict the claim; then, the claim staying put, the coordinates of two
        // of them drift in the plan: child 2 to 130 ms of the claim (it measured 201: it no longer
        // contradicts, but is still more than the slack short), child 3 to 200 ms (it agrees).
        var at = new Dictionary<int, NetworkCoordinate>(Children);
        var witnesses = Reported(at, (1, 200), (2, 201), (3, 205));
        Hold(witnesses, at, out _);
        Assert.True(witnesses.Held);
        at[2] = new(230, 0, Vivaldi.MinHeight, 0.1);
        at[3] = new(300, 0, Vivaldi.MinHeight, 0.1);

        var held = Hold(witnesses, at, out var contradiction);
        Assert.Equal((1, 1), (contradiction.Count, contradiction.Witness));
        Assert.True(witnesses.Held);
        // Held where the evidence puts it: nearer what child 1 measured than the claim, never
        // nearer the coordinator than it measured.
        Assert.True(Math.Abs(200 - held.EstimateRtt(at[1])) < Math.Abs(200 - Claim.EstimateRtt(at[1])), $"held at {held}");
        Assert.True(held.EstimateRtt(Coordinator.Anchor) >= 100 - 1e-9, $"held at {held}");
        output.WriteLine($"one child left: held at {held}, {held.EstimateRtt(at[1]):F1} ms from child 1 (claim {Claim.EstimateRtt(at[1]):F1}, measured 200), {held.EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator (measured 100)");

        // Once child 1's coordinate drifts too (150 ms from the claim, 200 measured), none contradicts it.
        at[1] = new(250, 0, Vivaldi.MinHeight, 0.1);
        Assert.Equal(Claim, Hold(witnesses, at, out contradiction));
        Assert.Equal(0, contradiction.Count);
        Assert.False(witnesses.Held);
    }

    [Fact]
    public void A_hold_puts_the_node_no_nearer_a_child_that_contradicted_the_claim_than_the_claim_did()
    {
        // Three children in three directions measured the node far more than twice as far as the
        // claim puts it; a fourth agrees with the claim. No point in the plane is far from all three
        // and 100 ms from the coordinator: the fit alone left child 3 the only one still short,
        // and put the node 25 ms nearer it than the claim did (180.4 ms; it measured 521), and one
        // child's shortfall raises no height. Seen in LatencyMovesTests (seed 3, ci148): an honest
        // peer held 132.1 ms from a child it claimed 141.1 ms from, measured 324.6.
        var at = new Dictionary<int, NetworkCoordinate>
        {
            [1] = new(0, -150, Vivaldi.MinHeight, 0.1),
            [2] = new(300, -100, Vivaldi.MinHeight, 0.1),
            [3] = new(0, 150, Vivaldi.MinHeight, 0.1),
            [4] = new(0, 50, Vivaldi.MinHeight, 0.1),
        };
        var witnesses = Reported(at, (4, 117), (3, 521), (2, 518), (1, 471));
        var held = Hold(witnesses, at, out var contradiction);
        Assert.Equal((3, 3), (contradiction.Count, contradiction.Witness));
        Assert.True(witnesses.Held);
        foreach (var (child, measured) in new[] { (1, 471.0), (2, 518.0), (3, 521.0) })
        {
            double claimed = Claim.EstimateRtt(at[child]), holds = held.EstimateRtt(at[child]);
            output.WriteLine($"child {child}: claim {claimed:F1} ms, held {holds:F1} ms, measured {measured}");
            Assert.True(holds >= claimed - 1e-9, $"held {holds:F1} ms from child {child}, nearer than the claim's {claimed:F1} ms; it measured {measured} ms");
        }
        Assert.True(held.EstimateRtt(Coordinator.Anchor) >= 100 - 1e-9, $"held at {held}");
    }

    [Fact]
    public void A_hold_puts_the_node_no_farther_from_what_a_child_measured_than_the_claim_did()
    {
        // The coordinator measured 200 ms, the claim says 100: it stands to the check of distance
        // (within half). Two children contradict it: the claim is 25.2 ms from child 1, which
        // measured 91, and 56.3 ms from child 2, which measured 122. The fit to them and to the
        // coordinator, raised to the coordinator's 200 ms, put the node 161.6 ms from child 1 before
        // the raise was bounded: 70.6 ms past its 91, where the claim was 65.8 short. Seen in
        // LatencyMovesTests (seed 11, ci168): a claim 40.3 ms from a child that measured 118.8,
        // held 200.0 ms from it.
        var at = new Dictionary<int, NetworkCoordinate>
        {
            [1] = new(100, -25, Vivaldi.MinHeight, 0.1),
            [2] = new(150, 25, Vivaldi.MinHeight, 0.1),
        };
        var witnesses = Reported(at, (1, 91), (2, 122));
        var held = witnesses.Hold(Claim, 200, id => at.TryGetValue(id, out var c) ? c : null, new Vivaldi(1), out var contradiction);
        Assert.Equal(2, contradiction.Count);
        Assert.True(witnesses.Held);
        foreach (var (child, measured) in new[] { (1, 91.0), (2, 122.0) })
        {
            double claimed = Claim.EstimateRtt(at[child]), holds = held.EstimateRtt(at[child]);
            output.WriteLine($"child {child}: claim {claimed:F1} ms, held {holds:F1} ms, measured {measured}; {held.EstimateRtt(Coordinator.Anchor):F1} ms from the coordinator (measured 200)");
            Assert.True(Math.Abs(measured - holds) <= Math.Abs(measured - claimed) + 1e-9, $"held {holds:F1} ms from child {child}, farther from the {measured} ms it measured than the claim's {claimed:F1} ms");
            Assert.True(holds >= claimed - 1e-9, $"held {holds:F1} ms from child {child}, nearer than the claim's {claimed:F1} ms; it measured {measured} ms");
        }
    }

    [Fact]
    public void A_fit_past_what_a_child_measured_is_left_for_the_claim_raised()
    {
        // Child 1, at the claim's point in the plan, measured 71 ms (the claim: 0.4); child 2, far
        // off, 701 (the claim: 250). The fit to them and to the coordinator ends 158.7 ms from
        // child 1 (held there before this rule), past its 71 by more than the claim was short, and
        // a raise lowers no height: the claim is held where it is, raised by the lesser shortfall
        // (70.6 ms).
        var at = new Dictionary<int, NetworkCoordinate>
        {
            [1] = new(100, 0, Vivaldi.MinHeight, 0.1),
            [2] = new(-100, -150, Vivaldi.MinHeight, 0.1),
        };
        var witnesses = Reported(at, (1, 71), (2, 701));
        var held = Hold(witnesses, at, out var contradiction);
        Assert.Equal((2, 2), (contradiction.Count, contradiction.Witness));
        Assert.True(witnesses.Held);
        foreach (var (child, measured) in new[] { (1, 71.0), (2, 701.0) })
        {
            double claimed = Claim.EstimateRtt(at[child]), holds = held.EstimateRtt(at[child]);
            output.WriteLine($"child {child}: claim {claimed:F1} ms, held {holds:F1} ms, measured {measured}");
            Assert.True(holds >= claimed - 1e-9 && measured - holds <= measured - claimed + 1e-9 && holds - measured <= measured - claimed + 1e-9, $"held {holds:F1} ms from child {child}: not between the claim's {claimed:F1} ms and as far past the {measured} ms it measured");
        }
        Assert.Equal((Claim.X, Claim.Y), (held.X, held.Y));
        Assert.True(held.EstimateRtt(Coordinator.Anchor) >= 100 - 1e-9, $"held at {held}");
    }

    [Fact]
    public void One_child_that_contradicts_and_another_that_bears_it_out_start_no_hold()
    {
        // What keeps a hold going does not start one: child 1 contradicts the claim (200 ms measured,
        // about 5 estimated); child 4, 100 ms from the claim in the plan, measured 170 ms: more than
        // 60 ms farther than the claim says (it bears child 1 out), not twice as far (it does not
        // contradict). With no hold before, the claim stands.
        var at = new Dictionary<int, NetworkCoordinate>(Children) { [4] = new(200, 0, Vivaldi.MinHeight, 0.1) };
        var witnesses = Reported(at, (1, 200), (4, 170));
        var held = Hold(witnesses, at, out var contradiction);
        output.WriteLine($"the claim {Claim.EstimateRtt(at[1]):F1} ms from child 1, {Claim.EstimateRtt(at[4]):F1} ms from child 4; held {held}");
        Assert.True(Claim.EstimateRtt(at[4]) + CoordinateWitnesses.SlackMs < 170 && 170 < 2 * Claim.EstimateRtt(at[4]), "child 4 should bear out without contradicting");
        Assert.Equal(1, contradiction.Count);
        Assert.Equal(Claim, held);
        Assert.False(witnesses.Held);
    }

    [Fact]
    public void A_lying_child_alone_does_not_keep_an_honest_parent_held_once_the_other_child_agrees()
    {
        // The parent is where it claims. Child 1 lies (900 ms); child 2, 200 ms away, is misplaced
        // in the plan next to the parent at first, and contradicts the claim with it: held.
        var at = new Dictionary<int, NetworkCoordinate>(Children);
        var witnesses = Reported(at, (1, 900), (2, 201), (3, 6));
        Hold(witnesses, at, out var contradiction);
        Assert.Equal(2, contradiction.Count);
        Assert.True(witnesses.Held);

        // Child 2's coordinate settles where it is, 200 ms from the claim: only the liar contradicts
        // it, and no other child measured the parent farther than the claim says by the slack.
        at[2] = new(300, 0, Vivaldi.MinHeight, 0.1);
        Assert.Equal(Claim, Hold(witnesses, at, out contradiction));
        Assert.Equal(1, contradiction.Count);
        Assert.False(witnesses.Held);
        // And it alone starts no hold again.
        Assert.Equal(Claim, Hold(witnesses, at, out _));
        Assert.False(witnesses.Held);
    }

    [Fact]
    public void Children_that_measured_what_the_claim_says_leave_it_as_it_is()
    {
        var witnesses = new CoordinateWitnesses();
        // More than twice the estimate (5.2 ms to each), but within the slack: short edges of honest coordinates.
        witnesses.Note(1, 60);
        witnesses.Note(2, 50);
        var held = witnesses.Hold(Claim, 100, At, new Vivaldi(1), out var contradiction);
        Assert.Equal(Claim, held);
        Assert.Equal(0, contradiction.Count);
    }

    [Fact]
    public void A_child_that_left_is_forgotten()
    {
        var witnesses = new CoordinateWitnesses();
        witnesses.Note(1, 200);
        witnesses.Note(9, 200); // no coordinate in the plan: gone
        var held = witnesses.Hold(Claim, 100, At, new Vivaldi(1), out var contradiction);
        Assert.Equal(Claim, held);
        Assert.Equal(1, contradiction.Count);
        Assert.Equal(1, witnesses.Count);
    }

    [Fact]
    public void At_most_sixteen_children_are_kept_the_latest_first()
    {
        var witnesses = new CoordinateWitnesses();
        for (int i = 0; i < 20; i++) witnesses.Note(100 + i, 50);
        witnesses.Note(100 + 19, 60); // again: replaces its figure, does not count twice
        Assert.Equal(CoordinateWitnesses.MaxWitnesses, witnesses.Count);
    }
}

using ShardStream.Nodes;
using ShardStream.Topology;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The check of a claimed coordinate's direction by what the peers it was a parent of measured
/// (<see cref="CoordinateWitnesses"/>): the claim puts a node at (100, 0), 100 ms from the
/// coordinator as measured; it really is at (-100, 0), 200 ms from children at (100, ±5).
/// </summary>
public sealed class CoordinateWitnessesTests
{
    private static readonly NetworkCoordinate Claim = new(100 - (2 * Vivaldi.MinHeight), 0, Vivaldi.MinHeight, 0.1);

    private static readonly Dictionary<int, NetworkCoordinate> Children = new()
    {
        [1] = new(100, 5, Vivaldi.MinHeight, 0.1),
        [2] = new(100, -5, Vivaldi.MinHeight, 0.1),
        [3] = new(105, 0, Vivaldi.MinHeight, 0.1),
    };

    private static NetworkCoordinate? At(int id) => Children.TryGetValue(id, out var c) ? c : null;

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
        // Never nearer the coordinator than half of what it measured.
        Assert.False(Coordinator.Understates(held.EstimateRtt(Coordinator.Anchor), 100), $"held at {held}");
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

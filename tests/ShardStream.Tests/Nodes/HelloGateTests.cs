using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>The connections waiting for their hello, and what happens to one dropped to make room.</summary>
public sealed class HelloGateTests
{
    /// <summary>
    /// A connection dropped from a full gate is aborted (the coordinator's abort sends it
    /// Goodbye(Busy) and closes it) before its waiting read is woken: woken first, that read's
    /// own error path reset the connection and the goodbye was never sent.
    /// </summary>
    [Fact]
    public void A_dropped_connection_is_aborted_before_its_wait_is_woken()
    {
        var gate = new HelloGate(maxTotal: 1, maxPerAddress: 4);
        var order = new List<string>();
        using var first = gate.Enter("a", () => order.Add("abort"));
        using var registration = first.Token.Register(() => order.Add("woken"));
        using var second = gate.Enter("b");
        Assert.Equal(["abort", "woken"], order);
        Assert.Equal("more than 1 connections are waiting for a hello", first.DroppedBecause);
        Assert.Equal(1, gate.Count);
    }

    /// <summary>A connection that left the gate (its hello came) before the drop reached it is not aborted.</summary>
    [Fact]
    public void A_connection_that_left_is_not_aborted()
    {
        var gate = new HelloGate(maxTotal: 1, maxPerAddress: 4);
        bool aborted = false;
        var first = gate.Enter("a", () => aborted = true);
        first.Dispose();
        first.Drop();
        Assert.False(aborted);
    }
}

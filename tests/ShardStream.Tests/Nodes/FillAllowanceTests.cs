using ShardStream.Nodes;

namespace ShardStream.Tests.Nodes;

/// <summary>
/// The fills the coordinator allows a peer (<see cref="PeerSession.TryTakeFill"/>): one per Move that
/// named a parent holding the shard only from a later chunk, and that Move's fill once more after a
/// rejoin in place (it may have broken off with the old control link), from where it was first
/// asked, never more.
/// </summary>
public sealed class FillAllowanceTests
{
    [Fact]
    public void A_rejoin_gives_a_moves_fill_back_once_from_where_it_was_first_asked()
    {
        var session = new PeerSession(9, "p:1", null!);
        session.AllowFill(0, 500, 3);
        Assert.Equal(100, Taken(session, 0, 100, 500));

        // The fill broke off; the peer joins again in its place, still under parent 3, three times.
        for (int i = 0; i < 3; i++) session.AllowFillAgain(0, 3);
        Assert.Equal(100, Taken(session, 0, 0, 500));
        Assert.Equal(PeerSession.FillTaken.Spent, session.TryTakeFill(0, 0, 500, out _));

        // And again: once per Move.
        session.AllowFillAgain(0, 3);
        Assert.Equal(PeerSession.FillTaken.Spent, session.TryTakeFill(0, 300, 500, out _));
    }

    [Fact]
    public void Rejoins_before_the_fill_is_asked_add_one_fill_at_most()
    {
        // The Fill sent on the old link may be read after the rejoin: the Move's and the one given back.
        var session = new PeerSession(9, "p:1", null!);
        session.AllowFill(0, 500, 3);
        for (int i = 0; i < 3; i++) session.AllowFillAgain(0, 3);
        Assert.Equal(100, Taken(session, 0, 100, 500));
        Assert.Equal(100, Taken(session, 0, 0, 500));
        Assert.Equal(PeerSession.FillTaken.Spent, session.TryTakeFill(0, 0, 500, out _));
    }

    [Theory]
    [InlineData("never moved")]
    [InlineData("moved on to a parent that needs no fill")]
    [InlineData("now under another parent than the move's")]
    public void A_rejoin_gives_back_no_fill_that_no_move_owes(string how)
    {
        var session = new PeerSession(9, "p:1", null!);
        if (how != "never moved")
        {
            session.AllowFill(0, 500, 3);
            Taken(session, 0, 100, 500);
        }
        if (how == "moved on to a parent that needs no fill") session.OweNoFill(0);
        session.AllowFillAgain(0, how == "now under another parent than the move's" ? 4 : 3);
        Assert.Equal(PeerSession.FillTaken.Never, session.TryTakeFill(0, 100, 500, out _));
    }

    [Fact]
    public void Each_move_allows_its_own_fill()
    {
        var session = new PeerSession(9, "p:1", null!);
        session.AllowFill(0, 500, 3);
        session.AllowFill(0, 700, 4);
        Assert.Equal(100, Taken(session, 0, 100, 500));
        Assert.Equal(200, Taken(session, 0, 200, 700));
        Assert.Equal(PeerSession.FillTaken.Never, session.TryTakeFill(0, 200, 700, out _));
    }

    /// <summary>Takes an allowed fill of <paramref name="shard"/>; returns the chunk it is served from.</summary>
    private static long Taken(PeerSession session, int shard, ulong from, ulong until)
    {
        Assert.Equal(PeerSession.FillTaken.Allowed, session.TryTakeFill(shard, from, until, out long start));
        return start;
    }
}

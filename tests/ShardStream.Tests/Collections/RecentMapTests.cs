using ShardStream.Collections;
using ShardStream.Trust;

namespace ShardStream.Tests.Collections;

/// <summary>
/// The bounded memories of join tokens, ticket serials and peer ids keep the latest additions, at
/// most their capacity, and an early removal never makes a later addition of the same key be
/// forgotten before its turn.
/// </summary>
public class RecentMapTests
{
    [Fact]
    public void The_oldest_additions_are_forgotten_beyond_the_capacity()
    {
        var map = new RecentMap<int, string>(3);
        for (int i = 1; i <= 5; i++) Assert.True(map.TryAdd(i, $"v{i}"));
        Assert.Equal(3, map.Count);
        Assert.False(map.ContainsKey(1));
        Assert.False(map.ContainsKey(2));
        Assert.True(map.TryGetValue(5, out var five));
        Assert.Equal("v5", five);
        // Already there: refused, and its value stays.
        Assert.False(map.TryAdd(4, "other"));
        Assert.True(map.TryGetValue(4, out var four));
        Assert.Equal("v4", four);
    }

    [Fact]
    public void A_key_removed_and_added_again_keeps_its_new_place()
    {
        var map = new RecentMap<int, string>(3);
        map.TryAdd(1, "first");
        Assert.True(map.Remove(1, out var removed));
        Assert.Equal("first", removed);
        map.TryAdd(1, "again");
        map.TryAdd(2, "two");
        // Four places in the order for three: the first addition's turn came, and the later
        // addition of 1 stays.
        map.TryAdd(3, "three");
        Assert.True(map.TryGetValue(1, out var again));
        Assert.Equal("again", again);
        Assert.Equal(3, map.Count);
        // Its own turn comes with the next addition: it is the oldest now.
        map.TryAdd(4, "four");
        Assert.False(map.ContainsKey(1));
        Assert.True(map.ContainsKey(2));
        Assert.Equal(3, map.Count);
    }

    [Fact]
    public void Removals_do_not_let_the_order_grow_without_bound()
    {
        var map = new RecentMap<int, int>(4);
        for (int i = 0; i < 10_000; i++)
        {
            Assert.True(map.TryAdd(i, i));
            Assert.True(map.Remove(i, out _));
        }
        // What the order still holds of the removed keys goes as new additions come.
        for (int i = 0; i < 4; i++) map.TryAdd(-1 - i, i);
        Assert.Equal(4, map.Count);
        map.TryAdd(-5, 4);
        Assert.Equal(4, map.Count);
        Assert.False(map.ContainsKey(-1));
    }

    [Fact]
    public void A_ticket_book_refuses_a_serial_it_used_and_forgets_the_oldest_beyond_its_capacity()
    {
        var book = new TicketBook();
        byte[] run = [1, 2, 3];
        Assert.True(book.TryUse(run, 7));
        Assert.False(book.TryUse(run, 7));
        for (ulong serial = 100; serial < 100 + TicketBook.Capacity; serial++) Assert.True(book.TryUse(run, serial));
        // Serial 7 was the oldest of Capacity + 1 uses: forgotten.
        Assert.True(book.TryUse(run, 7));
        // A new run starts a new book.
        Assert.True(book.TryUse([9], 100));
    }
}

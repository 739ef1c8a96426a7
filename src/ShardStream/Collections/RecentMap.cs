using System.Diagnostics.CodeAnalysis;

namespace ShardStream.Collections;

/// <summary>
/// A map that remembers what was added lately and forgets the oldest additions first: at most
/// <see cref="Capacity"/> additions are kept, so a stranger who makes a node remember things (join
/// tokens, ticket serials, peer ids) cannot grow it without bound. An entry removed early leaves its
/// place in the order until its turn comes (so fewer than <see cref="Capacity"/> entries may be
/// kept for a while), and that turn never forgets a later addition of the same key. Not
/// thread-safe: callers hold their own lock.
/// </summary>
internal sealed class RecentMap<TKey, TValue>
    where TKey : notnull
{
    private readonly Dictionary<TKey, (TValue Value, long Added)> _entries = [];
    private readonly Queue<(TKey Key, long Added)> _order = new();
    private long _additions;

    public RecentMap(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        Capacity = capacity;
    }

    /// <summary>How many additions are remembered at most.</summary>
    public int Capacity { get; }

    /// <summary>Entries remembered now.</summary>
    public int Count => _entries.Count;

    /// <summary>Adds <paramref name="key"/> unless it is there (false then; its value stays), forgetting the oldest addition beyond <see cref="Capacity"/>.</summary>
    public bool TryAdd(TKey key, TValue value)
    {
        long added = _additions + 1;
        if (!_entries.TryAdd(key, (value, added))) return false;
        _additions = added;
        _order.Enqueue((key, added));
        while (_order.Count > Capacity)
        {
            var (oldest, when) = _order.Dequeue();
            // Removed and added again since: that later addition has a place of its own.
            if (_entries.TryGetValue(oldest, out var entry) && entry.Added == when) _entries.Remove(oldest);
        }
        return true;
    }

    public bool TryGetValue(TKey key, [MaybeNullWhen(false)] out TValue value)
    {
        bool found = _entries.TryGetValue(key, out var entry);
        value = entry.Value;
        return found;
    }

    public bool ContainsKey(TKey key) => _entries.ContainsKey(key);

    /// <summary>Forgets <paramref name="key"/> now; false when it was not remembered.</summary>
    public bool Remove(TKey key, [MaybeNullWhen(false)] out TValue value)
    {
        bool found = _entries.Remove(key, out var entry);
        value = entry.Value;
        return found;
    }

    public void Clear()
    {
        _entries.Clear();
        _order.Clear();
    }
}

/// <summary>A set that remembers what was added lately, as <see cref="RecentMap{TKey, TValue}"/>.</summary>
internal sealed class RecentSet<T>(int capacity)
    where T : notnull
{
    private readonly RecentMap<T, bool> _map = new(capacity);

    /// <summary>Adds <paramref name="item"/>; false when it is there already.</summary>
    public bool Add(T item) => _map.TryAdd(item, true);

    public bool Contains(T item) => _map.ContainsKey(item);

    public void Clear() => _map.Clear();
}

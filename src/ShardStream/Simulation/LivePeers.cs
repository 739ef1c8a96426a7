namespace ShardStream.Simulation;

/// <summary>The live peer ids, for picking a random one and removing it in O(1).</summary>
internal sealed class LivePeers(int capacity)
{
    private readonly List<int> _ids = new(capacity);
    private readonly Dictionary<int, int> _slotOf = new(capacity);

    public int Count => _ids.Count;

    public void Add(int id)
    {
        _slotOf[id] = _ids.Count;
        _ids.Add(id);
    }

    /// <summary>Removes and returns the id at <paramref name="slot"/> (the last id takes its slot).</summary>
    public int RemoveAt(int slot)
    {
        var id = _ids[slot];
        var last = _ids[^1];
        _ids[slot] = last;
        _slotOf[last] = slot;
        _ids.RemoveAt(_ids.Count - 1);
        _slotOf.Remove(id);
        return id;
    }

    /// <summary>Removes <paramref name="id"/> if present; true if it was.</summary>
    public bool Remove(int id)
    {
        if (!_slotOf.TryGetValue(id, out var slot))
        {
            return false;
        }

        RemoveAt(slot);
        return true;
    }
}

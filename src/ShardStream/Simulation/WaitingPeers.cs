using ShardStream.Topology;

namespace ShardStream.Simulation;

/// <summary>
/// Joins through the planner, and keeps the peers it refused (no capacity left in some shard tree)
/// waiting, as a refused peer that rejoins by itself would: they are carried as soon as capacity
/// appears, largest budgets first (an uploader brings capacity, a viewer only takes it). Those
/// still waiting at the end of a simulation are the peers the overlay could not carry.
/// </summary>
internal sealed class WaitingPeers(Planner planner, LivePeers live, Func<int, int>? join = null)
{
    private readonly Func<int, int> _join = join ?? planner.Join;

    // Waiting peers per budget, largest budget first.
    private readonly SortedDictionary<int, int> _waiting = new(Comparer<int>.Create((a, b) => b.CompareTo(a)));

    /// <summary>Joins whose first attempt was refused.</summary>
    public int Refused { get; private set; }

    /// <summary>Peers waiting now.</summary>
    public int Count { get; private set; }

    /// <summary>Peers joined (at once or after waiting).</summary>
    public int Joined { get; private set; }

    /// <summary>Other peers moved by all these joins (<see cref="Planner.LastJoinMoves"/>).</summary>
    public long Moves { get; private set; }

    /// <summary>A new peer with <paramref name="budget"/> joins, or waits if the planner refuses it.</summary>
    public bool TryJoin(int budget)
    {
        if (Join(budget))
        {
            return true;
        }

        Refused++;
        Count++;
        _waiting[budget] = _waiting.GetValueOrDefault(budget) + 1;
        return false;
    }

    /// <summary>Places waiting peers while the planner accepts them (after capacity may have appeared).</summary>
    public void Retry()
    {
        if (Count == 0)
        {
            return;
        }

        foreach (var budget in _waiting.Keys.ToList())
        {
            var n = _waiting[budget];
            while (n > 0 && Join(budget))
            {
                n--;
                Count--;
            }

            if (n == 0)
            {
                _waiting.Remove(budget);
            }
            else
            {
                _waiting[budget] = n;
            }
        }
    }

    private bool Join(int budget)
    {
        try
        {
            live.Add(_join(budget));
            Joined++;
            Moves += planner.LastJoinMoves.Count;
            return true;
        }
        catch (PlacementException)
        {
            return false;
        }
    }
}

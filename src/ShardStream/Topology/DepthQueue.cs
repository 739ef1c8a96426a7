namespace ShardStream.Topology;

/// <summary>
/// A double-ended queue of node ids that all sat at one depth when they were pushed. Entries are
/// never removed when a node changes: readers check an entry against the live model and drop it
/// when stale (lazy deletion), which keeps every model update O(1).
/// </summary>
internal sealed class DepthQueue
{
    private int[] _items = new int[4];
    private int _head;
    private int _tail;

    public bool IsEmpty => _head == _tail;

    public int Count => _tail - _head;

    public int Front => _items[_head];

    public int Back => _items[_tail - 1];

    /// <summary>The entry <paramref name="index"/> places behind the front.</summary>
    public int this[int index] => _items[_head + index];

    public void Push(int node)
    {
        if (_tail == _items.Length)
        {
            Grow();
        }

        _items[_tail++] = node;
    }

    public void PopFront()
    {
        _head++;
        if (_head == _tail)
        {
            _head = _tail = 0;
        }
    }

    public void PopBack()
    {
        _tail--;
        if (_head == _tail)
        {
            _head = _tail = 0;
        }
    }

    /// <summary>
    /// Removes the entries at <paramref name="indices"/> (places behind the front, ascending,
    /// distinct) and keeps the order of the others: the entries before the last removed one move
    /// back, so the cost is that index, not the queue's length.
    /// </summary>
    public void RemoveNearFront(ReadOnlySpan<int> indices)
    {
        if (indices.IsEmpty)
        {
            return;
        }

        var write = _head + indices[^1];
        var r = indices.Length - 1;
        for (var read = write - 1; read >= _head; read--)
        {
            if (r > 0 && read == _head + indices[r - 1])
            {
                r--;
                continue;
            }

            _items[write--] = _items[read];
        }

        _head += indices.Length;
        if (_head == _tail)
        {
            _head = _tail = 0;
        }
    }

    private void Grow()
    {
        var count = _tail - _head;
        if (_head >= _items.Length / 2)
        {
            // Most of the array is popped space at the front: reuse it instead of growing.
            Array.Copy(_items, _head, _items, 0, count);
        }
        else
        {
            var bigger = new int[_items.Length * 2];
            Array.Copy(_items, _head, bigger, 0, count);
            _items = bigger;
        }

        _head = 0;
        _tail = count;
    }
}

using ShardStream.Transport;

namespace ShardStream.Streaming;

/// <summary>
/// The memory a set of chunks keeps alive, as the process pays for it: a chunk with its own pooled
/// buffer costs that buffer (1, 4, 16 or 64 KiB, not its payload), and chunks that lie in a
/// <see cref="ReceiveSlab"/> cost the whole slab (1 MiB), once per slab however many of them lie
/// in it. A one-byte chunk alone in a slab pins the slab: counting its payload would let a window
/// of 64 MiB pin 64 GiB. Not thread-safe: the owner's lock guards it.
/// </summary>
internal sealed class HeldMemory
{
    private readonly Dictionary<ReceiveSlab, int> _slabs = new(ReferenceEqualityComparer.Instance);

    /// <summary>Bytes held now.</summary>
    public long Bytes { get; private set; }

    /// <summary>Chunks held now.</summary>
    public int Chunks { get; private set; }

    /// <summary>What keeping <paramref name="chunk"/> as well would add to <see cref="Bytes"/>.</summary>
    public long CostOf(Chunk chunk) => chunk.Slab is { } slab ? (_slabs.ContainsKey(slab) ? 0 : ReceiveSlab.Size) : chunk.Capacity;

    /// <summary>Counts <paramref name="chunk"/> (held by the caller).</summary>
    public void Add(Chunk chunk)
    {
        Bytes += CostOf(chunk);
        Chunks++;
        if (chunk.Slab is { } slab) _slabs[slab] = _slabs.GetValueOrDefault(slab) + 1;
    }

    /// <summary>Stops counting <paramref name="chunk"/> (before the caller releases it).</summary>
    public void Remove(Chunk chunk)
    {
        Chunks--;
        if (chunk.Slab is not { } slab)
        {
            Bytes -= chunk.Capacity;
            return;
        }
        int left = _slabs[slab] - 1;
        if (left > 0)
        {
            _slabs[slab] = left;
            return;
        }
        _slabs.Remove(slab);
        Bytes -= ReceiveSlab.Size;
    }

    /// <summary>Counts nothing.</summary>
    public void Clear()
    {
        _slabs.Clear();
        Bytes = 0;
        Chunks = 0;
    }
}
